"""One rank's training run under a layout: its model chunks, the schedule, and measurements.

The loss of a step is the mean over every token of the global batch: each micro-batch adds
its token-loss sum divided by the global token count, so gradients are summed (not
averaged) over DP x CP and micro-batches and match one process exactly.
"""

from __future__ import annotations

import functools
import resource
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.checkpoint import checkpoint

from sysplan.executor.layout import ExecLayout, RunCase, chunk_layers
from sysplan.executor.model import TinyConfig, block, embed, head_loss, synthetic_batch
from sysplan.executor.parallel import Comm, Grid, TensorOps
from sysplan.executor.pipeline import Action, plan_rounds, run_rounds
from sysplan.executor.zero import ParamUnit

STATUS = Path("/proc/self/status")


def _status_bytes(field: str) -> int | None:
    """A memory field (VmRSS, VmHWM) of /proc/self/status in bytes; None off Linux."""
    if not STATUS.exists():
        return None
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return None


def _reset_peak(device: torch.device) -> int:
    """Start peak-memory tracking now; return the baseline it is measured against."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return 0
    try:  # writing 5 resets VmHWM to the current RSS (Linux proc(5), /proc/pid/clear_refs)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_bytes("VmRSS") or 0


def _peak(device: torch.device, baseline: int) -> int:
    """Peak memory since ``_reset_peak`` (CUDA: allocated bytes; CPU: RSS above baseline)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = _status_bytes("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return max(0, peak - baseline)


class Stage:
    """This rank's model chunks under one layout, and the data of the current step."""

    def __init__(self, tiny: TinyConfig, layout: ExecLayout, comm: Comm,
                 device: torch.device, faults: frozenset[str]) -> None:
        self.tiny, self.layout, self.comm, self.device = tiny, layout, comm, device
        self.chunks = chunk_layers(tiny, layout)
        self.last = len(self.chunks) - 1
        mine = [c for c in range(len(self.chunks)) if c % layout.pp == comm.grid.coord("pp")]
        names = (["embed"] if 0 in mine else []) + [
            f"layer{layer}" for c in mine for layer in self.chunks[c]] + (
            ["head"] if self.last in mine else [])
        self.units = {name: ParamUnit(tiny, name, comm, layout.zero, device) for name in names}
        self.ops = TensorOps(comm, layout.sequence_parallel)
        self.fault = "skip_tp_allreduce" in faults
        self.global_tokens = layout.global_batch * tiny.seq_len
        self.saved: dict[tuple[int, int], tuple[torch.Tensor | None, torch.Tensor]] = {}
        self.inputs: tuple[torch.Tensor, ...] = ()
        self.labels: tuple[torch.Tensor, ...] = ()
        self.loss = torch.zeros(1, device=device)

    def load(self, tokens: torch.Tensor) -> None:
        """Take this rank's DP rows and CP columns of the global batch, in micro-batches."""
        grid, layout = self.comm.grid, self.layout
        rows = layout.global_batch // layout.dp
        seq = self.tiny.seq_len // layout.cp
        local = tokens[grid.coord("dp") * rows:(grid.coord("dp") + 1) * rows].to(self.device)
        columns = slice(grid.coord("cp") * seq, (grid.coord("cp") + 1) * seq)
        self.inputs = local[:, :-1][:, columns].split(layout.micro_batch)
        self.labels = local[:, 1:][:, columns].split(layout.micro_batch)
        self.loss = torch.zeros(1, device=self.device)

    def recompute(self, position: int) -> str:
        """Recompute mode of the layer at ``position`` inside its model chunk."""
        limit = self.layout.recompute_layers
        if self.layout.recompute == "full" and limit is not None and position >= limit:
            return "none"
        return self.layout.recompute

    def resharded(self, unit: str, recompute: str):
        """ZeRO-3 without a pipeline frees ``unit``'s gathered parameters after its forward
        (``ParamUnit.resharded``), unless the layer is recomputed (it then saves only its
        inputs, the gathered copy among them: non-reentrant checkpointing owns the saved-tensor
        hooks) or a pipeline keeps them (FSDP2 + PP)."""
        if self.layout.pp > 1 or recompute != "none":
            return nullcontext()
        return self.units[unit].resharded()

    def compute(self, action: Action, received: torch.Tensor | None) -> torch.Tensor | None:
        """Run one pipeline action; return the activation or input gradient to send on."""
        kind, chunk, micro = action
        if kind == "B":
            x_in, out = self.saved.pop((chunk, micro))
            torch.autograd.backward(out, received)
            return None if x_in is None else x_in.grad
        x_in = None if chunk == 0 else received.requires_grad_()
        if x_in is None:
            with self.resharded("embed", "none"):
                h = embed(self.units["embed"].params(), self.inputs[micro], self.ops)
        else:
            h = x_in
        for position, layer in enumerate(self.chunks[chunk]):
            mode = self.recompute(position)
            with self.resharded(f"layer{layer}", mode):
                h = block(self.tiny, self.units[f"layer{layer}"].params(), h, self.ops, mode,
                          skip_reduce=self.fault and layer == 0)
        if chunk == self.last:
            with self.resharded("head", "none"):
                h = head_loss(self.units["head"].params(), h, self.labels[micro], self.ops)
            h = h / self.global_tokens
            self.loss += h.detach()
        self.saved[(chunk, micro)] = (x_in, h)
        return None if chunk == self.last else h.detach()


@functools.cache
def _load_checkpoint_machinery() -> None:
    """Run one tiny non-reentrant checkpoint now: its first call imports about 150 MB of
    torch modules, which would otherwise be measured as activation memory."""
    x = torch.ones(1, requires_grad=True)
    checkpoint(torch.sin, x, use_reentrant=False).backward()


def train_rank(case: RunCase, steps: int, warmup: int, device: torch.device) -> dict[str, Any]:
    """Train ``steps`` steps on this rank; return its losses, timings and peak memory.

    Peak memory covers the steps after ``warmup`` and is measured against the memory right
    after the model and optimizer state were built.
    """
    tiny, layout = case.tiny, case.layout
    if layout.recompute != "none":
        _load_checkpoint_machinery()
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    grid = Grid(tp=layout.tp, cp=layout.cp, dp=layout.dp, pp=layout.pp, rank=rank)
    comm = Comm(grid, device)
    stage = Stage(tiny, layout, comm, device, case.faults)
    rounds = plan_rounds(layout.schedule, layout.pp, layout.vpp, layout.micro_batches)
    sequence_shards = layout.cp * (layout.tp if layout.sequence_parallel else 1)
    shape = (layout.micro_batch, tiny.seq_len // sequence_shards, tiny.hidden)
    reports_loss = grid.coord("pp") == layout.pp - 1
    baseline = _reset_peak(device)
    losses, times, seconds = [], [], []
    for step in range(steps):
        if step == warmup:
            _reset_peak(device)
        stage.load(synthetic_batch(tiny, layout.global_batch, step))
        comm.barrier()
        comm.seconds.clear()
        start = time.perf_counter()
        run_rounds(rounds, grid, comm, stage.compute, shape, device)
        for unit in stage.units.values():
            unit.step(step + 1, tiny.lr)
        if reports_loss:
            losses.append(comm.all_reduce(stage.loss, "dp").item())
        comm.barrier()
        times.append(time.perf_counter() - start)
        seconds.append(dict(comm.seconds))
    comm.close()
    return {"rank": rank, "coords": {dim: grid.coord(dim) for dim in ("tp", "cp", "dp", "pp")},
            "losses": losses, "step_times_s": times, "seconds": seconds,
            "peak_memory_bytes": _peak(device, baseline)}
