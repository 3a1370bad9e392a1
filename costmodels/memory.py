"""Per-GPU memory of a pipeline stage as a named sum, vectorised over configurations."""

from __future__ import annotations

import numpy as np

from sysplan.costmodels.layers import LayerShapes, uses_dropout
from sysplan.models.spec import ModelSpec
from sysplan.workloads.training import TrainJob

#: NCCL keeps NCCL_BUFFSIZE (4 MiB default) per channel and direction for each communicator
#: (NCCL docs, "Environment Variables: NCCL_BUFFSIZE"); we assume 16 channels.
NCCL_BYTES_PER_COMMUNICATOR = 2 * 16 * 4 * 2**20
#: Caching-allocator fragmentation on the dynamic (activation) memory; uncalibrated default
#: until `sysplan calibrate` fits it (PyTorch CUDA caching allocator rounds blocks up).
ALLOCATOR_RESERVE_FRACTION = 0.05


def state_bytes_per_param(job: TrainJob) -> tuple[float, float, float]:
    """(weights, gradients, optimizer) bytes per parameter for mixed-precision Adam.

    bf16: 16-bit weights, fp32 main gradients (Megatron's default with bf16:
    accumulate_allreduce_grads_in_fp32), fp32 master + 2 moments = 12 ("6 + 12/d", Megatron
    docs dist_optimizer.md); ``job.grad_reduce_in_fp32`` False keeps the gradient buffer in bf16
    (Megatron --grad-reduce-in-bf16, DDPConfig.grad_reduce_in_fp32=False: the buffer takes
    the parameter dtype, megatron/core/distributed/param_and_grad_buffer.py). fp16: 16-bit
    gradients and a 16-byte optimizer state ("4 + 16/d", same source). FP8 training keeps
    bf16 weights and states.
    """
    if job.precision == "fp16":
        return 2.0, 2.0, 16.0
    if job.precision == "fp32":  # fp32 weights and gradients, Adam m and v (ZeRO paper, 3.1)
        return 4.0, 4.0, 8.0
    return 2.0, 4.0 if job.grad_reduce_in_fp32 else 2.0, 12.0


def element_bytes(precision: str) -> float:
    """Bytes of one activation element: 4 in fp32 training, else 2 (bf16/fp16 activations;
    FP8 recipes keep 16-bit activations between layers, Micikevicius et al. 2022, section 4)."""
    return 4.0 if precision == "fp32" else 2.0


def linear_dtype(precision: str, head: bool = False) -> str:
    """The peak (``GPU.peak`` key) the linear layers run at; the LM head stays in 16 bits
    under FP8 (Transformer Engine keeps the output layer in bf16)."""
    if head and precision == "fp8":
        return "bf16"
    return {"fp8": "fp8", "fp32": "fp32"}.get(precision, "bf16")


def activation_bytes_per_token(model: ModelSpec, job: TrainJob, shapes: LayerShapes,
                               tp, sp, etp, recompute_selective) -> np.ndarray:
    """Bytes one layer keeps per local token for backward (no recompute).

    Korthikanti et al. 2022, Table 2 and section 4.1, generalised: per token the two norm
    inputs (2 x 2h), the QKV and MLP inputs (2 x 2h) and the dropout masks (2 x h) are
    replicated across TP unless sequence parallel splits them; Q, K, V (GQA: K and V are
    g x d_h wide), the attention output, the MLP hidden (SwiGLU keeps gate and up outputs
    and their product: 6f; GELU 4f) are split by TP. Fused attention keeps the fp32
    log-sum-exp (4a bytes) instead of the 5 a s score-sized tensors, which selective
    recompute also drops (Korthikanti et al. 2022, section 4.2).

    FP8 through Transformer Engine (``job.fp8_saved_inputs`` "fp8") keeps each linear's
    quantized input, 1 byte an element, in place of the 16-bit one (TE Linear,
    LayerNormLinear and GroupedLinear save ``inputmat``/``ln_out`` after quantizing; MXFP8
    adds a 1-byte scale per 32, left out): see ``_fp8_input_bytes``.
    """
    h = model.hidden_size
    # with selective recompute, Megatron's --recompute-modules drop what they rerun
    # (megatron/core/transformer: CheckpointWithoutOutput around each module)
    modules = set(job.recompute_modules) if recompute_selective else set()
    fp8 = job.precision == "fp8" and job.fp8_saved_inputs == "fp8"
    moe_layer = any(g.expert for g in shapes.gemms)
    # the norm inputs (the residual stream, 2 x 2h) and dropout masks
    replicated = 4.0 * h + (2.0 * h if uses_dropout(model) else 0.0)
    if fp8:
        replicated += _fp8_input_bytes(model, h, moe_layer, "layernorm" in modules)
    elif "layernorm" not in modules:
        replicated += 4.0 * h  # the two norm outputs (the QKV and MLP inputs)
    # Q (a d_qk), K and V (GQA: g d_h each; MLA: a (d_qk + d_v)), attention output O (a d_v)
    qkv_out = 2.0 * (model.num_heads * (shapes.attn_qk_dim + shapes.attn_v_dim)
                     + shapes.kv_bytes_dims)
    if "mla_up_proj" in modules and model.mla is not None:
        # Q, K and V come back from the kept latents (DeepSeek-V3 report eq. 1-7)
        qkv_out -= 2.0 * (model.num_heads * shapes.attn_qk_dim + shapes.kv_bytes_dims)
    if fp8:
        # the attention core keeps O in 16 bits for its backward and the output projection
        # its own FP8 copy (TE FusedAttention saves out; Linear saves the quantized input)
        qkv_out += model.num_heads * shapes.attn_v_dim
    scores = 4.0 * model.num_heads if job.flash_attention else 5.0 * model.num_heads * job.seq_len
    if "core_attn" in modules:
        scores = 4.0 * model.num_heads
    mlp = 0.0
    expert = 0.0
    for g in shapes.gemms:
        if g.mlp_down:
            # the up GEMM's output (gated: gate and up, 2 x 2f) for the activation's backward,
            # and the activation's output f as the down GEMM's input: 2 bytes, 1 in FP8
            up_out = (4.0 if model.gated_mlp else 2.0) * g.k
            act_out = (1.0 if fp8 else 2.0) * g.k
            if g.expert:
                if "moe_act" in modules and not fp8:
                    act_out = 0.0  # rerun; in FP8 the down GEMM's quantized copy stays
                if (model.moe.activation_clamp is not None and not job.moe_fused_experts
                        and "moe_act" not in modules):
                    # the clamped halves' concatenation (2f, 16-bit) the fused activation
                    # keeps beside the fc1 output the clamps keep (costmodels/moe.py
                    # CLAMP_ELEMENTS); a moe_act recompute keeps only its input
                    up_out += 4.0 * g.k
                # routed rows: top_k copies of the expert input (2h; 1 byte in FP8) and
                # hidden (/ ETP) per token (Megatron #1784); the MoE input is sequence-split
                # over TP and ETP gathers its group's rows, so a GPU keeps etp / tp (SP)
                routed_in = (1.0 if fp8 else 2.0) * h * etp
                expert += model.moe.top_k * job.moe_routed_imbalance * (up_out + act_out
                                                                         + routed_in)
            elif not (g.name == "mlp_down" and "mlp" in modules):
                mlp += up_out + act_out  # the MLP input is counted in `replicated`
    shared = np.where(sp > 0, replicated / tp, replicated)
    # the counts above are in 16-bit bytes; fp32 training keeps 4-byte elements
    scale = element_bytes(job.precision) / 2.0
    return (shared + (qkv_out + scores + mlp) / tp + expert / np.where(sp > 0, tp, 1.0)) * scale


def _fp8_input_bytes(model: ModelSpec, h: int, moe_layer: bool, layernorm_rerun: bool) -> float:
    """Bytes per token the attention and MLP inputs (the two norm outputs) take when the
    linears keep FP8 copies (Transformer Engine): the fused LayerNormLinear keeps its FP8
    norm output (h); MLA's two down projections each quantize their own copy (2h); an MoE
    layer's router GEMM keeps the 16-bit norm output (2h; megatron/core/transformer/moe/
    moe_utils.py RouterGatingLinearFunction saves inp), its expert inputs are counted per
    routed row, its shared experts keep an FP8 copy (h); a dense MLP's fused LayerNormLinear
    keeps h. Megatron's layernorm recompute drops only the 16-bit outputs of unfused norms:
    the FP8 copies the linears made stay."""
    attention = 2.0 * h if model.mla is not None else h
    if not moe_layer:
        return attention + h
    router = 0.0 if layernorm_rerun else 2.0 * h
    shared = h if model.moe.num_shared_experts else 0.0
    return attention + router + shared


def op_checkpoint_bytes_per_token(model: ModelSpec, shapes: LayerShapes, tp, sp,
                                  precision: str) -> tuple[np.ndarray, float]:
    """(bytes one layer keeps per local token, share of its dense GEMM FLOPs recomputed)
    under torchtitan's per-op selective checkpointing.

    torchtitan ``distributed/activation_checkpoint.py`` (``_apply_op_sac``, v0.3.0): inside
    each layer's checkpoint the outputs of matmuls, SDPA and TP reduce-scatters are saved,
    "except every second mm"; everything else is recomputed in backward. Llama's matmuls run
    wq, wk, wv, wo, w1, w3, w2 (``models/llama3/model.py``), so wq, wv, w1 and w2 keep their
    outputs and wk, wo and w3 are recomputed; the layer input is kept as the checkpoint's
    argument. Column-parallel outputs are split by TP, row-parallel ones (wo, w2) hold every
    token's partial sum; SDPA keeps its output and the fp32 log-sum-exp (4 bytes per head).
    """
    h, a = model.hidden_size, model.num_heads
    matmuls = []  # (output features per token, input features, split by TP) in call order
    for g in shapes.gemms:
        if g.expert or g.name == "router":
            continue
        if g.name == "qkv":  # wq, wk, wv
            q = a * shapes.attn_qk_dim
            kv = (g.n - q) / 2
            matmuls += [(q, g.k, True), (kv, g.k, True), (kv, g.k, True)]
        elif g.name.endswith("_up") and model.gated_mlp:  # w1, w3
            matmuls += [(g.n / 2, g.k, True)] * 2
        else:
            row = g.name == "attn_out" or g.mlp_down
            matmuls.append((g.n, g.k, g.split == "tp" and not row))
    saved = sum(n / tp if split else n + 0.0 * tp for n, _, split in matmuls[0::2])
    flops = [n * k for n, k, _ in matmuls]
    recomputed = sum(flops[1::2]) / max(sum(flops), 1.0)
    sp_split = np.where(sp > 0, tp, 1.0)
    elements = (h / sp_split + saved + a * shapes.attn_v_dim / tp
                + np.where((sp > 0) & (tp > 1), 2.0 * h / tp, 0.0))
    scale = element_bytes(precision)
    return elements * scale + 4.0 * a / tp, recomputed


def in_flight_microbatches(pp, vpp, m) -> np.ndarray:
    """Micro-batches whose activations the first stage holds at its peak.

    1F1B: p (Narayanan et al. 2021, section 2.2.1); interleaved: p (1 + (p - 1)/(p v))
    (Korthikanti et al. 2022, section 4.2.3); with m < p only m are ever in flight.
    """
    full = pp * (1.0 + (pp - 1.0) / (pp * vpp))
    full = np.where(vpp > 1, full, pp)
    return np.minimum(full, np.where(vpp > 1, m * (1.0 + (pp - 1.0) / (pp * vpp)), m))
