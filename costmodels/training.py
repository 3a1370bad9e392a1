"""Training step time and memory for a whole batch of configurations at once.

Step time is a named sum (house style 4):
    m x (slowest stage's per-micro-batch terms) + pipeline bubble + p2p + exposed DP/ZeRO
    communication + optimizer step,
with the bubble (p - 1)/v x the mean stage time (Narayanan et al. 2021, eq. for interleaved
1F1B). Memory is a named sum per GPU for the worst stage. Everything is numpy over the
configurations in ``Candidates``: no Python loop over candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sysplan.costmodels import collectives as coll
from sysplan.costmodels.candidates import Candidates
from sysplan.costmodels.compute import LayerTime, layer_forward, linear_seconds
from sysplan.costmodels.efficiency import Efficiency
from sysplan.costmodels.layers import LayerShapes, layer_shapes
from sysplan.costmodels.memory import (
    ALLOCATOR_RESERVE_FRACTION,
    NCCL_BYTES_PER_COMMUNICATOR,
    activation_bytes_per_token,
    element_bytes,
    in_flight_microbatches,
    linear_dtype,
    state_bytes_per_param,
)
from sysplan.hardware.types import Cluster
from sysplan.models.counting import padded_vocab
from sysplan.models.spec import ModelSpec
from sysplan.workloads.training import TrainJob

TIME_TERMS = (
    "compute_gemm", "compute_attention", "compute_elementwise", "recompute", "lm_head",
    "tp_comm", "cp_comm", "ep_comm", "pp_bubble", "pp_p2p", "dp_comm", "optimizer",
)
MEMORY_TERMS = (
    "weights", "gradients", "optimizer", "activations", "logits", "comm_buffers",
    "allocator_reserve",
)


@dataclass(frozen=True)
class Priced:
    """Arrays over configurations: named time terms (s) and memory terms (bytes)."""

    time: dict[str, np.ndarray]
    memory: dict[str, np.ndarray]
    recompute_flops_per_gpu: np.ndarray  # extra forward FLOPs recomputed per GPU per step

    @property
    def step_time_s(self) -> np.ndarray:
        return sum(self.time[t] for t in TIME_TERMS)

    @property
    def memory_bytes(self) -> np.ndarray:
        return sum(self.memory[t] for t in MEMORY_TERMS)


def _layer_params(shapes: LayerShapes, h: int) -> tuple[float, float, float]:
    """(tp-split, replicated, routed-expert) parameters of one layer (+ two norms)."""
    split = sum(g.n * g.k for g in shapes.gemms if g.split == "tp")
    replicated = sum(g.n * g.k for g in shapes.gemms if g.split == "none") + 2 * h
    return float(split), float(replicated), float(shapes.params_expert)


def price_training(model: ModelSpec, job: TrainJob, cluster: Cluster, c: Candidates,
                   efficiency: Efficiency | None = None) -> Priced:
    """Price every configuration in ``c`` for one training step of ``job``.

    ``efficiency`` (default: the bundled profile of the GPU, else the uncalibrated curves) says
    how fast each kind of work runs;
    ``Efficiency.from_profile`` makes one from a measured profile.
    """
    f = {k: getattr(c, k).astype(float) for k in
         ("tp", "pp", "vpp", "dp", "cp", "ep", "etp", "sp", "zero", "mb", "recompute")}
    tp, pp, vpp, dp, cp, ep, etp, sp = (f[k] for k in ("tp", "pp", "vpp", "dp", "cp", "ep", "etp", "sp"))
    m = c.microbatches.astype(float)
    tokens = f["mb"] * job.seq_len / cp  # local tokens per micro-batch
    layers_stage = np.ceil(model.num_layers / pp)
    moe_stage = np.minimum(layers_stage, model.num_moe_layers)
    dense_stage = layers_stage - moe_stage
    kinds = [(layer_shapes(model, False), dense_stage)]
    if model.moe is not None:
        kinds.append((layer_shapes(model, True), moe_stage))
    eff = efficiency or Efficiency.for_cluster(cluster)
    # share of the stage's layers fully recomputed: all of them, or Megatron's
    # --recompute-num-layers N (block method: the first N layers of each stage)
    rc_layers = c.rc_layers.astype(float)
    full = np.where(f["recompute"] == 2,
                    np.where(rc_layers > 0, np.minimum(rc_layers, layers_stage) / layers_stage, 1.0),
                    0.0)
    selective = f["recompute"] == 1

    per_mb = {k: np.zeros_like(tp) for k in
              ("gemm", "attn", "elem", "recompute", "tp", "cp", "ep", "fwd", "bwd")}
    hw_recompute_flops = np.zeros_like(tp)
    for shapes, count in kinds:
        fwd = layer_forward(model, job, eff, shapes, tokens=tokens, tp=tp, etp=etp, ep=ep,
                            sp=sp, cp=cp, imbalance=job.moe_load_imbalance)
        comm = _layer_comm(model, job, cluster, eff, shapes, fwd, tokens, tp, cp, ep, etp)
        _accumulate(per_mb, fwd, comm, count, full, selective)
        hw_recompute_flops += count * (full * fwd.flops + selective * fwd.attention_flops)
    head = _lm_head_seconds(model, eff, tokens, tp, job.precision)

    stage_mb = sum(per_mb[k] for k in ("gemm", "attn", "elem", "recompute", "tp", "cp", "ep"))
    worst = stage_mb + head  # the last stage also runs the LM head and loss
    mean = (stage_mb * model.num_layers / (layers_stage * pp)) + head / pp
    time = {
        "compute_gemm": m * per_mb["gemm"], "compute_attention": m * per_mb["attn"],
        "compute_elementwise": m * per_mb["elem"], "recompute": m * per_mb["recompute"],
        "lm_head": m * head, "tp_comm": m * per_mb["tp"], "cp_comm": m * per_mb["cp"],
        "ep_comm": m * per_mb["ep"],
        # bubble (p - 1)/v x stage time (Narayanan et al. 2021, section 2.2.2)
        "pp_bubble": (pp - 1.0) / vpp * mean,
    }
    time["pp_p2p"] = _p2p_seconds(model, job, cluster, eff, tokens, tp, cp, dp, pp, vpp, m)
    params = _local_params(model, c, layers_stage, kinds, tp, pp, ep, etp)
    dp_s, opt_s = _data_parallel_seconds(job, cluster, eff, f, params, m, per_mb, worst,
                                         layers_stage)
    time["dp_comm"], time["optimizer"] = dp_s, opt_s
    memory = _memory(model, job, eff, f, params, kinds, tokens, layers_stage, m, full,
                     selective)
    return Priced(time, memory, hw_recompute_flops * m)


def _accumulate(per_mb, fwd: LayerTime, comm, count, full, selective) -> None:
    """Add ``count`` layers of one kind: forward + backward (2x) + recompute per micro-batch."""
    per_mb["gemm"] += count * (fwd.gemm_s + fwd.gemm_bwd_s)
    per_mb["attn"] += count * (fwd.attention_s + fwd.attention_bwd_s)
    per_mb["elem"] += count * 3.0 * fwd.elementwise_s
    per_mb["tp"] += count * comm["tp"] * (1.0 + 0.5 * full)  # recompute repeats the fwd half
    per_mb["cp"] += count * comm["cp"]
    per_mb["ep"] += count * comm["ep"] * (1.0 + 0.5 * full)
    recompute = full * fwd.total_s + selective * fwd.attention_s
    per_mb["recompute"] += count * recompute
    per_mb["bwd"] += count * (fwd.gemm_bwd_s + fwd.attention_bwd_s + 2.0 * fwd.elementwise_s)
    per_mb["fwd"] += count * fwd.total_s


def _layer_comm(model, job, cluster, eff, shapes, fwd: LayerTime, tokens, tp, cp, ep, etp):
    """Exposed communication seconds of one layer per micro-batch (forward + backward)."""
    act_bytes = tokens * model.hidden_size * element_bytes(job.precision)
    # 2 all-reduces forward + 2 backward per layer (or AG + RS with SP, same volume):
    # Korthikanti et al. 2022, section 4.2.2 / Narayanan et al. 2021, section 3.3
    tp_one = coll.all_reduce_time(cluster, act_bytes, tp, 1, eff)
    tp_total = 4.0 * np.where(tp > 1, tp_one, 0.0)
    if job.tp_comm_overlap:
        # chunked overlap with the layer's GEMMs (TE userbuffers / AsyncTP): one chunk of
        # the communication stays exposed, the rest hides behind GEMM time (3 x fwd GEMMs)
        hidden = np.minimum(tp_total * (tp - 1.0) / tp, 3.0 * fwd.gemm_s)
        tp_total = tp_total - hidden
    if job.context_parallel_comm == "a2a":
        cp_total = _ulysses_seconds(model, job, cluster, eff, shapes, tokens, tp, cp)
    else:
        # ring attention: c - 1 KV blocks of 2 b (s/c) g d_h bytes/t sent forward, twice
        # that backward, each hidden behind one attention tile (training-formulas 4.8)
        kv_bytes = tokens * shapes.kv_bytes_dims * element_bytes(job.precision) / tp
        ring = coll.all_gather_time(cluster, kv_bytes * cp, cp, tp, eff)
        cp_total = (np.maximum(0.0, ring - fwd.attention_s)
                    + np.maximum(0.0, 2 * ring - 2.5 * fwd.attention_s))
    cp_total = np.where(cp > 1, cp_total, 0.0)
    ep_total = np.zeros_like(tp)
    if any(g.expert for g in shapes.gemms):
        # dispatch + combine all-to-all forward and backward, top_k copies of each token
        # (training-formulas 4.9), slowest rank carries the load imbalance
        a2a_bytes = (tokens * model.moe.top_k * model.hidden_size * element_bytes(job.precision)
                     * job.moe_load_imbalance)
        ep_total = 4.0 * np.where(ep > 1, coll.all_to_all_time(cluster, a2a_bytes, ep, etp, eff), 0.0)
    return {"tp": tp_total, "cp": cp_total, "ep": ep_total}


def _ulysses_seconds(model, job, cluster, eff, shapes, tokens, tp, cp) -> np.ndarray:
    """All-to-all CP (DeepSpeed-Ulysses, Jacobs et al. 2023, section 3.1): Q, K, V and the
    attention output are re-split between sequence and heads, forward and again backward;
    each all-to-all moves (c-1)/c of the local tensor and is not overlapped."""
    heads = model.num_heads
    features = heads * shapes.attn_qk_dim + shapes.kv_bytes_dims + heads * shapes.attn_v_dim
    one_way = coll.all_to_all_time(cluster, tokens * features * element_bytes(job.precision) / tp,
                                   cp, tp, eff)
    return 2.0 * one_way


def _lm_head_seconds(model, eff, tokens, tp, precision: str = "bf16") -> np.ndarray:
    """LM head GEMMs (fwd, dgrad, wgrad) and the fp32 cross-entropy over the padded vocab."""
    vocab = padded_vocab(model, tp)
    # logits = 2 b s h V FLOPs (Narayanan 2021): a [tokens, h] x [h, V / t] GEMM
    forward, backward = linear_seconds(eff, tokens, vocab / tp, model.hidden_size,
                                       eff.gpu.peak(linear_dtype(precision, head=True)))
    # softmax + loss + its gradient touch the fp32 logits about three times (read/write)
    loss_bytes = 3.0 * 2.0 * 4.0 * tokens * vocab / tp
    return forward + backward + loss_bytes / eff.memory_bytes_per_s


def _p2p_seconds(model, job, cluster, eff, tokens, tp, cp, dp, pp, vpp, m) -> np.ndarray:
    """Pipeline sends on the critical path: 2 (m v + p - 1) sends of b s h / t bytes.

    Scatter/gather splits each send over the TP ranks (Narayanan et al. 2021, section 4.1);
    stages are tp x cp x dp ranks apart (Megatron rank order tp-cp-dp-pp).
    """
    send = coll.p2p_time(cluster, tokens * model.hidden_size * element_bytes(job.precision) / tp,
                         tp * cp * dp, eff)
    return np.where(pp > 1, 2.0 * (m * vpp + pp - 1.0) * send, 0.0)


@dataclass(frozen=True)
class LocalParams:
    """Parameters one GPU of the worst stage holds (before ZeRO sharding)."""

    dense: np.ndarray  # sharded over the DP x CP group by ZeRO
    expert: np.ndarray  # sharded over the expert-DP group
    largest_layer: np.ndarray  # one layer's parameters (ZeRO-3 gathers this at a time)

    @property
    def total(self) -> np.ndarray:
        return self.dense + self.expert


def _local_params(model, c, layers_stage, kinds, tp, pp, ep, etp) -> LocalParams:
    """Parameters of the worst stage on one GPU: its layers / TP (experts / EP x ETP) plus
    the embedding and LM head, each / TP (both on one stage when pp = 1)."""
    h = model.hidden_size
    vocab = padded_vocab(model, tp)
    dense = np.zeros_like(tp)
    expert = np.zeros_like(tp)
    largest = np.zeros_like(tp)
    for shapes, count in kinds:
        split, replicated, routed = _layer_params(shapes, h)
        layer_dense = split / tp + replicated
        dense += count * layer_dense
        expert += count * routed / (ep * etp)
        largest = np.maximum(largest, np.where(count > 0, layer_dense + routed / (ep * etp), 0.0))
    embedding = vocab * h / tp + (model.max_seq_len * h if model.learned_positions else 0.0)
    head = np.where(model.tied_embeddings, 0.0, vocab * h / tp)
    # first stage: embedding; last stage: head (+ final norm); pp = 1 holds both
    ends = np.where(pp > 1, np.maximum(embedding, head + h), embedding + head + h)
    return LocalParams(dense + ends, expert, largest)


def _data_parallel_seconds(job, cluster, eff, f, params: LocalParams, m, per_mb, worst,
                           layers_stage):
    """Exposed DP/ZeRO communication and the optimizer step.

    Gradients are reduced over the DP x CP group (CP ranks hold the same weights); ZeRO-1/2
    reduce-scatter gradients and all-gather updated 16-bit parameters, ZeRO-3 also gathers
    parameters in forward and backward of every micro-batch (ZeRO paper, Rajbhandari et
    al. 2020, section 7: 2 Psi vs 3 Psi). Overlap: gradient reduction hides behind the last
    micro-batch's backward, the parameter gather behind the next step's first forward.
    """
    tp, dp, cp, zero = f["tp"], f["dp"], f["cp"], f["zero"]
    weight_bytes, grad_bytes, _ = state_bytes_per_param(job.precision)
    group, stride = dp * cp, tp
    expert_group = np.maximum(1.0, dp * cp * tp / (f["ep"] * f["etp"]))

    def reduce(nbytes, size, all_reduce):
        fn = coll.all_reduce_time if all_reduce else coll.reduce_scatter_time
        return np.where(size > 1, fn(cluster, nbytes, size, stride, eff), 0.0)

    sharded = zero >= 1
    grads = np.where(sharded, reduce(params.dense * grad_bytes, group, False),
                     reduce(params.dense * grad_bytes, group, True))
    grads += np.where(sharded, reduce(params.expert * grad_bytes, expert_group, False),
                      reduce(params.expert * grad_bytes, expert_group, True))
    gather = np.where(sharded, reduce(params.dense * weight_bytes, group, False)
                      + reduce(params.expert * weight_bytes, expert_group, False), 0.0)
    bwd_mb, fwd_mb = per_mb["bwd"], per_mb["fwd"]
    overlap = eff.calibration.overlap  # share of the compute window that hides traffic
    window_bwd = overlap * bwd_mb if job.overlap_grad_reduce else 0.0
    window_fwd = overlap * fwd_mb if job.overlap_param_gather else 0.0
    exposed = np.maximum(0.0, grads - window_bwd) + np.maximum(0.0, gather - window_fwd)
    # ZeRO-3 / FSDP: per micro-batch all-gather (fwd), all-gather (bwd) and reduce-scatter,
    # prefetched behind compute; the first layer's gather is never hidden
    zero3 = m * (2.0 * gather + grads)
    compute = overlap * m * worst
    exposed3 = np.maximum(0.0, zero3 - compute) + zero3 / np.maximum(m, 1.0) / layers_stage
    # ZeRO-2: the accumulated gradient exists only as a shard, so every micro-batch
    # reduce-scatters its gradients (ZeRO paper, Rajbhandari et al. 2020, section 5.2;
    # DeepSpeed reduces each micro-step, FSDP2 each backward), hidden behind the step's
    # compute like ZeRO-3's; the parameter all-gather stays once per step
    exposed2 = np.maximum(0.0, m * grads - compute) + np.maximum(0.0, gather - window_fwd)
    exposed = np.where(zero >= 3, exposed3, np.where(zero == 2, exposed2, exposed))
    # Adam: read fp32 master, m, v, gradient; write master, m, v and the 16-bit weight
    # (30 bytes per parameter, memory-bound; ZeRO shards it over DP)
    opt_params = np.where(sharded, params.dense / group + params.expert / expert_group,
                          params.total)
    optimizer = 30.0 * opt_params / eff.memory_bytes_per_s
    return exposed, optimizer


def _memory(model, job, eff, f, params: LocalParams, kinds, tokens, layers_stage, m, full,
            selective):
    """Per-GPU bytes of the worst stage (the first, which holds the most micro-batches)."""
    tp, pp, vpp, dp, cp, zero, sp, etp = (f[k] for k in ("tp", "pp", "vpp", "dp", "cp", "zero", "sp", "etp"))
    w_b, g_b, o_b = state_bytes_per_param(job.precision)
    group = dp * cp
    expert_group = np.maximum(1.0, dp * cp * tp / (f["ep"] * etp))
    sharded = params.dense / group + params.expert / expert_group
    weights = np.where(zero >= 3, w_b * (sharded + 2.0 * params.largest_layer), w_b * params.total)
    gradients = np.where(zero >= 2, g_b * (sharded + params.largest_layer), g_b * params.total)
    optimizer = np.where(zero >= 1, o_b * sharded, o_b * params.total)

    per_layer = np.zeros_like(tp)
    for shapes, count in kinds:  # the heavier layer kind prices the stage (conservative)
        per_token = activation_bytes_per_token(model, job, shapes, tp, sp, etp, selective)
        per_layer = np.maximum(per_layer, np.where(count > 0, per_token, 0.0))
    layer_bytes = per_layer * tokens
    # full recompute keeps only each layer's input (2 b s h, / t with SP) plus one layer's
    # activations while it is recomputed (Korthikanti et al. 2022, Table 2)
    input_bytes = (element_bytes(job.precision) * model.hidden_size * tokens
                   / np.where(sp > 0, tp, 1.0))
    stored_per_mb = layers_stage * (full * input_bytes + (1.0 - full) * layer_bytes)
    in_flight = in_flight_microbatches(pp, vpp, m)
    activations = stored_per_mb * in_flight + np.where(full > 0, layer_bytes, 0.0)
    # last-stage logits: fp32 logits of the padded vocab (Megatron cross-entropy,
    # training-formulas 4.3: 4 s b h (1 + V/h)) for the one micro-batch in flight there
    vocab = padded_vocab(model, tp)
    logits = 4.0 * tokens * (model.hidden_size + vocab / tp)
    # pp > 1: the last stage holds one micro-batch plus the logits; report the worse stage
    logits = np.where(pp > 1, np.maximum(0.0, stored_per_mb + logits - activations), logits)
    groups = sum((x > 1).astype(float) for x in (tp, cp, dp, pp, f["ep"]))
    # NCCL keeps a buffer pool per communicator; gloo (CPU processes) allocates per call
    per_group = 0.0 if eff.gpu.gpu_class == "cpu" else NCCL_BYTES_PER_COMMUNICATOR
    comm_buffers = groups * per_group
    reserve_fraction = eff.calibration.allocator_reserve
    if reserve_fraction is None:
        reserve_fraction = ALLOCATOR_RESERVE_FRACTION
    reserve = reserve_fraction * (activations + logits)
    return {"weights": weights, "gradients": gradients, "optimizer": optimizer,
            "activations": activations, "logits": logits, "comm_buffers": comm_buffers,
            "allocator_reserve": reserve}
