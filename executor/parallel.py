"""The 4-D rank grid, timed communication, and the TP/SP/CP autograd operators.

Ranks are laid out tp fastest, then cp, dp and pp (Megatron-LM's "tp-cp-dp-pp" order), so
a TP group is a run of consecutive ranks. Gradients and ZeRO shards use the combined DP x CP
group (CP ranks hold the same weights and see different tokens), as Megatron's distributed
optimizer does. Every collective goes through ``Comm``, which times it per axis; a group of
size one is the identity, so the single-process reference runs the same code without
torch.distributed.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

#: Communication axes and the grid dims each one spans.
AXES = {"tp": ("tp",), "cp": ("cp",), "dp": ("cp", "dp")}
DIMS = ("tp", "cp", "dp", "pp")


@dataclass(frozen=True)
class Grid:
    """Sizes of the rank grid and this process's rank (tp fastest, pp slowest)."""

    tp: int
    cp: int
    dp: int
    pp: int
    rank: int

    @property
    def world(self) -> int:
        """Processes in the grid."""
        return self.tp * self.cp * self.dp * self.pp

    def coord(self, dim: str, rank: int | None = None) -> int:
        """This rank's (or ``rank``'s) index along ``dim``."""
        stride = 1
        for name in DIMS:
            if name == dim:
                return ((self.rank if rank is None else rank) // stride) % getattr(self, name)
            stride *= getattr(self, name)
        raise AssertionError(dim)

    def stage_peer(self, pp_rank: int) -> int:
        """Global rank with this rank's tp/cp/dp coordinates on pipeline stage ``pp_rank``."""
        return self.rank + (pp_rank - self.coord("pp")) * self.tp * self.cp * self.dp

    def partition(self, dims: tuple[str, ...]) -> list[list[int]]:
        """All groups of ranks that differ only along ``dims`` (each sorted, fixed order)."""
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for rank in range(self.world):
            key = tuple(self.coord(d, rank) for d in DIMS if d not in dims)
            groups[key].append(rank)
        return [groups[key] for key in sorted(groups)]


class Comm:
    """Process groups of one layout and every collective, timed per axis in seconds."""

    def __init__(self, grid: Grid, device: torch.device) -> None:
        self.grid, self.device = grid, device
        self.distributed = dist.is_available() and dist.is_initialized()
        self.nccl = self.distributed and dist.get_backend() == "nccl"
        self.seconds: dict[str, float] = defaultdict(float)
        self.groups: dict[str, tuple[Any, int, int]] = {}
        created = []
        for axis, dims in AXES.items():
            for ranks in grid.partition(dims):  # every rank creates every group, same order
                group = dist.new_group(ranks) if len(ranks) > 1 else None
                created.append(group)
                if grid.rank in ranks:
                    self.groups[axis] = (group, len(ranks), ranks.index(grid.rank))
        self._created = [group for group in created if group is not None]

    def size(self, axis: str) -> int:
        """Ranks in this rank's group along ``axis``."""
        return self.groups[axis][1]

    def rank(self, axis: str) -> int:
        """This rank's index in its group along ``axis``."""
        return self.groups[axis][2]

    @contextmanager
    def timed(self, axis: str) -> Iterator[None]:
        """Add the wall time of the block to ``seconds[axis]`` (synchronising CUDA)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds[axis] += time.perf_counter() - start

    def all_reduce(self, t: torch.Tensor, axis: str, op: str = "sum") -> torch.Tensor:
        """In-place all-reduce (sum or max) of a contiguous tensor; returns it."""
        group, size, _ = self.groups[axis]
        if size > 1:
            with self.timed(axis):
                reduce_op = dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM
                dist.all_reduce(t, op=reduce_op, group=group)
        return t

    def all_gather(self, t: torch.Tensor, axis: str, dim: int) -> torch.Tensor:
        """Concatenation along ``dim`` of every group member's ``t``, in group order."""
        group, size, _ = self.groups[axis]
        if size == 1:
            return t
        t = t.contiguous()
        parts = [torch.empty_like(t) for _ in range(size)]
        with self.timed(axis):
            dist.all_gather(parts, t, group=group)
        return torch.cat(parts, dim)

    def reduce_scatter(self, t: torch.Tensor, axis: str, dim: int) -> torch.Tensor:
        """This rank's chunk along ``dim`` of the group sum of ``t``.

        NCCL has reduce_scatter_tensor; gloo has no reduce-scatter, so it all-reduces and
        keeps its slice.
        """
        group, size, rank = self.groups[axis]
        if size == 1:
            return t
        with self.timed(axis):
            if self.nccl:
                source = t.movedim(dim, 0).contiguous()
                out = source.new_empty((source.shape[0] // size, *source.shape[1:]))
                dist.reduce_scatter_tensor(out, source, group=group)
                return out.movedim(0, dim).contiguous()
            total = t.clone(memory_format=torch.contiguous_format)
            dist.all_reduce(total, group=group)
        return total.chunk(size, dim)[rank].contiguous()

    def exchange(self, sends: list[tuple[int, torch.Tensor]],
                 receives: list[tuple[int, torch.Tensor]]) -> None:
        """Pipeline p2p: post every send and receive of one round together, then wait."""
        if not sends and not receives:
            return
        ops = [dist.P2POp(dist.isend, t.contiguous(), peer) for peer, t in sends]
        ops += [dist.P2POp(dist.irecv, buffer, peer) for peer, buffer in receives]
        with self.timed("pp"):
            for request in dist.batch_isend_irecv(ops):
                request.wait()

    def barrier(self) -> None:
        """Synchronise every rank of the world (no-op on one process)."""
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        """Destroy the layout's process groups."""
        for group in self._created:
            dist.destroy_process_group(group)


# Megatron-LM tensor-parallel conjugate operators f and g (Shoeybi et al. 2019, Figure 3)
class _Copy(torch.autograd.Function):
    """f: identity forward, all-reduce of the gradient backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, comm: Comm, axis: str) -> torch.Tensor:
        ctx.comm, ctx.axis = comm, axis
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        total = grad.clone(memory_format=torch.contiguous_format)
        return ctx.comm.all_reduce(total, ctx.axis), None, None


class _Reduce(torch.autograd.Function):
    """g: all-reduce forward, identity backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, comm: Comm, axis: str) -> torch.Tensor:
        return comm.all_reduce(x.clone(memory_format=torch.contiguous_format), axis)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        return grad, None, None


# sequence parallelism's all-gather / reduce-scatter pair (Korthikanti et al. 2022, 4.2.2)
class _Gather(torch.autograd.Function):
    """All-gather along a dim forward, reduce-scatter of the gradient backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, comm: Comm, axis: str, dim: int) -> torch.Tensor:
        ctx.comm, ctx.axis, ctx.dim = comm, axis, dim
        return comm.all_gather(x, axis, dim)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        return ctx.comm.reduce_scatter(grad, ctx.axis, ctx.dim), None, None, None


class _Scatter(torch.autograd.Function):
    """Reduce-scatter along a dim forward, all-gather of the gradient backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, comm: Comm, axis: str, dim: int) -> torch.Tensor:
        ctx.comm, ctx.axis, ctx.dim = comm, axis, dim
        return comm.reduce_scatter(x, axis, dim)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        return ctx.comm.all_gather(grad, ctx.axis, ctx.dim), None, None, None


class _VocabCrossEntropy(torch.autograd.Function):
    """Per-token cross-entropy of logits split over TP along the vocabulary.

    Megatron-LM vocab-parallel cross-entropy (Shoeybi et al. 2019, section 3): all-reduce the
    max, the sum of exponentials and the target logit; the gradient is softmax - one-hot on
    the local vocabulary slice.
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, target: torch.Tensor,
                comm: Comm) -> torch.Tensor:
        rows = logits.shape[-1]
        top = comm.all_reduce(logits.max(-1).values, "tp", op="max")
        shifted = logits - top[:, None]
        exp = shifted.exp()
        total = comm.all_reduce(exp.sum(-1), "tp")
        local = target - comm.rank("tp") * rows
        inside = (local >= 0) & (local < rows)
        local = local.clamp(0, rows - 1)
        picked = shifted.gather(1, local[:, None]).squeeze(1) * inside
        picked = comm.all_reduce(picked.contiguous(), "tp")
        ctx.save_for_backward(exp / total[:, None], local, inside)
        return total.log() - picked

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        softmax, local, inside = ctx.saved_tensors
        one_hot = torch.zeros_like(softmax).scatter_(1, local[:, None],
                                                      inside[:, None].to(softmax.dtype))
        return (softmax - one_hot) * grad[:, None], None, None


def gather_params(shard: torch.Tensor, comm: Comm) -> torch.Tensor:
    """ZeRO-3 / FSDP: all-gather a flat parameter shard over DP; reduce-scatter its gradient.

    ZeRO stage 3 (Rajbhandari et al. 2020, section 5.3).
    """
    return _Gather.apply(shard, comm, "dp", 0) if comm.size("dp") > 1 else shard


class TensorOps:
    """The ``model.Ops`` of one rank: TP (optionally with SP) and CP communication."""

    def __init__(self, comm: Comm, sequence_parallel: bool) -> None:
        self.comm = comm
        self.tp, self.tp_rank = comm.size("tp"), comm.rank("tp")
        self.cp, self.cp_rank = comm.size("cp"), comm.rank("cp")
        self.sequence_parallel = sequence_parallel and self.tp > 1

    def enter(self, x: torch.Tensor) -> torch.Tensor:
        """Into the TP region: f, or under SP the sequence all-gather (dim 1)."""
        if self.tp == 1:
            return x
        if self.sequence_parallel:
            return _Gather.apply(x, self.comm, "tp", 1)
        return _Copy.apply(x, self.comm, "tp")

    def exit(self, x: torch.Tensor, skip_reduce: bool = False) -> torch.Tensor:
        """Out of the TP region: g, or under SP the sequence reduce-scatter (dim 1)."""
        if self.tp == 1:
            return x
        if skip_reduce:
            return x.chunk(self.tp, 1)[self.tp_rank] if self.sequence_parallel else x
        if self.sequence_parallel:
            return _Scatter.apply(x, self.comm, "tp", 1)
        return _Reduce.apply(x, self.comm, "tp")

    def sp_param(self, w: torch.Tensor) -> torch.Tensor:
        """Under SP a replicated weight sees only a sequence shard: sum its gradient over TP."""
        return _Copy.apply(w, self.comm, "tp") if self.sequence_parallel else w

    def cp_gather(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """All-gather over CP (keys and values), reduce-scatter of the gradient."""
        return x if self.cp == 1 else _Gather.apply(x, self.comm, "cp", dim)

    def cross_entropy(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-token loss of vocab-sharded logits [N, vocab / tp]."""
        return _VocabCrossEntropy.apply(logits, target, self.comm)

