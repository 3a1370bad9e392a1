"""Flat parameter units, ZeRO sharding over data parallelism, and the shared Adam update.

Each unit (the embedding, one block, the final norm + head) keeps its rank's TP shards as one
flat fp32 buffer padded to a multiple of the DP x CP group size. The gradient reduction and
the optimizer follow the ZeRO stage (Rajbhandari et al. 2020, section 5):

- 0: all-reduce the gradient, every rank updates the whole buffer.
- 1: all-reduce the gradient, each rank updates its 1/dp shard (Adam moments only for it)
  and all-gathers the updated buffer.
- 2: as 1, but the gradient is reduce-scattered so a rank only receives its shard; the local
  accumulation buffer over micro-batches stays full size.
- 3 (FSDP): a rank stores only its shard; the unit is all-gathered before each use and the
  gradient reduce-scattered back to the shard in backward (``parallel.gather_params``). Without
  a pipeline the gathered copy is freed after the unit's forward and gathered again for its
  backward (ZeRO-3's 3 Psi traffic, Rajbhandari et al. 2020, section 7.2; FSDP2
  ``reshard_after_forward=True``): ``ParamUnit.resharded`` saves the tensors autograd keeps of
  it as references and re-gathers on first use in backward. Under a pipeline, and for a
  layer whose forward is recomputed, the copy lives until the backward (FSDP2 + PP keeps
  it; a recomputed layer saves only its inputs).

The single-process reference is stage 0 on one rank: the same ``adam_update``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from sysplan.executor.model import TinyConfig, local_tensor, param_specs
from sysplan.executor.parallel import Comm, gather_params


def adam_update(param: torch.Tensor, grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor,
                step: int, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                eps: float = 1e-8) -> None:
    """Adam on flat tensors, in place, step counted from 1 (Kingma & Ba 2015, Algorithm 1)."""
    beta1, beta2 = betas
    m.mul_(beta1).add_(grad, alpha=1 - beta1)
    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    m_hat = m / (1 - beta1 ** step)
    v_hat = v / (1 - beta2 ** step)
    param.sub_(lr * m_hat / (v_hat.sqrt() + eps))


class ParamUnit:
    """One unit's local parameters as a flat fp32 buffer, ZeRO-sharded over DP x CP."""

    def __init__(self, tiny: TinyConfig, unit: str, comm: Comm, zero: int,
                 device: torch.device) -> None:
        self.comm, self.zero = comm, zero
        tensors = {name: local_tensor(tiny, f"{unit}.{name}", spec, comm.size("tp"),
                                      comm.rank("tp"))
                   for name, spec in param_specs(tiny, unit).items()}
        self.views: list[tuple[str, torch.Size, int]] = []
        offset = 0
        for name, tensor in tensors.items():
            self.views.append((name, tensor.shape, offset))
            offset += tensor.numel()
        shards = comm.size("dp")
        flat = torch.cat([t.flatten() for t in tensors.values()])
        flat = torch.nn.functional.pad(flat, (0, -offset % shards))
        self.shard = slice(comm.rank("dp") * (flat.numel() // shards),
                           (comm.rank("dp") + 1) * (flat.numel() // shards))
        stored = flat[self.shard].clone() if zero == 3 else flat
        self.data = stored.to(device).requires_grad_()
        state = flat.numel() if zero == 0 else flat.numel() // shards
        self.m = torch.zeros(state, device=device)
        self.v = torch.zeros(state, device=device)
        self._capturing = False  # inside `resharded`
        self._gathered: torch.Tensor | None = None  # the forward's copy, inside `resharded`
        self._regathered: torch.Tensor | None = None  # backward's copy, until the reduction

    def params(self) -> dict[str, torch.Tensor]:
        """The unit's parameters as views of the (under ZeRO-3, freshly gathered) buffer."""
        flat = gather_params(self.data, self.comm) if self.zero == 3 else self.data
        if flat is not self.data and self._capturing:
            self._gathered = flat
            # the gathered copy's gradient is complete once every use ran backward: drop
            # the re-gathered copy then (the hook sits on the autograd node, not the buffer)
            flat.register_hook(self._release)
        # one split node: its backward concatenates the gradients once, where a slice per
        # parameter would write a zero-filled full-size buffer per parameter
        sizes = [shape.numel() for _, shape, _ in self.views]
        pieces = flat.split([*sizes, flat.numel() - sum(sizes)])
        return {name: piece.view(shape)
                for (name, shape, _), piece in zip(self.views, pieces)}

    @contextmanager
    def resharded(self) -> Iterator[None]:
        """Inside, forward ops on this unit's gathered parameters save references to them,
        not the tensors: the copy is freed when the forward ends and gathered again the first
        time backward needs it (no-op unless ZeRO-3 over more than one rank)."""
        if self.zero != 3 or self.comm.size("dp") == 1:
            yield
            return

        def pack(t: torch.Tensor):
            full = self._gathered
            if full is not None and t.untyped_storage().data_ptr() == \
                    full.untyped_storage().data_ptr():
                return (t.storage_offset(), t.size(), t.stride())
            return t

        def unpack(saved):
            if not isinstance(saved, tuple):
                return saved
            if self._regathered is None:
                with torch.no_grad():
                    self._regathered = self.comm.all_gather(self.data.detach(), "dp", 0)
            offset, size, stride = saved
            return self._regathered.as_strided(size, stride, offset)

        self._capturing = True
        try:
            with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
                yield
        finally:
            self._capturing, self._gathered = False, None

    def _release(self, grad: torch.Tensor) -> None:
        self._regathered = None

    @torch.no_grad()
    def step(self, step: int, lr: float) -> None:
        """Reduce the accumulated gradient over DP x CP, apply Adam to this rank's part."""
        grad = self.data.grad if self.data.grad is not None else torch.zeros_like(self.data)
        if self.zero == 3:
            own, own_grad = self.data, grad  # reduce-scattered in backward already
        elif self.zero == 2:
            own, own_grad = self.data[self.shard], self.comm.reduce_scatter(grad, "dp", 0)
        else:
            self.comm.all_reduce(grad, "dp")
            own, own_grad = (self.data, grad) if self.zero == 0 else (
                self.data[self.shard], grad[self.shard])
        adam_update(own, own_grad, self.m, self.v, step, lr)
        if self.zero in (1, 2):
            self.data.copy_(self.comm.all_gather(own, "dp", 0))
        self.data.grad = None
