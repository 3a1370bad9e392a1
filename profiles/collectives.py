"""Time the five collectives across this node's devices (or the launched ranks) with torch.

By default ``measure`` spawns one process per device (NCCL/RCCL on GPUs, gloo on a CPU,
rendezvous on 127.0.0.1 at a free port); rank 0 reports each row through a queue. Under
``torchrun`` (WORLD_SIZE, RANK, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR/PORT) or ``srun``
(SLURM_NTASKS, SLURM_PROCID, SLURM_LOCALID, SLURM_NNODES, with MASTER_ADDR/PORT exported by the
job script) with more than one rank, the ranks already exist: they measure in-process, tier
``network`` when they span nodes, ``node`` otherwise.

A row's message_bytes is the full tensor (nccl-tests' size convention: the all_gather output,
the reduce_scatter input); its time is the slowest rank's mean over back-to-back iterations on
GPUs, its median over calls timed one at a time after a fixed computation on a CPU.
"""

from __future__ import annotations

import os
import queue as queues
import socket
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sysplan.core.errors import SysplanError
from sysplan.profiles.device import cpu_cores
from sysplan.profiles.schema import COLLECTIVE_OPS, CollectiveTable

#: Seconds the parent waits without news from the workers before giving up.
STALL_S = 300


@dataclass(frozen=True)
class Launch:
    """Ranks started by torchrun or srun: this rank, the world, the local rank, node count."""

    rank: int
    world: int
    local_rank: int
    nodes: int


def launched_world(environ: dict[str, str] | None = None) -> Launch | None:
    """The torchrun or srun world this process belongs to, if it has more than one rank."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env and "RANK" in env:
        world = int(env["WORLD_SIZE"])
        local_world = int(env.get("LOCAL_WORLD_SIZE", world))
        launch = Launch(int(env["RANK"]), world, int(env.get("LOCAL_RANK", 0)),
                        max(1, world // max(local_world, 1)))
    elif "SLURM_STEP_ID" in env and "SLURM_NTASKS" in env:  # inside srun, not the batch script
        launch = Launch(int(env.get("SLURM_PROCID", 0)), int(env["SLURM_NTASKS"]),
                        int(env.get("SLURM_LOCALID", 0)), int(env.get("SLURM_NNODES", 1)))
    else:
        return None
    return launch if launch.world > 1 else None


def message_sizes(gpu: bool, quick: bool) -> tuple[int, ...]:
    """Full-tensor message sizes: powers of 4 (three in a --quick run)."""
    if quick:
        return (2**16, 2**22, 2**28) if gpu else (2**12, 2**17, 2**22)
    return tuple(4**e for e in range(6, 16)) if gpu else tuple(4**e for e in range(6, 14))


def subgroups(world: int) -> tuple[int, ...]:
    """Smaller groups timed besides the whole world (powers of two from 2): layouts price
    their TP, CP and DP groups of those sizes from measured rows, not a scaled world's."""
    return tuple(2**e for e in range(1, 16) if 2**e < world)


def steps(world: int, sizes: Sequence[int]) -> int:
    """Progress steps ``measure`` reports (every op at every size, and every op but
    send_recv on each subgroup; none for one device)."""
    if world < 2:
        return 0
    return len(sizes) * (len(COLLECTIVE_OPS) + (len(COLLECTIVE_OPS) - 1) * len(subgroups(world)))


def bus_bandwidth(op: str, group_size: int, message_bytes: float, time_s: float) -> float:
    """Bus bandwidth (bytes/s) of one row: algorithm bandwidth times the op's factor."""
    n = group_size
    algorithm = message_bytes / time_s
    # nccl-tests doc/PERFORMANCE.md: all_reduce busbw = algbw 2(n-1)/n; all_gather and
    # reduce_scatter (n-1)/n; alltoall (n-1)/n; sendrecv 1.
    factor = {"all_reduce": 2 * (n - 1) / n, "all_gather": (n - 1) / n,
              "reduce_scatter": (n - 1) / n, "all_to_all": (n - 1) / n}.get(op, 1.0)
    return algorithm * factor


def measure(kind: str, world: int, sizes: Sequence[int], warmup: int, iterations: int,
            launch: Launch | None, tick: Callable[[str], None]
            ) -> tuple[CollectiveTable | None, list[str]]:
    """The collectives table (None for one device) and notes such as skipped ops."""
    if world < 2:
        return None, []
    if launch is not None:
        tier = "network" if launch.nodes > 1 else "node"
        rows, skipped = _measure_launched(kind, launch, sizes, warmup, iterations, tier, tick)
    else:
        rows, skipped = _measure_spawned(kind, world, sizes, warmup, iterations, tick)
    notes = [f"{op} skipped: the {'nccl' if kind == 'cuda' else 'gloo'} backend of this torch "
             f"lacks it" for op in skipped]
    return (CollectiveTable(rows=tuple(rows)) if rows else None), notes


def _measure_launched(kind, launch, sizes, warmup, iterations, tier, tick):
    """In-process across the torchrun/srun ranks (MASTER_ADDR/PORT from the environment)."""
    import torch.distributed as dist

    os.environ.setdefault("MASTER_PORT", "29500")
    if "MASTER_ADDR" not in os.environ:
        raise SysplanError("sysplan profile under srun/torchrun needs MASTER_ADDR (the first "
                           "node's address) and MASTER_PORT in the environment")
    dist.init_process_group("nccl" if kind == "cuda" else "gloo", init_method="env://",
                            rank=launch.rank, world_size=launch.world,
                            timeout=timedelta(seconds=STALL_S))
    try:
        return _sweep(kind, launch.rank, launch.world, sizes, warmup, iterations, tier,
                      lambda: tick("collectives"))
    finally:
        dist.destroy_process_group()


def _measure_spawned(kind, world, sizes, warmup, iterations, tick):
    """Spawn ``world`` processes on this node; rank 0 sends progress and rows back."""
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    channel = context.Queue()
    port = _free_port()
    processes = [context.Process(target=_worker, daemon=True,
                                 args=(rank, world, port, kind, tuple(sizes), warmup,
                                       iterations, channel))
                 for rank in range(world)]
    for process in processes:
        process.start()
    try:
        result = _collect(channel, processes, tick)
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
    return result


def _collect(channel, processes, tick):
    """Read the workers' messages until rank 0 sends its rows; fail on an error or a stall."""
    heard = time.monotonic()
    while True:
        try:
            what, payload = channel.get(timeout=1.0)
        except queues.Empty:
            failed = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            if failed or time.monotonic() - heard > STALL_S:
                raise SysplanError("collective measurement failed: a worker process "
                                   f"{'exited with ' + str(failed[0]) if failed else 'stalled'}"
                                   " (try --world 2)") from None
            continue
        heard = time.monotonic()
        if what == "step":
            tick("collectives")
        elif what == "error":
            raise SysplanError(f"collective measurement failed: {payload}")
        else:
            return payload


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _worker(rank: int, world: int, port: int, kind: str, sizes: tuple[int, ...], warmup: int,
            iterations: int, channel: Any) -> None:
    """One spawned rank: join the group, sweep, rank 0 reports; errors go to the queue."""
    warnings.filterwarnings("ignore")
    try:
        import torch
        import torch.distributed as dist

        if kind == "cuda":
            torch.cuda.set_device(rank)
        else:
            torch.set_num_threads(max(1, cpu_cores() // world))
        dist.init_process_group("nccl" if kind == "cuda" else "gloo",
                                init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world, timeout=timedelta(seconds=STALL_S))
        report = (lambda: channel.put(("step", None))) if rank == 0 else (lambda: None)
        result = _sweep(kind, rank, world, sizes, warmup, iterations, "node", report)
        if rank == 0:
            channel.put(("rows", result))
        dist.destroy_process_group()
    except Exception as error:  # noqa: BLE001 - any failure goes to the parent, which raises
        channel.put(("error", f"rank {rank}: {type(error).__name__}: {error}"))
        raise SystemExit(1) from None


def _sweep(kind, rank, world, sizes, warmup, iterations, tier, report):
    """Rows (op, tier, group, bytes, seconds) for every op and size, and the skipped ops."""
    import torch.distributed as dist

    rows, skipped = [], []
    for op in COLLECTIVE_OPS:
        for size in sizes:
            run = _runner(op, rank, world, size, kind)
            seconds = _time(run, kind, warmup, iterations)
            if seconds is None:
                skipped.append(op)
                for _ in sizes:
                    report()
                break
            group = 2 if op == "send_recv" else world
            rows.append((op, tier, group, _numel(size, world) * 4, seconds))
            report()
    for members in subgroups(world):
        # every rank joins new_group; the first ``members`` ranks run, the others wait
        group = dist.new_group(list(range(members)))
        for op in COLLECTIVE_OPS:
            if op == "send_recv":
                continue
            for size in sizes:
                if op not in skipped:
                    run = _runner(op, rank, members, size, kind, group) \
                        if rank < members else (lambda: None)
                    seconds = _time(run, kind, warmup, iterations)
                    if seconds is not None:
                        rows.append((op, tier, members, _numel(size, members) * 4, seconds))
                report()
    dist.barrier()
    return rows, skipped


def _numel(size: int, world: int) -> int:
    """fp32 elements of a ``size``-byte message, a multiple of ``world``."""
    return max(world, size // 4 // world * world)


def _runner(op: str, rank: int, world: int, size: int, kind: str,
            group: Any = None) -> Callable[[], object]:
    """A call running ``op`` once on this rank with a ``size``-byte (full) tensor, over
    ``group`` (of ``world`` ranks; None: the default group)."""
    import torch
    import torch.distributed as dist

    numel = _numel(size, world)
    full = torch.ones(numel, device=kind)
    part = torch.ones(numel // world, device=kind)
    if op == "all_reduce":
        return lambda: dist.all_reduce(full, group=group)
    if op == "all_gather":
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        return lambda: gather(full, part, group=group)
    if op == "reduce_scatter":
        scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
        return lambda: scatter(part, full, group=group)
    if op == "all_to_all":
        out = torch.empty_like(full)
        return lambda: dist.all_to_all_single(out, full, group=group)
    # send_recv: rank 0 sends to rank 1; the other ranks wait at the timing barrier.
    return {0: lambda: dist.send(full, 1), 1: lambda: dist.recv(full, 0)}.get(rank, lambda: None)


#: The computation before each timed CPU collective: a few milliseconds of one-thread
#: matmuls, about one executor layer's work between two of its collectives
SEGMENT_SIDE, SEGMENT_MATMULS = 192, 8


def _time(run: Callable[[], object], kind: str, warmup: int, iterations: int) -> float | None:
    """Seconds per call on the slowest rank (GPU: mean back to back; CPU: median of single
    calls); None when any rank's backend lacks the op."""
    import torch
    import torch.distributed as dist

    ok = torch.ones(1, device=kind)
    try:
        run()
    except (RuntimeError, NotImplementedError, ValueError):
        ok.zero_()
    dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    if ok.item() == 0:
        return None
    for _ in range(warmup):
        run()
    sync = torch.cuda.synchronize if kind == "cuda" else (lambda: None)
    sync()
    if kind == "cuda":  # back to back, as nccl-tests times them
        dist.barrier()
        began = time.perf_counter()
        for _ in range(iterations):
            run()
        sync()
        mine = (time.perf_counter() - began) / iterations
    else:
        # gloo: every call alone after the same computation on every rank, the median of
        # them, as the executor issues its collectives between computations; issued so, a
        # call costs more than back to back or after a barrier (256 KB all-reduce over 2
        # processes of a 2-core VM: 2.6 against 1.0 ms, the median), and a back-to-back
        # mean swings with one slow call on a shared CPU
        work = torch.ones(SEGMENT_SIDE, SEGMENT_SIDE)
        calls = []
        for _ in range(iterations):
            for _ in range(SEGMENT_MATMULS):
                torch.mm(work, work)
            began = time.perf_counter()
            run()
            calls.append(time.perf_counter() - began)
        mine = statistics.median(calls)
    slowest = torch.tensor([mine], device=kind, dtype=torch.float64)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    return float(f"{slowest.item():.6g}")
