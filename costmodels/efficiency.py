"""Default (uncalibrated) efficiency curves, used until a measured profile prices a term.

Every curve is a fraction of the GPU's datasheet peak. The shapes come from the one node we
have measured (``shared/data/measured/h100``, H100 SXM 80GB at 700 W, 2026-11-22);
``benchmarks/derive_default_efficiency.py`` recomputes the tables below from those CSVs.
GPUs we have not measured reuse the H100 fractions of their own datasheet peak, and the
output marks those terms as uncalibrated. Nothing here is fitted to published training runs.
"""

from __future__ import annotations

import numpy as np

from sysplan.hardware.types import GPU

# measured/h100/gemm.csv: median bf16 TFLOP/s of the layer-shape GEMMs per log2(FLOPs) bucket,
# divided by the datasheet dense peak (989.4 TFLOP/s), made monotone.
_GEMM_LOG2_FLOPS = np.array([30.0, 31.0, 32.0, 33.0, 33.5, 34.0, 35.0, 36.0, 38.0, 40.0, 42.0, 44.0])
_GEMM_FRACTION = np.array([0.05, 0.10, 0.21, 0.33, 0.55, 0.59, 0.65, 0.67, 0.70, 0.70, 0.71, 0.72])

# measured/h100/attention.csv: median forward+backward TFLOP/s of causal attention (head dim
# 128) over batch x heads, per sequence length, divided by the dense bf16 peak.
_ATTN_LOG2_SEQ = np.array([10.0, 11.0, 12.0, 13.0, 14.0, 15.0])
_ATTN_FRACTION = {
    "flash": np.array([81.3, 173.8, 240.9, 285.2, 320.5, 323.5]) / 989.4,
    "cudnn": np.array([108.6, 266.4, 427.9, 495.9, 535.1, 549.7]) / 989.4,
}
# FlashAttention-2 (Dao 2023, Fig. 5, A100 80GB, causal, head dim 128, fwd+bwd TFLOP/s at
# seq 512..16k) for Ampere, where the Hopper table above (FA2 not tuned for Hopper) is wrong.
_ATTN_AMPERE_LOG2_SEQ = np.array([9.0, 10.0, 11.0, 12.0, 13.0, 14.0])
_ATTN_AMPERE_FRACTION = np.array([88.0, 119.0, 152.0, 173.0, 187.0, 196.0]) / 312.0

#: measured/h100/env.json: 4 GiB device copy at 3,013 GB/s of the 3.35 TB/s datasheet.
MEMORY_BOUND_FRACTION = 3013.0 / 3350.0

#: Collective bus bandwidth reached of the link rate, per tier position. nccl-tests
#: (NVIDIA/nccl-tests doc/PERFORMANCE.md convention) on DGX A100/H100 report all-reduce bus
#: bandwidth of roughly 230/300 and 360/450 GB/s inside a node, and 90 %+ of line rate on
#: InfiniBand; uncalibrated until `sysplan profile` measures collectives.
COLLECTIVE_FRACTION_INNER = 0.78
COLLECTIVE_FRACTION_NETWORK = 0.90

#: Terms priced by the defaults above (shown as uncalibrated in the output).
UNCALIBRATED_TERMS = ("gemm", "attention", "elementwise", "communication")


def gemm_fraction(flops: np.ndarray) -> np.ndarray:
    """Fraction of dense peak one GEMM of ``flops`` reaches (H100-measured shape)."""
    log2 = np.log2(np.maximum(flops, 1.0))
    return np.interp(log2, _GEMM_LOG2_FLOPS, _GEMM_FRACTION)


def attention_fraction(gpu: GPU, seq_len: np.ndarray, backend: str) -> np.ndarray:
    """Fraction of dense bf16 peak causal fused attention reaches at ``seq_len`` keys."""
    log2 = np.log2(np.maximum(seq_len, 1.0))
    if gpu.gpu_class == "ampere":
        return np.interp(log2, _ATTN_AMPERE_LOG2_SEQ, _ATTN_AMPERE_FRACTION)
    return np.interp(log2, _ATTN_LOG2_SEQ, _ATTN_FRACTION[backend])


def collective_fraction(tier_index: np.ndarray, num_tiers: int) -> np.ndarray:
    """Share of link bandwidth a collective reaches on tier ``tier_index``."""
    outer = tier_index >= num_tiers - 1
    return np.where(outer & (num_tiers > 1), COLLECTIVE_FRACTION_NETWORK, COLLECTIVE_FRACTION_INNER)
