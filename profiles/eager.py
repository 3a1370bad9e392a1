"""Eager PyTorch's element-wise ops of one pre-norm decoder block, as the executor runs them.

``rms_norm`` and ``rope`` are the executor's own (``executor/model.py`` imports them from
here); ``element_chain`` builds everything else a block runs outside its GEMMs and attention
core, so ``sysplan profile --model`` can time exactly the ops ``costmodels/eager.py`` counts.
torch (an optional extra) is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm (Zhang & Sennrich 2019, eq. 4)."""
    import torch

    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10_000.0) -> torch.Tensor:
    """Rotary embedding of x [b, h, s, d] at global positions [s] (Su et al. 2021, eq. 34)."""
    import torch

    half = x.shape[-1] // 2
    inverse = base ** (-torch.arange(half, dtype=x.dtype, device=x.device) / half)
    angles = positions.to(x.dtype)[:, None] * inverse[None, :]
    cos, sin = angles.cos().repeat(1, 2), angles.sin().repeat(1, 2)
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def element_chain(tokens: int, hidden: int, heads: int, kv_heads: int, head_dim: int, ffn: int,
                  device: Any, dtype: Any
                  ) -> tuple[Callable[[], list[torch.Tensor]], list[torch.Tensor]]:
    """(forward, output gradients) of one block's element-wise ops over ``tokens`` tokens
    (one sequence): the input norm, q/k/v head views, RoPE on q and k, GQA's repeat of K
    and V, the attention output's transpose and copy, the residual add, the MLP norm, the
    SwiGLU activation and the second residual add. The GEMM and attention outputs they
    read are leaf tensors, so autograd runs only these ops; ``torch.autograd.backward(
    forward(), gradients)`` is one block's element-wise backward."""
    import torch
    import torch.nn.functional as F

    def leaf(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device, dtype=dtype, requires_grad=True)

    h, q, k, v = leaf(1, tokens, hidden), leaf(1, tokens, heads * head_dim), \
        leaf(1, tokens, kv_heads * head_dim), leaf(1, tokens, kv_heads * head_dim)
    core, attn_out, mlp_out = leaf(1, heads, tokens, head_dim), leaf(1, tokens, hidden), \
        leaf(1, tokens, hidden)
    gate, up, w_attn, w_mlp = leaf(1, tokens, ffn), leaf(1, tokens, ffn), leaf(hidden), \
        leaf(hidden)
    positions = torch.arange(tokens, device=device)
    group = heads // kv_heads

    def forward() -> list[torch.Tensor]:
        normed = rms_norm(h, w_attn)
        qh, kh, vh = (x.view(1, tokens, -1, head_dim).transpose(1, 2) for x in (q, k, v))
        qh, kh = rope(qh, positions), rope(kh, positions)
        kh, vh = kh.repeat_interleave(group, dim=1), vh.repeat_interleave(group, dim=1)
        # the block's reshape to [b, s, heads x d] is this copy and a view its out
        # projection counts (costmodels.compute.layer_ops)
        merged = core.transpose(1, 2).contiguous()
        residual = h + attn_out
        return [normed, qh, kh, vh, merged, rms_norm(residual, w_mlp),
                F.silu(gate) * up, residual + mlp_out]

    gradients = [torch.randn_like(x) for x in forward()]
    return forward, gradients
