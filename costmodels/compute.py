"""Per-micro-batch compute time of one layer on one GPU, vectorised over configurations.

GEMM time = FLOPs / (peak x efficiency(GEMM size)); backward = 2 x forward (dgrad + wgrad,
Narayanan et al. 2021 section 3.5). Attention core priced as fused (flash) attention;
memory-bound element-wise work priced by bytes moved over HBM bandwidth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sysplan.costmodels.efficiency import MEMORY_BOUND_FRACTION, attention_fraction, gemm_fraction
from sysplan.costmodels.layers import LayerShapes, uses_dropout
from sysplan.hardware.types import GPU
from sysplan.models.spec import ModelSpec
from sysplan.workloads.training import TrainJob


@dataclass(frozen=True)
class LayerTime:
    """Forward-pass seconds of one layer for one micro-batch (arrays over configurations)."""

    gemm_s: np.ndarray
    attention_s: np.ndarray
    elementwise_s: np.ndarray
    flops: np.ndarray  # forward matmul + attention FLOPs actually executed on this GPU
    attention_flops: np.ndarray  # the attention-core part of ``flops``

    @property
    def total_s(self) -> np.ndarray:
        return self.gemm_s + self.attention_s + self.elementwise_s


def gemm_seconds(flops: np.ndarray, peak: float) -> np.ndarray:
    """Time of one GEMM of ``flops`` on a GPU of dense ``peak`` FLOP/s."""
    return flops / (peak * gemm_fraction(flops))


def layer_forward(model: ModelSpec, job: TrainJob, gpu: GPU, shapes: LayerShapes, *,
                  tokens: np.ndarray, tp: np.ndarray, etp: np.ndarray, ep: np.ndarray,
                  sp: np.ndarray, cp: np.ndarray, imbalance: float) -> LayerTime:
    """Forward time of one layer over ``tokens`` local tokens (micro-batch x seq / cp)."""
    linear_peak = gpu.peak("fp8" if job.precision == "fp8" else "bf16")
    gemm = np.zeros_like(tokens, dtype=float)
    flops_total = np.zeros_like(gemm)
    cast_elements = np.zeros_like(gemm)
    for g in shapes.gemms:
        if g.expert:
            moe = model.moe
            experts_local = moe.num_experts / ep
            # tokens reaching one local expert: top_k x tokens x ep / E (uniform routing),
            # the slowest rank sees `imbalance` times the mean (training-formulas 4.9)
            per_expert = tokens * moe.top_k * ep / moe.num_experts * imbalance
            flops_one = 2.0 * per_expert * (g.n / moe.num_experts) * g.k / etp
            gemm += experts_local * gemm_seconds(flops_one, linear_peak)
            flops_total += experts_local * flops_one
            cast_elements += tokens * moe.top_k * g.k
            continue
        divisor = tp if g.split == "tp" else 1.0
        flops = 2.0 * tokens * g.n * g.k / divisor  # 2MNK
        peak = linear_peak if g.name != "router" else gpu.peak("bf16")
        gemm += gemm_seconds(flops, peak)
        flops_total += flops
        cast_elements += tokens * g.k
    attention, attn_flops = _attention(model, job, gpu, shapes, tokens, tp, cp)
    elementwise = _elementwise_bytes(model, job, shapes, tokens, tp, sp)
    if job.precision == "fp8":
        # FP8 casts: read bf16 input, write fp8 copy (3 bytes/element) per GEMM input
        # (Micikevicius et al. 2022, "FP8 Formats for Deep Learning", per-tensor scaling)
        elementwise = elementwise + 3.0 * cast_elements
    elementwise_s = elementwise / (gpu.hbm_bandwidth_bytes_per_s * MEMORY_BOUND_FRACTION)
    return LayerTime(gemm, attention, elementwise_s, flops_total + attn_flops, attn_flops)


def _attention(model, job, gpu, shapes, tokens, tp, cp):
    """Core attention forward time and FLOPs on one GPU."""
    heads = model.num_heads / tp
    seq = float(job.seq_len)
    dims = shapes.attn_qk_dim + shapes.attn_v_dim
    if job.flash_attention:
        # causal: each local query attends to s/2 keys on average; QK^T and AV are 2 FLOPs
        # per MAC (FlashAttention-2, Dao 2023, section 4.1 FLOP count, causal = half)
        flops = 2.0 * tokens * (seq / 2.0) * heads * dims
        fraction = attention_fraction(gpu, seq / cp, job.attention_backend)
        return flops / (gpu.peak("bf16") * fraction), flops
    # unfused: full s x s scores as batched GEMMs (Korthikanti et al. 2022, 4 B s^2 h per layer)
    flops = 2.0 * tokens * seq * heads * dims
    return gemm_seconds(flops, gpu.peak("bf16")), flops


def _elementwise_bytes(model: ModelSpec, job: TrainJob, shapes: LayerShapes,
                       tokens, tp, sp) -> np.ndarray:
    """HBM bytes moved by the memory-bound ops of one layer's forward.

    Counted from the tensors of Korthikanti et al. 2022 (section 4.1): two norms (read +
    write h), two residual adds (read 2h, write h), dropout (read, write, 1-byte mask) when
    the model uses it, RoPE on q and k, the MLP activation (SwiGLU reads 2f writes f; GELU
    reads and writes f). Norm/residual/dropout work is replicated across TP unless sequence
    parallel splits it.
    """
    h = model.hidden_size
    replicated = 4 * h + 6 * h + (5 * h if uses_dropout(model) else 0)
    rope = 0 if model.learned_positions else 2 * (model.num_heads + model.num_kv_heads) * model.head_dim
    per_f = 3 if model.gated_mlp else 2
    activation = 0.0
    for g in shapes.gemms:
        if g.name.endswith("_down"):  # its input width is the MLP hidden f
            activation += per_f * g.k * (model.moe.top_k if g.expert else 1)
    if not job.flash_attention:
        # softmax + dropout over the a x s scores per token (Korthikanti et al. 2022, 5as term)
        rope += 5 * model.num_heads * job.seq_len // 2
    replicated_share = np.where(sp > 0, 1.0 / tp, 1.0)
    elements = replicated * replicated_share + (rope + activation) / tp
    return 2.0 * tokens * elements  # 16-bit activations
