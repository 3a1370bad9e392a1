"""A tiny GPT-style decoder in fp32, written once for every parallel layout.

Pre-norm blocks of RMSNorm, grouped-query attention with RoPE, RMSNorm and a SwiGLU MLP (or a
top-k mixture of experts with a softmax router); final RMSNorm, untied LM head, next-token
cross-entropy. The layer functions take the parameters a rank holds (``local_tensor``) and an
``Ops`` object that performs the tensor- and context-parallel communication; with groups of
size one every op is the identity, which is the single-process reference.

Weights are generated per full tensor from a generator seeded by (seed, parameter name), then
the rank slices its shard, so every layout starts from identical weights. The data stream is
a fixed-seed Markov chain over the vocabulary, identical for every layout.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch.utils.checkpoint import checkpoint

from sysplan.core.errors import InputError
from sysplan.core.types import Frozen
from sysplan.profiles.eager import rms_norm, rope

#: Likely successors of each token in the synthetic Markov data (loss floor ln 4).
SUCCESSORS = 4


class TinyConfig(Frozen):
    """A tiny decoder, its seed and its optimizer step size."""

    vocab: int = Field(default=128, description="Vocabulary size.")
    hidden: int = Field(default=64, description="Model width.")
    layers: int = Field(default=4, description="Transformer blocks.")
    heads: int = Field(default=4, description="Query heads.")
    kv_heads: int = Field(default=2, description="Key/value heads (GQA); divides heads.")
    ffn: int = Field(default=128, description="MLP (or per-expert) inner width.")
    seq_len: int = Field(default=32, description="Tokens per sequence.")
    moe_experts: int = Field(default=0, description="Experts per MLP; 0 is a dense MLP.")
    moe_top_k: int = Field(default=2, description="Experts each token is routed to.")
    seed: int = Field(default=0, description="Seed of the weights and the data stream.")
    lr: float = Field(default=3e-3, description="Adam step size (fixed).")

    @model_validator(mode="after")
    def _check(self) -> TinyConfig:
        sizes = ("vocab", "hidden", "layers", "heads", "kv_heads", "ffn", "seq_len")
        for name in sizes:
            if getattr(self, name) < 1:
                raise InputError(f"tiny {name} {getattr(self, name)}: accepted is >= 1")
        if self.heads % self.kv_heads or self.hidden % self.heads or self.head_dim % 2:
            raise InputError(
                f"tiny heads {self.heads}, kv_heads {self.kv_heads}, hidden {self.hidden}: "
                "accepted is kv_heads dividing heads and heads dividing hidden into an even "
                "head dim"
            )
        if self.moe_experts and not 1 <= self.moe_top_k <= self.moe_experts:
            raise InputError(
                f"tiny moe_top_k {self.moe_top_k}: accepted is 1..moe_experts "
                f"({self.moe_experts})"
            )
        return self

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden // self.heads


@dataclass(frozen=True)
class ParamSpec:
    """One full (unsharded) parameter: shape, the dim split over TP, init scale."""

    shape: tuple[int, ...]
    shard_dim: int | None  # split over TP; None = replicated on every TP rank
    std: float  # normal init scale; 0.0 = ones (norm weights)


class Ops(Protocol):
    """Tensor/context-parallel communication the layers need (identity on one process)."""

    tp: int
    tp_rank: int
    cp: int
    cp_rank: int
    sequence_parallel: bool

    def enter(self, x: torch.Tensor) -> torch.Tensor:
        """Into the TP region: Megatron f (copy) or, under SP, all-gather of the sequence."""

    def exit(self, x: torch.Tensor, skip_reduce: bool = False) -> torch.Tensor:
        """Out of the TP region: Megatron g (all-reduce) or, under SP, reduce-scatter."""

    def sp_param(self, w: torch.Tensor) -> torch.Tensor:
        """A replicated weight used on a sequence shard (its gradient is summed over TP)."""

    def cp_gather(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """All-gather along ``dim`` over the CP group (reduce-scatter in backward)."""

    def cross_entropy(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-token loss of vocab-sharded logits."""


def units(tiny: TinyConfig) -> list[str]:
    """Parameter units in model order: the embedding, each block, the final norm + head."""
    return ["embed", *(f"layer{index}" for index in range(tiny.layers)), "head"]


def param_specs(tiny: TinyConfig, unit: str) -> dict[str, ParamSpec]:
    """Full shapes of one unit's parameters, in a fixed order."""
    hidden, ffn, q_out = tiny.hidden, tiny.ffn, tiny.heads * tiny.head_dim
    kv_out = tiny.kv_heads * tiny.head_dim
    if unit == "embed":
        return {"embed": ParamSpec((tiny.vocab, hidden), 0, 1.0)}
    if unit == "head":
        return {"final_norm": ParamSpec((hidden,), None, 0.0),
                "head": ParamSpec((tiny.vocab, hidden), 0, hidden ** -0.5)}
    # GPT-2 scaled init of residual output projections (Radford et al. 2019, section 2.3)
    out_std = (q_out ** -0.5) / math.sqrt(2 * tiny.layers)
    specs = {
        "attn_norm": ParamSpec((hidden,), None, 0.0),
        "wq": ParamSpec((q_out, hidden), 0, hidden ** -0.5),
        "wk": ParamSpec((kv_out, hidden), 0, hidden ** -0.5),
        "wv": ParamSpec((kv_out, hidden), 0, hidden ** -0.5),
        "wo": ParamSpec((hidden, q_out), 1, out_std),
        "mlp_norm": ParamSpec((hidden,), None, 0.0),
    }
    experts = (tiny.moe_experts,) if tiny.moe_experts else ()
    offset = len(experts)
    if tiny.moe_experts:
        specs["router"] = ParamSpec((tiny.moe_experts, hidden), None, hidden ** -0.5)
    specs["w_gate"] = ParamSpec((*experts, ffn, hidden), offset, hidden ** -0.5)
    specs["w_up"] = ParamSpec((*experts, ffn, hidden), offset, hidden ** -0.5)
    specs["w_down"] = ParamSpec((*experts, hidden, ffn), offset + 1,
                                (ffn ** -0.5) / math.sqrt(2 * tiny.layers))
    return specs


def local_tensor(tiny: TinyConfig, name: str, spec: ParamSpec, tp: int,
                 tp_rank: int) -> torch.Tensor:
    """The TP shard of the full parameter ``name``, generated from (seed, name) alone."""
    if spec.std == 0.0:
        full = torch.ones(spec.shape)
    else:
        generator = torch.Generator().manual_seed(tiny.seed * 1_000_003 + zlib.crc32(name.encode()))
        full = torch.randn(spec.shape, generator=generator) * spec.std
    if spec.shard_dim is None:
        return full
    return full.chunk(tp, spec.shard_dim)[tp_rank].contiguous()


def synthetic_batch(tiny: TinyConfig, global_batch: int, step: int) -> torch.Tensor:
    """Tokens [global_batch, seq_len + 1] of step ``step``: a fixed random Markov chain."""
    table = torch.Generator().manual_seed(tiny.seed + 7_919)
    successors = torch.randint(tiny.vocab, (tiny.vocab, SUCCESSORS), generator=table)
    generator = torch.Generator().manual_seed(tiny.seed * 100_003 + step)
    tokens = torch.empty(global_batch, tiny.seq_len + 1, dtype=torch.long)
    tokens[:, 0] = torch.randint(tiny.vocab, (global_batch,), generator=generator)
    choice = torch.randint(SUCCESSORS, (global_batch, tiny.seq_len), generator=generator)
    for position in range(tiny.seq_len):
        tokens[:, position + 1] = successors[tokens[:, position], choice[:, position]]
    return tokens


def core_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   q_offset: int) -> torch.Tensor:
    """Causal softmax(QK^T / sqrt(d)) V (Vaswani et al. 2017, eq. 1) for a query chunk.

    Queries start at global position ``q_offset``; keys and values cover the sequence from
    position 0. KV heads are shared by groups of query heads (GQA, Ainslie et al. 2023).
    """
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    key_pos = torch.arange(k.shape[2], device=q.device)
    query_pos = q_offset + torch.arange(q.shape[2], device=q.device)
    mask = key_pos[None, :] <= query_pos[:, None]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def attention(tiny: TinyConfig, p: dict[str, torch.Tensor], x: torch.Tensor, ops: Ops,
              selective: bool) -> torch.Tensor:
    """GQA self-attention with RoPE on the local heads; returns the partial out-projection.

    Megatron column-parallel QKV and row-parallel output projection (Shoeybi et al. 2019,
    section 3); under CP the keys and values are all-gathered over the CP group (all-gather
    context parallelism, Llama 3, Dubey et al. 2024, section 3.3.2).
    """
    x = ops.enter(x)
    batch, seq, _ = x.shape
    q, k, v = ((x @ p[name].T).view(batch, seq, -1, tiny.head_dim).transpose(1, 2)
               for name in ("wq", "wk", "wv"))
    positions = ops.cp_rank * seq + torch.arange(seq, device=x.device)
    q, k = rope(q, positions), rope(k, positions)
    k, v = ops.cp_gather(k, 2), ops.cp_gather(v, 2)
    if selective:  # selective recompute of the attention core (Korthikanti et al. 2022, 4.2)
        out = checkpoint(core_attention, q, k, v, ops.cp_rank * seq, use_reentrant=False)
    else:
        out = core_attention(q, k, v, ops.cp_rank * seq)
    return out.transpose(1, 2).reshape(batch, seq, -1) @ p["wo"].T


def swiglu(x: torch.Tensor, gate: torch.Tensor, up: torch.Tensor,
           down: torch.Tensor) -> torch.Tensor:
    """SwiGLU MLP (Shazeer 2020, eq. 6): (silu(x W_gate) * x W_up) W_down."""
    return (F.silu(x @ gate.T) * (x @ up.T)) @ down.T


def mlp(tiny: TinyConfig, p: dict[str, torch.Tensor], x: torch.Tensor,
        ops: Ops) -> torch.Tensor:
    """Dense SwiGLU or top-k MoE on the local ffn shard; returns the partial output."""
    if not tiny.moe_experts:
        return swiglu(ops.enter(x), p["w_gate"], p["w_up"], p["w_down"])
    # softmax router with top-k routing (Shazeer et al. 2017, eq. 3-5), renormalised over
    # the chosen experts (Mixtral, Jiang et al. 2024, section 2.1); computed before the TP
    # region and copied into it, so its gradient is summed over the TP partial outputs
    probs = ops.enter(torch.softmax(x @ ops.sp_param(p["router"]).T, dim=-1))
    x = ops.enter(x)
    weights, chosen = probs.topk(tiny.moe_top_k, dim=-1)
    weights = (weights / weights.sum(-1, keepdim=True)).flatten(0, 1)
    chosen, flat = chosen.flatten(0, 1), x.flatten(0, 1)
    out = torch.zeros_like(flat)
    for expert in range(tiny.moe_experts):
        token, slot = (chosen == expert).nonzero(as_tuple=True)
        if token.numel():
            y = swiglu(flat[token], p["w_gate"][expert], p["w_up"][expert], p["w_down"][expert])
            out = out.index_add(0, token, y * weights[token, slot, None])
    return out.view_as(x)


def block(tiny: TinyConfig, p: dict[str, torch.Tensor], h: torch.Tensor, ops: Ops,
          recompute: str, skip_reduce: bool = False) -> torch.Tensor:
    """One pre-norm transformer block on the residual stream ``h``.

    ``recompute`` is "none", "selective" (attention core) or "full" (the whole block,
    Chen et al. 2016, section 3). ``skip_reduce`` drops the attention's row-parallel
    reduction (a fault for tests).
    """
    def body(h: torch.Tensor) -> torch.Tensor:
        a = attention(tiny, p, rms_norm(h, ops.sp_param(p["attn_norm"])), ops,
                      selective=recompute == "selective")
        h = h + ops.exit(a, skip_reduce)
        return h + ops.exit(mlp(tiny, p, rms_norm(h, ops.sp_param(p["mlp_norm"])), ops))

    return checkpoint(body, h, use_reentrant=False) if recompute == "full" else body(h)


def embed(p: dict[str, torch.Tensor], tokens: torch.Tensor, ops: Ops) -> torch.Tensor:
    """Vocab-parallel embedding (Megatron VocabParallelEmbedding, Shoeybi et al. 2019, 3)."""
    rows = p["embed"].shape[0]
    local = tokens - ops.tp_rank * rows
    inside = (local >= 0) & (local < rows)
    partial = F.embedding(local.clamp(0, rows - 1), p["embed"]) * inside[..., None]
    return ops.exit(partial)


def head_loss(p: dict[str, torch.Tensor], h: torch.Tensor, labels: torch.Tensor,
              ops: Ops) -> torch.Tensor:
    """Sum of next-token losses: final norm, vocab-parallel head and cross-entropy."""
    x = ops.enter(rms_norm(h, ops.sp_param(p["final_norm"])))
    logits = x @ p["head"].T
    return ops.cross_entropy(logits.flatten(0, 1), labels.flatten()).sum()
