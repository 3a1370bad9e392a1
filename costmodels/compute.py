"""Per-micro-batch compute time of one layer on one GPU, vectorised over configurations.

Each GEMM is priced three times, as the three GEMMs autograd runs for a linear layer:
forward Y = X W^T (m, n, k), data gradient (m, k, n) and weight gradient (n, k, m)
(Narayanan et al. 2021 section 3.5: backward = 2 x forward FLOPs), each at the efficiency
the ``Efficiency`` gives its shape. Attention core priced as fused (flash) attention;
memory-bound element-wise work priced by bytes moved over HBM bandwidth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sysplan.costmodels.eager import chain_elements, chain_ops
from sysplan.costmodels.efficiency import ATTENTION_BWD_FLOPS, Efficiency
from sysplan.costmodels.layers import Gemm, LayerShapes, uses_dropout
from sysplan.costmodels.memory import element_bytes, linear_dtype
from sysplan.models.spec import ModelSpec
from sysplan.workloads.training import TrainJob


@dataclass(frozen=True)
class LayerTime:
    """Seconds of one layer for one micro-batch (arrays over configurations)."""

    gemm_s: np.ndarray  # forward GEMMs
    attention_s: np.ndarray  # forward attention core
    elementwise_s: np.ndarray  # forward memory-bound work
    flops: np.ndarray  # forward matmul + attention FLOPs actually executed on this GPU
    attention_flops: np.ndarray  # the attention-core part of ``flops``
    gemm_bwd_s: np.ndarray  # data- and weight-gradient GEMMs
    attention_bwd_s: np.ndarray  # attention backward
    overhead_s: np.ndarray | float = 0.0  # exposed per-op framework cost, forward
    overhead_bwd_s: np.ndarray | float = 0.0  # and backward

    @property
    def total_s(self) -> np.ndarray:
        """Forward seconds."""
        return self.gemm_s + self.attention_s + self.elementwise_s + self.overhead_s


def linear_seconds(eff: Efficiency, m, n, k, peak: float) -> tuple[np.ndarray, np.ndarray]:
    """(forward, backward) seconds of a linear layer's GEMMs: fwd (m, n, k); dgrad (m, k, n)
    and wgrad (n, k, m), the layouts autograd uses."""
    forward = eff.gemm_seconds(m, n, k, peak)
    return forward, eff.gemm_seconds(m, k, n, peak) + eff.gemm_seconds(n, k, m, peak)


def _split_dims(g: Gemm, n, k, divisor):
    """Column-parallel linears split their outputs, row-parallel ones (the attention output
    and MLP down projections) their inputs (Shoeybi et al. 2019, Megatron-LM, section 3)."""
    if g.name == "attn_out" or g.mlp_down:
        return n, k / divisor
    return n / divisor, k


def gemm_times(eff: Efficiency, job: TrainJob, g: Gemm, tokens, tp):
    """(forward seconds, backward seconds, forward FLOPs) of one non-expert GEMM of a layer
    on one GPU over ``tokens`` rows (the router runs in bf16 whatever the precision)."""
    n, k = _split_dims(g, g.n, g.k, tp if g.split == "tp" else 1.0)
    peak = eff.gpu.peak(linear_dtype(job.precision) if g.name != "router" else "bf16")
    forward, backward = linear_seconds(eff, tokens, n, k, peak)
    return forward, backward, 2.0 * tokens * n * k  # 2MNK


def layer_forward(model: ModelSpec, job: TrainJob, eff: Efficiency, shapes: LayerShapes, *,
                  tokens: np.ndarray, tp: np.ndarray, etp: np.ndarray, ep: np.ndarray,
                  sp: np.ndarray, cp: np.ndarray, imbalance: float) -> LayerTime:
    """Time of one layer over ``tokens`` local tokens (micro-batch x seq / cp)."""
    gemm = np.zeros_like(tokens, dtype=float)
    gemm_bwd = np.zeros_like(gemm)
    flops_total = np.zeros_like(gemm)
    cast_elements = np.zeros_like(gemm)
    for g in shapes.gemms:
        if g.expert:
            continue  # routed experts: grouped GEMMs priced by costmodels/moe.py
        fwd, bwd, flops = gemm_times(eff, job, g, tokens, tp)
        gemm += fwd
        gemm_bwd += bwd
        flops_total += flops
        cast_elements += tokens * g.k
    attention, attention_bwd, attn_flops = _attention(model, job, eff, shapes, tokens, tp, cp)
    elementwise = _elementwise_bytes(model, job, shapes, tokens, tp, sp)
    if job.precision == "fp8":
        # FP8 casts: read bf16 input, write fp8 copy (3 bytes/element) per GEMM input
        # (Micikevicius et al. 2022, "FP8 Formats for Deep Learning", per-tensor scaling)
        elementwise = elementwise + 3.0 * cast_elements
    # eager PyTorch at the rates the profile measured its element-wise chain at
    # (costmodels/eager.py); otherwise copy bandwidth and the one-element op's cost
    eager = eff.eager if job.kernel_fusion == "eager" else None
    if eager is None:
        elementwise_s = elementwise / eff.memory_bytes_per_s
        op_forward_s, op_backward_s = eff.op_forward_s, eff.op_backward_s
    else:
        rate = eager.bandwidth(tokens) * eff.calibration.elementwise_scale
        elementwise_s = elementwise / rate
        op_forward_s, op_backward_s = eager.op_forward_s, eager.op_backward_s
    # a CUDA graph replays its kernels without the framework's per-op work: scoped graphs
    # capture attention (and a dense layer's MLP), a full-iteration graph everything
    ops = 0.0 if job.cuda_graphs != "none" else layer_ops(model, job, shapes)
    overhead = op_overhead_seconds(eff, ops * op_forward_s, gemm + attention + elementwise_s)
    overhead_bwd = op_overhead_seconds(eff, ops * op_backward_s,
                                       gemm_bwd + attention_bwd + 2.0 * elementwise_s)
    return LayerTime(gemm, attention, elementwise_s, flops_total + attn_flops, attn_flops,
                     gemm_bwd, attention_bwd, overhead, overhead_bwd)


def op_overhead_seconds(eff: Efficiency, host_s, device_s) -> np.ndarray:
    """Exposed seconds of the per-op framework cost ``host_s`` of work that runs
    ``device_s`` on the device: all of it on a CPU (the process that issues an op runs it),
    on a GPU only what the issuing CPU takes beyond the kernels it keeps busy (CUDA launches
    are asynchronous; the host runs ahead unless it is the slower side)."""
    if eff.gpu.gpu_class == "cpu":
        return np.asarray(host_s, dtype=float) + 0.0 * device_s
    return np.maximum(0.0, host_s - device_s)


def layer_ops(model: ModelSpec, job: TrainJob, shapes: LayerShapes) -> float:
    """Framework ops one layer's forward issues (each with its backward).

    Eager PyTorch (``kernel_fusion`` "eager", executor/model.py), counted as autograd records
    them (tests/test_executor.py checks the count): each of the seven linears (q, k, v, out,
    gate, up, down) on a 3-D input 4 (weight transpose, view in, mm, view out) and its
    weight's gradient accumulation, attention 1, and the element-wise chain
    (``costmodels.eager.chain_ops``). Fused runtimes (Megatron-Core's Transformer
    Engine layer spec): norm + QKV, RoPE, attention, output projection, bias-dropout-add,
    norm + MLP up, activation, MLP down, bias-dropout-add (13 with the FP8 casts' bookkeeping
    left out); routed experts add their own (``costmodels/moe.py`` block: priced there).
    """
    if job.kernel_fusion != "eager":
        return 13.0
    # q, k, v and output projections; gate, up and down (two without a gate): each 4 ops
    # and its weight's gradient accumulation; the attention core; the element-wise chain
    linears = 4 + (3 if model.gated_mlp else 2)
    return float(4 * linears + linears + 1
                 + chain_ops(rope=not model.learned_positions, gated=model.gated_mlp))


def _attention(model, job, eff: Efficiency, shapes, tokens, tp, cp):
    """Core attention forward and backward seconds, and forward FLOPs, on one GPU."""
    heads = model.num_heads / tp
    seq = float(job.seq_len)
    dims = shapes.attn_qk_dim + shapes.attn_v_dim
    if job.flash_attention:
        # causal: each local query attends to s/2 keys on average; QK^T and AV are 2 FLOPs
        # per MAC (FlashAttention-2, Dao 2023, section 4.1 FLOP count, causal = half); a
        # sliding window's layers fewer, the kernel skipping the blocks outside it
        # (FlashAttention-2 window_size; the layers' mean: ModelSpec.attended_keys)
        full_keys, window_keys = model.attended_keys_split(seq)
        flops = 2.0 * tokens * (full_keys + window_keys) * heads * dims
        windowed = window_keys / (full_keys + window_keys)
        forward, backward = eff.attention_seconds(flops * (1.0 - windowed), tokens / (seq / cp)
                                                  * heads, seq / cp, job.attention_backend,
                                                  head_dim=dims / 2.0)
        if windowed:
            # a window's kernel iterates over w keys per query, not the sequence: its rate is
            # that of causal attention whose queries average as many keys, a 2w sequence
            # (FlashAttention-2 window_size; the rate per keys iterated: measured attention
            # tables, seq), with that many more of them in parallel
            span = np.minimum(2.0 * model.sliding_window, seq / cp)
            wf, wb = eff.attention_seconds(flops * windowed, tokens / span * heads, span,
                                           job.attention_backend, head_dim=dims / 2.0)
            forward, backward = forward + wf, backward + wb
        return forward, backward, flops
    # unfused: full s x s scores as batched GEMMs (Korthikanti et al. 2022, 4 B s^2 h per layer)
    flops = 2.0 * tokens * seq * heads * dims
    forward = eff.gemm_seconds(tokens, seq, heads * dims, eff.gpu.peak("bf16"))
    return forward, ATTENTION_BWD_FLOPS * forward, flops


def _elementwise_bytes(model: ModelSpec, job: TrainJob, shapes: LayerShapes,
                       tokens, tp, sp) -> np.ndarray:
    """HBM bytes moved by the memory-bound ops of one layer's forward.

    Fused kernels (``job.kernel_fusion`` "fused"), counted from the tensors of Korthikanti
    et al. 2022 (section 4.1): two norms (read + write h), two residual adds (read 2h, write
    h), dropout (read, write, 1-byte mask) when the model uses it, RoPE on q and k, the MLP
    activation (SwiGLU reads 2f writes f; GELU reads and writes f). Eager PyTorch ("eager")
    runs each op as its own pass (``costmodels.eager.chain_elements``). Norm, residual and
    dropout work is replicated across TP unless sequence parallel splits it.
    """
    h = model.hidden_size
    per_f = 3 if model.gated_mlp else 2
    activation = 0.0
    for g in shapes.gemms:
        if g.mlp_down:  # its input width is the MLP hidden f
            activation += 0.0 if g.expert else per_f * g.k  # experts: costmodels/moe.py
    if job.kernel_fusion == "eager":
        replicated, split = chain_elements(
            model.hidden_size, model.num_heads, model.num_kv_heads, model.head_dim,
            activation / per_f, rope=not model.learned_positions, gated=model.gated_mlp)
    else:
        replicated = 4 * h + 6 * h + (5 * h if uses_dropout(model) else 0)
        rope = 0 if model.learned_positions else 2 * (model.num_heads + model.num_kv_heads) * model.head_dim
        split = rope + activation
    if not job.flash_attention:
        # softmax + dropout over the a x s scores per token (Korthikanti et al. 2022, 5as term)
        split += 5 * model.num_heads * job.seq_len // 2
    replicated_share = np.where(sp > 0, 1.0 / tp, 1.0)
    elements = replicated * replicated_share + split / tp
    return element_bytes(job.precision) * tokens * elements
