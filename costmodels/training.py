"""Training step time and memory for a whole batch of configurations at once.

Step time is a named sum (house style 4):
    m x (slowest stage's per-micro-batch terms) + pipeline bubble + p2p + exposed DP/ZeRO
    communication + optimizer step,
with the bubble the other stages' time / v (sum_i t_i + (m - 1) max_i t_i for 1F1B; Narayanan
et al. 2021, section 2.2.2 for interleaved 1F1B), every stage of the balanced split priced by
``layer_cost.model_costs``. Memory is a named sum per GPU for the fullest stage. Everything is
numpy over the configurations in ``Candidates``: no Python loop over candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sysplan.costmodels import collectives as coll
from sysplan.costmodels.candidates import Candidates
from sysplan.costmodels.efficiency import Efficiency
from sysplan.costmodels.layer_cost import TERMS, ModelCosts, balanced_stage_layers, model_costs
from sysplan.costmodels.memory import (
    ALLOCATOR_RESERVE_FRACTION,
    NCCL_BYTES_PER_COMMUNICATOR,
    element_bytes,
    in_flight_microbatches,
    state_bytes_per_param,
)
from sysplan.hardware.types import Cluster
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


def price_training(model: ModelSpec, job: TrainJob, cluster: Cluster, c: Candidates,
                   efficiency: Efficiency | None = None) -> Priced:
    """Price every configuration in ``c`` for one training step of ``job``.

    ``efficiency`` (default: the bundled profile of the GPU, else the uncalibrated curves) says
    how fast each kind of work runs;
    ``Efficiency.from_profile`` makes one from a measured profile. Layers are priced by
    ``layer_cost.model_costs`` (the per-layer function the stage DP and ILP read) on the
    balanced split ``estimate.build_estimate`` reports.
    """
    f = {k: getattr(c, k).astype(float) for k in
         ("tp", "pp", "vpp", "dp", "cp", "ep", "etp", "sp", "zero", "mb", "recompute")}
    tp, pp, vpp, dp, cp = (f[k] for k in ("tp", "pp", "vpp", "dp", "cp"))
    m = c.microbatches.astype(float)
    eff = efficiency or Efficiency.for_cluster(cluster)
    tokens = f["mb"] * job.seq_len / cp
    costs, stages, at, params = stage_view(model, job, cluster, c, eff)
    time = {
        "compute_gemm": m * at["gemm"], "compute_attention": m * at["attn"],
        "compute_elementwise": m * at["elem"], "recompute": m * at["recompute"],
        "lm_head": m * at["lm_head"], "tp_comm": m * at["tp"], "cp_comm": m * at["cp"],
        "ep_comm": m * at["ep"],
        # heterogeneous stages: sum_i t_i + (m - 1) max_i t_i for 1F1B (training-formulas
        # 4.5; Alpa, Aceso), the non-slowest stages' share / v when interleaved (Narayanan
        # et al. 2021, section 2.2.2: bubble (p - 1)/v x t for even stages)
        "pp_bubble": (stages["total"].sum(axis=1) - at["total"]) / vpp,
    }
    time["pp_p2p"] = _p2p_seconds(model, job, cluster, eff, tokens, tp, cp, dp, pp, vpp, m)
    layers_stage = np.ceil(model.num_layers / pp)
    heaviest = params.stage(np.argmax(params.total, axis=1))  # its reduction finishes last
    dp_s, opt_s = _data_parallel_seconds(job, cluster, eff, f, heaviest, m, at, at["total"],
                                         layers_stage)
    time["dp_comm"], time["optimizer"] = dp_s, opt_s
    memory = _memory(model, job, eff, f, params, costs, c, m)
    return Priced(time, memory, at["recompute_flops"] * m)


def stage_view(model: ModelSpec, job: TrainJob, cluster: Cluster, c: Candidates,
               eff: Efficiency):
    """(per-layer costs, per-stage terms [configs, stages], the slowest stage's terms
    [configs], per-stage parameters) of the balanced split: what price_training sums."""
    f = {k: getattr(c, k).astype(float) for k in ("recompute",)}
    costs = model_costs(model, job, cluster, c, eff)
    stages = _stage_terms(model, costs, c, f)
    worst = np.argmax(stages["total"], axis=1)  # the slowest stage sets m x its time
    rows = np.arange(len(c))
    at = {k: v[rows, worst] for k, v in stages.items()}
    return costs, stages, at, _local_params(model, costs, c)


def _stage_terms(model: ModelSpec, costs: ModelCosts, c: Candidates, f) -> dict[str, np.ndarray]:
    """Named seconds per micro-batch of every stage of the balanced split, [configs, stages]
    (columns past a configuration's pp are zero): its layers in its recompute mode, the
    embedding on the first stage, LM head and MTP on the last."""
    n, width = len(c), int(c.pp.max())
    keys = (*TERMS, "lm_head", "fwd", "bwd", "recompute_flops")
    out = {k: np.zeros((n, width)) for k in keys}
    selective = (f["recompute"] == 1).astype(float)
    for pp in np.unique(c.pp):
        rows = np.flatnonzero(c.pp == pp)
        split = balanced_stage_layers(model.num_layers, int(pp))
        for s, counts in enumerate(costs.stage_counts(split)):
            layers = float(split[s])
            # full recompute of all of the stage's layers, or Megatron's
            # --recompute-num-layers N (block method: the first N layers of each stage)
            rc = c.rc_layers[rows].astype(float)
            full = np.zeros(n)
            full[rows] = np.where(f["recompute"][rows] == 2,
                                  np.where(rc > 0, np.minimum(rc, layers) / layers, 1.0), 0.0)
            for kind, count in counts.items():
                if not count:
                    continue
                layer = costs.kinds[kind]
                terms = layer.terms(full, selective)
                for k in (*TERMS, "fwd", "bwd"):
                    out[k][rows, s] += count * terms[k][rows]
                out["recompute_flops"][rows, s] += count * layer.recompute_flops(
                    full, selective)[rows]
            ends = ([costs.embedding] if s == 0 else []) + (
                [costs.head, costs.mtp] if s == int(pp) - 1 else [])
            for end in ends:
                for k, v in end.terms.items():
                    out[k][rows, s] += v[rows]
    out["total"] = sum(out[k] for k in (*TERMS, "lm_head"))
    return out


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
    """Parameters one GPU of each stage holds (before ZeRO sharding), [configs, stages]."""

    dense: np.ndarray  # sharded over the DP x CP group by ZeRO
    expert: np.ndarray  # sharded over the expert-DP group
    largest_layer: np.ndarray  # [configs] one layer's parameters (ZeRO-3 gathers one at a time)

    @property
    def total(self) -> np.ndarray:
        return self.dense + self.expert

    def stage(self, index: np.ndarray) -> LocalParams:
        """The [configs] parameters of stage ``index`` of every configuration."""
        rows = np.arange(len(index))
        return LocalParams(self.dense[rows, index], self.expert[rows, index], self.largest_layer)


def _local_params(model, costs: ModelCosts, c: Candidates) -> LocalParams:
    """Parameters of every stage on one GPU: its layers / TP (experts / EP x ETP), the
    embedding on the first stage, LM head, final norm and MTP modules on the last."""
    n, width = len(c), int(c.pp.max())
    dense, expert = np.zeros((n, width)), np.zeros((n, width))
    for pp in np.unique(c.pp):
        rows = np.flatnonzero(c.pp == pp)
        split = balanced_stage_layers(model.num_layers, int(pp))
        for s, counts in enumerate(costs.stage_counts(split)):
            for kind, count in counts.items():
                dense[rows, s] += count * costs.kinds[kind].dense_params[rows]
                expert[rows, s] += count * costs.kinds[kind].expert_params[rows]
            ends = ([costs.embedding] if s == 0 else []) + (
                [costs.head, costs.mtp] if s == int(pp) - 1 else [])
            for end in ends:
                dense[rows, s] += end.dense_params[rows]
                expert[rows, s] += end.expert_params[rows]
    largest = np.max([k.dense_params + k.expert_params for k in costs.kinds.values()], axis=0)
    return LocalParams(dense, expert, largest)


def exposed_sharding_seconds(per_mb, step_grad, step_gather, *, m, layers, compute_mb, fwd_mb,
                             bwd_mb, overlap, job: TrainJob, per_mb_gathers):
    """Exposed seconds of data-parallel traffic per step, with the compute it slows.

    ``per_mb``: traffic every micro-batch repeats (ZeRO-3 gathers and reduce-scatters,
    ZeRO-2 reduce-scatters), spread over the stage's ``layers``; each layer's share hides
    behind the compute of its neighbour (FSDP2 prefetches one layer ahead), except the first
    layer's gather of every micro-batch (``per_mb_gathers``), which nothing precedes.
    ``step_grad``: the once-per-step gradient reduction, in one bucket per layer: bucket k
    overlaps the backward of the layers after it, so the last bucket (the first layer's
    gradients) is exposed (PyTorch DDP, Li et al. 2020, section 3.2.3; Megatron
    --overlap-grad-reduce). ``step_gather``: the parameter all-gather after the optimizer
    (ZeRO-1/2) or at the first forward (FSDP2 + PP), overlapped with the first forward
    except its first bucket (Megatron --overlap-param-gather). Traffic that is hidden still
    slows the kernels it overlaps by ``collectives.COLLECTIVE_COMPUTE_SHARE``. ``overlap`` (calibration)
    scales the compute windows. Shared with the sharding ILP (planners/ilp_sharding.py).
    """
    first = np.maximum(layers, 1.0)
    rest = (first - 1.0) / first
    exposed_mb = per_mb * np.where(per_mb_gathers, 1.0 / first, 0.0) + np.maximum(
        0.0, per_mb * np.where(per_mb_gathers, rest, 1.0) - overlap * compute_mb)
    # a runtime that neither prefetches its gathers nor reduces in backward's hooks issues
    # them in line, between the layers' compute (the reference executor)
    inline = ~(job.overlap_grad_reduce & (job.overlap_param_gather | ~np.asarray(per_mb_gathers)))
    exposed_mb = np.where(inline, per_mb, exposed_mb)
    exposed = m * exposed_mb
    if job.overlap_grad_reduce:
        exposed = exposed + step_grad / first + np.maximum(0.0, step_grad * rest
                                                           - overlap * bwd_mb)
    else:
        exposed = exposed + step_grad
    if job.overlap_param_gather:
        exposed = exposed + step_gather / first + np.maximum(0.0, step_gather * rest
                                                             - overlap * fwd_mb)
    else:
        exposed = exposed + step_gather
    hidden = m * per_mb + step_grad + step_gather - exposed
    return exposed + coll.COLLECTIVE_COMPUTE_SHARE * np.maximum(0.0, hidden)


def bucketed_seconds(fn, cluster: Cluster, nbytes, size, stride, eff: Efficiency, layers):
    """Seconds of collective ``fn`` over ``nbytes`` issued as one call per layer's bucket,
    each paying its own latency (PyTorch DDP, Li et al. 2020, section 3.2.3: gradients are
    bucketed and each bucket is one collective). Shared with the sharding ILP."""
    buckets = np.maximum(layers, 1.0)
    return buckets * fn(cluster, nbytes / buckets, size, stride, eff)


def expert_data_parallel(dp, cp, tp, ep, etp):
    """(size, stride) of the expert-data-parallel group: the DP x CP x TP ranks of one dense
    replica hold EP x ETP expert shards, so each shard has DP x CP x TP / (EP x ETP) copies,
    EP x ETP ranks apart (Megatron parallel folding, expert rank order etp-ep-edp;
    training-formulas 4.4). Scalars or arrays."""
    stride = ep * etp
    return np.maximum(1.0, dp * cp * tp / stride), stride


def _data_parallel_seconds(job, cluster, eff, f, params: LocalParams, m, per_mb, worst,
                           layers_stage):
    """Exposed DP/ZeRO communication (``exposed_sharding_seconds``) and the optimizer step.

    Gradients are reduced over the DP x CP group (CP ranks hold the same weights); ZeRO-1/2
    reduce-scatter gradients and all-gather updated 16-bit parameters, ZeRO-3 also gathers
    parameters in forward and backward of every micro-batch (ZeRO paper, Rajbhandari et
    al. 2020, section 7: 2 Psi vs 3 Psi). ZeRO-3 under PP gathers once per step and
    reduce-scatters once, at the last micro-batch (FSDP2 + PP: no reshard after forward, no
    gradient sync before the last backward; see ``model_state_bytes``).
    """
    tp, dp, cp, zero = f["tp"], f["dp"], f["cp"], f["zero"]
    weight_bytes, grad_bytes, _ = state_bytes_per_param(job)
    group = dp * cp
    # with EP filling a node the expert-DP group crosses the scale-out fabric
    expert_group, expert_stride = expert_data_parallel(dp, cp, tp, f["ep"], f["etp"])

    def reduce(nbytes, size, stride, all_reduce=False):
        fn = coll.all_reduce_time if all_reduce else coll.reduce_scatter_time
        return np.where((size > 1) & (nbytes > 0),
                        bucketed_seconds(fn, cluster, nbytes, size, stride, eff, layers_stage),
                        0.0)

    sharded = zero >= 1
    grads = np.where(sharded, reduce(params.dense * grad_bytes, group, tp),
                     reduce(params.dense * grad_bytes, group, tp, True))
    grads += np.where(sharded, reduce(params.expert * grad_bytes, expert_group, expert_stride),
                      reduce(params.expert * grad_bytes, expert_group, expert_stride, True))
    gather = np.where(sharded, reduce(params.dense * weight_bytes, group, tp)
                      + reduce(params.expert * weight_bytes, expert_group, expert_stride), 0.0)
    once = (zero >= 3) & (f["pp"] > 1)  # FSDP2 + PP
    per_step = (zero <= 1) | once
    # ZeRO-2: the accumulated gradient exists only as a shard, so every micro-batch
    # reduce-scatters its gradients (ZeRO paper, Rajbhandari et al. 2020, section 5.2;
    # DeepSpeed reduces each micro-step, FSDP2 each backward)
    per_mb_traffic = np.where(per_step, 0.0, np.where(zero >= 3, 2.0 * gather + grads, grads))
    exposed = exposed_sharding_seconds(
        per_mb_traffic, np.where(per_step, grads, 0.0),
        np.where((zero >= 3) & ~once, 0.0, gather), m=m, layers=layers_stage,
        compute_mb=worst, fwd_mb=per_mb["fwd"], bwd_mb=per_mb["bwd"],
        overlap=eff.calibration.overlap, job=job, per_mb_gathers=(zero >= 3) & ~once)
    # Adam: read fp32 master, m, v, gradient; write master, m, v and the 16-bit weight
    # (30 bytes per parameter, memory-bound; ZeRO shards it over DP)
    opt_params = np.where(sharded, params.dense / group + params.expert / expert_group,
                          params.total)
    optimizer = 30.0 * opt_params / eff.memory_bytes_per_s
    return exposed, optimizer


def model_state_bytes(job: TrainJob, f: dict, dense, expert, largest) -> dict[str, np.ndarray]:
    """Weights, gradients and optimizer bytes per GPU of ``dense`` and ``expert`` parameters
    under ZeRO stage ``f["zero"]`` (Rajbhandari et al. 2020, section 5: P_os, P_os+g,
    P_os+g+p), dense states sharded over DP x CP, expert states over the expert-DP group
    DP x CP x TP / (EP x ETP) (Megatron parallel folding; training-formulas 4.4); a sharded
    parameter keeps two gathered layers (the current one and the prefetched one), a sharded
    gradient one. ZeRO-3 under pipeline parallelism (FSDP2 + PP, torchtitan) keeps the
    stage's parameters gathered after the first forward (torchtitan ``apply_fsdp``: "for PP,
    do not reshard after forward") and accumulates unsharded gradients in the fp32 reduce
    dtype until the last micro-batch (torch.distributed.pipelining: gradient sync only on the
    last backward), so only the optimizer stays sharded. Linear in the parameter counts."""
    w_b, g_b, o_b = state_bytes_per_param(job)
    group = f["dp"] * f["cp"]
    expert_group, _ = expert_data_parallel(f["dp"], f["cp"], f["tp"], f["ep"], f["etp"])
    sharded = dense / group + expert / expert_group
    total, zero = dense + expert, f["zero"]
    gathered = (zero >= 3) & (f["pp"] > 1)  # FSDP2 + PP: no reshard after forward
    weights = np.where(gathered, w_b * total, w_b * (sharded + 2.0 * largest))
    gradients = np.where(gathered, g_b * total, g_b * (sharded + largest))
    return {"weights": np.where(zero >= 3, weights, w_b * total),
            "gradients": np.where(zero >= 2, gradients, g_b * total),
            "optimizer": np.where(zero >= 1, o_b * sharded, o_b * total)}


def _memory(model, job, eff, f, params: LocalParams, costs: ModelCosts, c: Candidates, m):
    """Per-GPU bytes of the fullest stage of the balanced split, as a named sum.

    Stage i of 1F1B holds min(p - i, m) micro-batches (Narayanan et al. 2021, section
    2.2.1); interleaved ranks scale the first rank's count p (1 + (p - 1)/(p v)) by (p - i)/p
    (Korthikanti et al. 2022, section 4.2.3). The last stage adds one micro-batch's fp32
    logits and the MTP modules' activations.
    """
    tp, pp, vpp, dp, cp = (f[k] for k in ("tp", "pp", "vpp", "dp", "cp"))
    col = lambda x: x[:, None]
    states = model_state_bytes(job, {k: col(f[k]) for k in ("tp", "dp", "cp", "ep", "etp", "zero",
                                                             "pp")},
                               params.dense, params.expert, col(params.largest_layer))
    weights, gradients, optimizer = (states[k] for k in ("weights", "gradients", "optimizer"))

    n, width = len(c), int(c.pp.max())
    activations, logits = np.zeros((n, width)), np.zeros((n, width))
    valid = np.zeros((n, width), dtype=bool)
    first_in_flight = in_flight_microbatches(pp, vpp, m)
    for p in np.unique(c.pp):
        rows = np.flatnonzero(c.pp == p)
        split = balanced_stage_layers(model.num_layers, int(p))
        for s, counts in enumerate(costs.stage_counts(split)):
            valid[rows, s] = True
            rc = c.rc_layers[rows].astype(float)
            # Megatron --recompute-num-layers N: the first N layers of the stage recomputed
            n_full = np.where(c.recompute[rows] == 2,
                              np.where(rc > 0, np.minimum(rc, split[s]), split[s]), 0.0)
            mode = np.where(c.recompute[rows] == 1, "selective", "none")
            kept, transient = np.zeros(len(rows)), np.zeros(len(rows))
            for kind, count in counts.items():
                layer = costs.kinds[kind]
                partial = np.where(mode == "selective", layer.selective_bytes[rows],
                                   layer.activation_bytes[rows])
                share = np.minimum(n_full, count) / max(count, 1)
                kept += count * (share * layer.input_bytes[rows] + (1.0 - share) * partial)
                # full recompute holds one layer's activations while it is recomputed
                transient = np.maximum(transient, np.where(
                    (n_full > 0) & (count > 0), layer.activation_bytes[rows], 0.0))
            held = np.where(vpp[rows] > 1, first_in_flight[rows] * (p - s) / p,
                            np.minimum(p - s, m[rows]))
            if s == int(p) - 1:
                kept += costs.mtp.activation_bytes[rows]
                logits[rows, s] = costs.logits_bytes[rows]
            activations[rows, s] = held * kept + transient
    groups = sum((x > 1).astype(float) for x in (tp, cp, dp, pp, f["ep"]))
    # NCCL keeps a buffer pool per communicator; gloo (CPU processes) allocates per call
    per_group = 0.0 if eff.gpu.gpu_class == "cpu" else NCCL_BYTES_PER_COMMUNICATOR
    comm_buffers = groups * per_group
    reserve_fraction = eff.calibration.allocator_reserve
    if reserve_fraction is None:
        reserve_fraction = ALLOCATOR_RESERVE_FRACTION
    reserve = reserve_fraction * (activations + logits)
    stage_total = np.where(valid, weights + gradients + optimizer + activations + logits
                           + reserve, -np.inf)
    worst = np.argmax(stage_total, axis=1)
    rows = np.arange(n)
    return {"weights": weights[rows, worst], "gradients": gradients[rows, worst],
            "optimizer": optimizer[rows, worst], "activations": activations[rows, worst],
            "logits": logits[rows, worst], "comm_buffers": comm_buffers,
            "allocator_reserve": reserve[rows, worst]}
