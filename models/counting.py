"""Parameter and FLOP counts of a ``ModelSpec`` (pure functions, no I/O).

Parameter counts follow the Hugging Face modeling files layer by layer (``modeling_llama.py``,
``modeling_mixtral.py``, ``modeling_deepseek.py``, ``modeling_gpt2.py``, ...), so they match
``sum(p.numel() for p in model.parameters())``; the general shape is the one of Megatron's
``theoretical_memory_usage.py`` (training-formulas.md §4.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from pydantic import Field

from sysplan.core.types import Frozen
from sysplan.models.spec import ModelSpec


class ParamCounts(Frozen):
    """Parameter counts of one model; ``total`` is the sum of the named parts."""

    total: int = Field(description="All parameters of the main model (MTP modules excluded).")
    active: int = Field(description="Parameters touched per token (routed experts: top_k only).")
    embedding: int = Field(description="Input token embedding, plus learned positions if any.")
    lm_head: int = Field(description="Output projection (0 when tied to the embedding).")
    final_norm: int = Field(description="Norm after the last layer.")
    per_layer: tuple[tuple[int, int], ...] = Field(
        description="(total, active) parameters of each transformer layer."
    )
    mtp: int = Field(description="Multi-token-prediction modules, shared embedding/head excluded.")
    mtp_active: int = Field(description="Active parameters of the MTP modules.")

    @property
    def non_embedding(self) -> int:
        """``total`` minus the input embedding (Kaplan et al. 2020's N)."""
        return self.total - self.embedding


@dataclass(frozen=True)
class _Part:
    """Parameters of one block: all, touched per token, and touched matrix weights."""

    total: int = 0
    active: int = 0
    matmul_active: int = 0

    def __add__(self, other: _Part) -> _Part:
        return _Part(
            self.total + other.total,
            self.active + other.active,
            self.matmul_active + other.matmul_active,
        )


def _dense(weights: int, other: int = 0) -> _Part:
    """A block whose parameters are all used by every token."""
    return _Part(weights + other, weights + other, weights)


def _norm(spec: ModelSpec, dim: int) -> int:
    # RMSNorm has a scale only; LayerNorm a scale and a bias (Zhang & Sennrich 2019; Ba et al. 2016)
    return dim if spec.norm == "rmsnorm" else 2 * dim


def _attention(spec: ModelSpec) -> _Part:
    """Self-attention block: Q, K, V, O projections (GQA) or the MLA projections."""
    if spec.mla is not None:
        return _mla_attention(spec)
    h, d = spec.hidden_size, spec.head_dim
    q_dim, kv_dim = spec.num_heads * d, spec.num_kv_heads * d
    # q/k/v/o_proj: h·a·d + 2·h·g·d + a·d·h (HF modeling_llama.py LlamaAttention)
    weights = h * q_dim + 2 * h * kv_dim + q_dim * h
    other = 0
    if spec.linear_bias:
        other += q_dim + 2 * kv_dim + h  # GPT-2/3: biases on c_attn and c_proj (modeling_gpt2.py)
    elif spec.qkv_bias:
        other += q_dim + 2 * kv_dim  # Qwen2: bias on q/k/v only (modeling_qwen2.py)
    if spec.qk_norm:
        other += 2 * _norm(spec, d)  # Qwen3: q_norm, k_norm over head_dim (modeling_qwen3.py)
    return _dense(weights, other)


def _mla_attention(spec: ModelSpec) -> _Part:
    """Multi-head latent attention (DeepSeek-V2 §2.1, eqs. 9-14; HF modeling_deepseek.py)."""
    mla = spec.mla
    assert mla is not None
    h, a = spec.hidden_size, spec.num_heads
    qk_dim = mla.qk_nope_head_dim + mla.qk_rope_head_dim
    if mla.q_lora_rank:
        # q_a_proj h·r_q, q_a_layernorm r_q, q_b_proj r_q·a·(nope + rope)
        q_weights = h * mla.q_lora_rank + mla.q_lora_rank * a * qk_dim
        q_other = _norm(spec, mla.q_lora_rank)
    else:
        q_weights, q_other = h * a * qk_dim, 0  # q_proj h·a·(nope + rope)
    # kv_a_proj_with_mqa h·(r_kv + rope), kv_a_layernorm r_kv, kv_b_proj r_kv·a·(nope + v)
    kv_weights = h * (mla.kv_lora_rank + mla.qk_rope_head_dim)
    kv_weights += mla.kv_lora_rank * a * (mla.qk_nope_head_dim + mla.v_head_dim)
    kv_other = _norm(spec, mla.kv_lora_rank)
    o_weights = a * mla.v_head_dim * h  # o_proj a·v·h
    return _dense(q_weights + kv_weights + o_weights, q_other + kv_other)


def _mlp(spec: ModelSpec, ffn: int) -> _Part:
    """One dense MLP (or one expert) of hidden size ``ffn``."""
    h = spec.hidden_size
    # gated (SwiGLU, Shazeer 2020): gate, up, down = 3·h·f; plain: fc1, fc2 = 2·h·f
    weights = (3 if spec.gated_mlp else 2) * h * ffn
    # GPT-2/3 biases: f on each input projection, h on the output one (modeling_gpt2.py GPT2MLP)
    bias = ((2 if spec.gated_mlp else 1) * ffn + h) if spec.linear_bias else 0
    return _dense(weights, bias)


def _moe_mlp(spec: ModelSpec) -> _Part:
    """Routed experts (top_k active), shared experts and router of one MoE layer."""
    moe = spec.moe
    assert moe is not None
    h, experts = spec.hidden_size, moe.num_experts
    expert = _mlp(spec, moe.expert_ffn_hidden)
    if moe.expert_bias and not spec.linear_bias:
        # GPT-OSS experts: a bias on the fused gate/up output (2f) and on the down output (h)
        # (HF modeling_gpt_oss.py GptOssExperts gate_up_proj_bias, down_proj_bias)
        expert = expert + _dense(0, (2 if spec.gated_mlp else 1) * moe.expert_ffn_hidden + h)
    # routed: E experts stored, k used per token (Megatron theoretical_memory_usage.py)
    routed = _Part(
        experts * expert.total, moe.top_k * expert.total, moe.top_k * expert.matmul_active
    )
    # shared experts, always active (DeepSeekMoE, arXiv 2401.06066 §3.2)
    shared = _Part()
    for _ in range(moe.num_shared_experts):
        shared = shared + _mlp(spec, moe.shared_ffn)
    # router: h·E gate weights (modeling_mixtral.py gate); DeepSeek-V3 adds E bias (noaux_tc)
    router = _dense(h * experts, experts if moe.router_bias else 0)
    return routed + shared + router


def _layer(spec: ModelSpec, index: int) -> _Part:
    """Transformer layer ``index``: two norms, attention, dense or MoE MLP."""
    norms = _dense(0, 2 * _norm(spec, spec.hidden_size))  # input and post-attention norms
    mlp = _moe_mlp(spec) if spec.is_moe_layer(index) else _mlp(spec, spec.ffn_hidden)
    return norms + _attention(spec) + mlp


def _mtp_module(spec: ModelSpec) -> _Part:
    """One MTP module without its shared embedding and output head (DeepSeek-V3 §2.2, eq. 21)."""
    h = spec.hidden_size
    # enorm + hnorm (2 norms of h), eh_proj 2h·h, shared_head.norm, one more transformer layer
    projection = _dense(2 * h * h, 3 * _norm(spec, h))
    return projection + _layer(spec, spec.num_layers)


@lru_cache(maxsize=256)
def param_counts(spec: ModelSpec) -> ParamCounts:
    """Exact parameter counts of ``spec`` (see the module docstring for the sources).

    Cached: specs are frozen and the result is immutable."""
    h = spec.hidden_size
    embedding = spec.vocab_size * h  # token embedding V·h
    if spec.learned_positions:
        embedding += spec.max_seq_len * h  # GPT-2/3 wpe: s·h (modeling_gpt2.py)
    lm_head = 0 if spec.tied_embeddings else spec.vocab_size * h  # untied head V·h
    final_norm = _norm(spec, h)
    layers = [_layer(spec, i) for i in range(spec.num_layers)]
    mtp = _Part()
    for _ in range(spec.mtp_layers):
        mtp = mtp + _mtp_module(spec)
    fixed = embedding + lm_head + final_norm
    return ParamCounts(
        total=fixed + sum(part.total for part in layers),
        active=fixed + sum(part.active for part in layers),
        embedding=embedding,
        lm_head=lm_head,
        final_norm=final_norm,
        per_layer=tuple((part.total, part.active) for part in layers),
        mtp=mtp.total,
        mtp_active=mtp.active,
    )


def padded_vocab(spec: ModelSpec, tp: int = 1, multiple: int = 128) -> int:
    """Vocabulary padded to a multiple of ``multiple × tp`` (Megatron ``_vocab_size_with_padding``,
    ``--make-vocab-size-divisible-by 128``)."""
    # works elementwise on a numpy array of TP degrees too (the cost models pass one)
    if np.any(np.asarray(tp) < 1) or multiple < 1:
        raise ValueError(f"tp ({tp}) and multiple ({multiple}) must be positive")
    step = multiple * tp
    return -(-spec.vocab_size // step) * step


def _attention_dims(spec: ModelSpec) -> tuple[int, int]:
    """Per-head dims of the QK product and of the AV product."""
    if spec.mla is not None:
        return spec.mla.qk_nope_head_dim + spec.mla.qk_rope_head_dim, spec.mla.v_head_dim
    return spec.head_dim, spec.head_dim


def _attention_layers(spec: ModelSpec, include_mtp: bool) -> int:
    return spec.num_layers + (spec.mtp_layers if include_mtp else 0)


def model_flops_per_token(spec: ModelSpec, seq_len: int, include_mtp: bool = False) -> float:
    """Model FLOPs of one training step per token, the numerator of MFU.

    PaLM (Chowdhery et al. 2022, App. B): ``6·N + 12·L·H·Q·T``, no causal discount.
    N = active parameters (MoE: shared experts + router + routed top_k only) without the input
    embedding (a lookup, no matmul) but with the LM head (a matmul; a tied embedding matrix is
    counted once, as the head). Norms and biases stay in N, as in PaLM's total count. For MLA
    the attention term is ``6·L·H·T·(qk_dim + v_dim)``, which is ``12·L·H·Q·T`` when
    ``qk_dim = v_dim = Q``. ``include_mtp`` adds DeepSeek-V3's MTP modules (their layer, and
    one more pass through the shared head) to both terms.
    """
    counts = param_counts(spec)
    head = spec.vocab_size * spec.hidden_size
    n = counts.active - counts.embedding + (head if spec.tied_embeddings else 0)
    if include_mtp and spec.mtp_layers:
        n += counts.mtp_active + spec.mtp_layers * head
    qk_dim, v_dim = _attention_dims(spec)
    layers = _attention_layers(spec, include_mtp)
    # 6·N (Kaplan et al. 2020 §2.1) + attention 6·L·H·T·(qk + v) (PaLM App. B, 12·L·H·Q·T)
    return 6.0 * n + 6.0 * layers * spec.num_heads * seq_len * (qk_dim + v_dim)


def forward_flops_per_token(
    spec: ModelSpec, seq_len: int, causal: bool = True, include_mtp: bool = False
) -> float:
    """Matmul FLOPs of one forward pass per token, for hardware-FLOP accounting.

    ``2 ×`` active matrix weights (attention/MLA projections, MLPs, router, top_k experts,
    LM head; no embedding lookup, norms or biases) plus the attention core per layer:
    ``2·H·T·qk_dim`` for QKᵀ and ``2·H·T·v_dim`` for AV, halved when ``causal``
    (Megatron ``num_floating_point_operations``; training-formulas.md §4.2), with a sliding
    window's layers counting the keys it keeps (``ModelSpec.attended_keys``).
    """
    h = spec.hidden_size
    layers = [_layer(spec, i) for i in range(spec.num_layers)]
    matmul = sum(part.matmul_active for part in layers) + spec.vocab_size * h  # LM head V·h
    if include_mtp:
        for _ in range(spec.mtp_layers):
            matmul += _mtp_module(spec).matmul_active + spec.vocab_size * h
    qk_dim, v_dim = _attention_dims(spec)
    # causal: the keys a query attends to, a sliding window's layers fewer
    keys = spec.attended_keys(seq_len) if causal else float(seq_len)
    core = 2.0 * spec.num_heads * keys * (qk_dim + v_dim)
    return 2.0 * matmul + _attention_layers(spec, include_mtp) * core
