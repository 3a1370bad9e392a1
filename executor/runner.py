"""Run layouts of the tiny model: validate, spawn one process per rank, summarise.

``run_layout`` spawns world = tp * pp * dp * cp processes (torch.multiprocessing, TCP
rendezvous on 127.0.0.1 at a free port): gloo on CPU with one thread per process, or NCCL
with one GPU per rank when enough GPUs exist. A one-process layout runs in the calling
process without torch.distributed; that is ``run_reference``. ``run_cases`` runs several
(model, layout, faults) cases with one spawn per world size, which saves the process
start-up (about 2 s each).
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sysplan.core.errors import InputError
from sysplan.executor.layout import ExecLayout, RankStats, RunCase, RunResult, check_layout
from sysplan.executor.model import TinyConfig
from sysplan.executor.train import train_rank

#: Processes a layout may use unless the caller says otherwise.
DEFAULT_MAX_PROCS = 8
BACKENDS = ("auto", "gloo", "nccl")


def _backend(backend: str, world: int) -> str:
    """The torch.distributed backend for ``world`` ranks ("auto": NCCL if enough GPUs)."""
    if backend not in BACKENDS:
        raise InputError(f"backend {backend!r}: accepted is {', '.join(BACKENDS)}")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if backend == "nccl" and gpus < world:
        raise InputError(f"backend 'nccl' for {world} ranks but {gpus} GPUs: accepted is "
                         "'gloo' or 'auto'")
    return "nccl" if backend == "nccl" or (backend == "auto" and gpus >= world) else "gloo"


def _free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _worker(rank: int, world: int, port: int, backend: str, cases: list[RunCase],
            steps: int, warmup: int, out_dir: str) -> None:
    """One spawned rank: join the process group, run every case, write its reports."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        reports = [train_rank(case, steps, warmup, device) for case in cases]
    finally:
        dist.destroy_process_group()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(reports))


def _run_world(cases: list[RunCase], steps: int, warmup: int,
               backend: str) -> list[list[dict[str, Any]]]:
    """Per case, the reports of every rank (in rank order); all cases of one world size."""
    world = cases[0].layout.world_size
    if world == 1:  # in this process, without torch.distributed
        device = torch.device("cuda", 0) if backend == "nccl" else torch.device("cpu")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return [[train_rank(case, steps, warmup, device)] for case in cases]
        finally:
            torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="sysplan-exec-") as out_dir:
        mp.spawn(_worker, args=(world, _free_port(), backend, cases, steps, warmup, out_dir),
                 nprocs=world, join=True)
        by_rank = [json.loads(Path(out_dir, f"rank{rank}.json").read_text())
                   for rank in range(world)]
    return [[reports[index] for reports in by_rank] for index in range(len(cases))]


def _summarise(case: RunCase, backend: str, reports: list[dict[str, Any]],
               warmup: int) -> RunResult:
    """A RunResult from every rank's report of one case."""
    layout = case.layout
    last = {"tp": 0, "cp": 0, "dp": 0, "pp": layout.pp - 1}
    losses = next(report["losses"] for report in reports if report["coords"] == last)
    times = reports[0]["step_times_s"]
    kept = np.asarray(times[warmup:])
    p10, median, p90 = np.percentile(kept, [10, 50, 90])
    ranks = []
    for report in reports:
        seconds = report["seconds"][warmup:]
        comm = {axis: float(np.mean([s.get(axis, 0.0) for s in seconds]))
                for axis in ("tp", "cp", "dp")}
        wait = float(np.mean([s.get("pp", 0.0) for s in seconds]))
        step = float(np.mean(report["step_times_s"][warmup:]))
        ranks.append(RankStats(rank=report["rank"], coords=report["coords"], comm_s=comm,
                               pipeline_wait_s=wait,
                               compute_s=max(0.0, step - wait - sum(comm.values()))))
    return RunResult(
        layout=layout, world_size=layout.world_size,
        backend=backend if layout.world_size > 1 else "none",
        losses=tuple(losses), step_times_s=tuple(times), median_step_s=float(median),
        p10_step_s=float(p10), p90_step_s=float(p90), min_step_s=float(kept.min()),
        max_step_s=float(kept.max()),
        tokens_per_s=layout.global_batch * case.tiny.seq_len / float(median),
        peak_memory_bytes=tuple(report["peak_memory_bytes"] for report in reports),
        ranks=tuple(ranks))


def run_cases(cases: Sequence[RunCase], steps: int, warmup: int, backend: str = "auto",
              max_procs: int = DEFAULT_MAX_PROCS,
              progress: Callable[[str], None] | None = None) -> list[RunResult]:
    """Run every case, one process spawn per distinct world size; results in input order.

    Raises a one-line InputError for a case that cannot run, before anything starts.
    ``progress`` gets one line before each spawn: cases done of all, and an ETA from the
    seconds per case so far.
    """
    if steps < 1 or not 0 <= warmup < steps:
        raise InputError(f"steps {steps}, warmup {warmup}: accepted is steps >= 1 and "
                         "0 <= warmup < steps")
    for case in cases:
        check_layout(case.tiny, case.layout, max_procs)
    results: dict[int, RunResult] = {}
    started = time.perf_counter()
    for world in sorted({case.layout.world_size for case in cases}):
        indices = [i for i, case in enumerate(cases) if case.layout.world_size == world]
        if progress is not None:
            done, elapsed = len(results), time.perf_counter() - started
            eta = f", about {elapsed / done * (len(cases) - done):.0f} s left" if done else ""
            progress(f"{done}/{len(cases)} plans done; running {len(indices)} on {world} "
                     f"processes ({elapsed:.0f} s so far{eta})")
        chosen = _backend(backend, world)
        reports = _run_world([cases[i] for i in indices], steps, warmup, chosen)
        for index, case_reports in zip(indices, reports, strict=True):
            results[index] = _summarise(cases[index], chosen, case_reports, warmup)
    return [results[index] for index in range(len(cases))]


def run_layout(tiny: TinyConfig, layout: ExecLayout, steps: int, warmup: int,
               backend: str = "auto", faults: frozenset[str] = frozenset(),
               max_procs: int = DEFAULT_MAX_PROCS) -> RunResult:
    """Train the tiny model ``steps`` steps under ``layout``; measure after ``warmup``.

    ``faults={"skip_tp_allreduce"}`` drops the forward all-reduce of the first block's
    attention output projection (row-parallel), so correctness checks can be seen failing.
    """
    case = RunCase(tiny=tiny, layout=layout, faults=faults)
    return run_cases([case], steps, warmup, backend, max_procs)[0]


def run_reference(tiny: TinyConfig, global_batch: int, steps: int, warmup: int = 0,
                  backend: str = "auto") -> RunResult:
    """The single-process run of the same model, seed and data (one micro-batch per step)."""
    layout = ExecLayout(global_batch=global_batch, micro_batch=global_batch)
    return run_layout(tiny, layout, steps, warmup, backend)
