"""The routed-expert block of an MoE layer priced as Megatron-Core runs it (dropless,
``--moe-grouped-gemm``), per micro-batch on one GPU, with the token dispatcher that is faster
for the layout: all-to-all or all-gather (``--moe-token-dispatcher-type``).

Router (GEMM h -> E, softmax/sigmoid and top-k), permute, dispatch all-to-all over the EP
group (or all-gather of the group's tokens), the local experts as grouped GEMMs, combine
all-to-all (or reduce-scatter), unpermute. Shared experts and
the router GEMM are ordinary TP-split/replicated GEMMs of the layer (``costmodels/layers.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from sysplan.costmodels import collectives as coll
from sysplan.costmodels.compute import LayerTime
from sysplan.costmodels.efficiency import Efficiency
from sysplan.costmodels.memory import element_bytes, linear_dtype
from sysplan.hardware.types import Cluster
from sysplan.models.spec import ModelSpec
from sysplan.workloads.training import TrainJob

#: Rows of one CTA tile of a grouped GEMM: each expert's token count is padded to it
#: (CUTLASS grouped GEMM schedules whole 128-row tiles per problem; cuBLAS/TE the same).
GROUPED_GEMM_TILE_M = 128


@dataclass(frozen=True)
class MoECost:
    """Seconds and bytes of the routed-expert block (arrays over configurations)."""

    tokens_per_expert: np.ndarray  # routed rows per local expert on the slowest rank
    local_experts: np.ndarray  # experts per GPU (E / EP)
    expert_gemm_s: np.ndarray  # forward grouped GEMMs
    expert_gemm_bwd_s: np.ndarray  # dgrad + wgrad grouped GEMMs
    expert_flops: np.ndarray  # forward FLOPs executed (unpadded)
    elementwise_bytes: np.ndarray  # forward HBM bytes: router, permute, unpermute, activation
    elementwise_s: np.ndarray
    dispatch_s: np.ndarray  # exposed dispatch + combine all-to-all, forward + backward
    dispatch_bytes: np.ndarray  # all-to-all: what one rank sends; all-gather: the gathered
    extra_activation_bytes: np.ndarray  # router scores and combine inputs kept for backward
    imbalance: float
    allgather: np.ndarray  # True where the all-gather dispatcher is cheaper than all-to-all

    def add_to(self, t: LayerTime) -> LayerTime:
        """The layer's time with this block added."""
        return replace(t, gemm_s=t.gemm_s + self.expert_gemm_s,
                       gemm_bwd_s=t.gemm_bwd_s + self.expert_gemm_bwd_s,
                       elementwise_s=t.elementwise_s + self.elementwise_s,
                       flops=t.flops + self.expert_flops)


def grouped_gemm_seconds(eff: Efficiency, rows_per_expert, experts, n, k, peak: float):
    """(forward, backward) seconds of ``experts`` same-shape GEMMs of ``rows_per_expert`` rows
    run as one grouped GEMM: each problem padded to whole row tiles, the group priced at the
    shape of its concatenation from the GEMM table (Megatron ``--moe-grouped-gemm``, TE
    GroupedLinear); backward is dgrad (rows, k, n) and wgrad (n, k, rows) per expert."""
    padded = np.ceil(rows_per_expert / GROUPED_GEMM_TILE_M) * GROUPED_GEMM_TILE_M
    rows = experts * np.maximum(padded, GROUPED_GEMM_TILE_M)
    forward = eff.gemm_seconds(rows, n, k, peak)
    # wgrad: experts x (n x k) outputs, reduction over each expert's rows
    backward = eff.gemm_seconds(rows, k, n, peak) + eff.gemm_seconds(experts * n, k, padded, peak)
    return forward, backward


def token_dispatcher(model: ModelSpec, job: TrainJob, cluster: Cluster, config) -> str:
    """Megatron's ``--moe-token-dispatcher-type`` the plan ``config`` (a ``ParallelConfig``)
    was priced with on ``cluster``'s default efficiency: "allgather" or "alltoall"."""
    from sysplan.costmodels.candidates import Candidates
    from sysplan.costmodels.layer_cost import model_costs

    costs = model_costs(model, job, cluster, Candidates.from_configs([config]),
                        Efficiency.for_cluster(cluster))
    return "allgather" if bool(costs.kinds["moe"].moe.allgather[0]) else "alltoall"


def moe_layer_cost(model: ModelSpec, job: TrainJob, cluster: Cluster, eff: Efficiency,
                   lay) -> MoECost:
    """Price the routed experts of one MoE layer on layout ``lay`` (a ``layer_cost.Layout``)."""
    moe, h = model.moe, model.hidden_size
    tp, ep, etp = lay.tp, lay.ep, lay.etp
    imbalance = job.moe_routed_imbalance
    act_b = element_bytes(job.precision)
    # the MoE block's input is sequence-split over TP (Megatron requires SP with EP and TP)
    tokens = lay.tokens / np.where(lay.sp > 0, tp, 1.0)
    # a rank receives top_k copies of its own token count under uniform routing (training-
    # formulas 4.9), the busiest rank `imbalance` times that; ETP gathers its group's tokens
    # and splits the expert width (Megatron moe/README "expert tensor parallelism")
    routed = tokens * moe.top_k * imbalance * etp
    local = moe.num_experts / ep
    per_expert = routed / local
    f = moe.expert_ffn_hidden / etp
    up = 2 * f if model.gated_mlp else f  # SwiGLU gate + up fused (Shazeer 2020)
    peak = eff.gpu.peak(linear_dtype(job.precision))
    up_f, up_b = grouped_gemm_seconds(eff, per_expert, local, up, h, peak)
    down_f, down_b = grouped_gemm_seconds(eff, per_expert, local, h, f, peak)
    flops = 2.0 * routed * h * (up + f)  # 2MNK over both GEMMs
    # memory-bound passes, forward (x2 more in backward, as the layer's element-wise work):
    # router scores in fp32 (write logits, softmax/sigmoid read+write, top-k read: 4 x 4E);
    # permute reads each token once and writes top_k copies, unpermute reads the top_k
    # expert outputs, weights them and writes one token (Megatron moe_utils permute /
    # unpermute); the activation reads 2f and writes f per routed row (gated; GELU: f, f)
    router = 16.0 * moe.num_experts * tokens
    permute = 2.0 * act_b * h * (tokens + tokens * moe.top_k * imbalance)
    activation = act_b * routed * (3.0 * f if model.gated_mlp else 2.0 * f)
    casts = 3.0 * routed * (h + f) if job.precision == "fp8" else 0.0  # bf16 in, fp8 out
    elementwise = router + permute + activation + casts
    # dispatch and combine all-to-all, forward and again backward (training-formulas 4.9):
    # each rank sends top_k copies of its tokens, the busiest rank carries the imbalance;
    # the EP group is ETP ranks apart (Megatron expert rank order etp-ep-edp)
    a2a_bytes = tokens * moe.top_k * h * act_b * imbalance
    dispatch = 4.0 * np.where(ep > 1, coll.all_to_all_time(cluster, a2a_bytes, ep, etp, eff), 0.0)
    # ETP: the dispatched rows are all-gathered over the ETP group and reduce-scattered back
    # (Megatron alltoall dispatcher), forward and backward
    gathered = a2a_bytes * etp
    dispatch += np.where(etp > 1, 2.0 * (coll.all_gather_time(cluster, gathered, etp, 1, eff)
                                         + coll.reduce_scatter_time(cluster, gathered, etp, 1,
                                                                    eff)), 0.0)
    # the all-gather dispatcher (Megatron --moe-token-dispatcher-type allgather,
    # MoEAllGatherTokenDispatcher): every token of the EP x ETP group is all-gathered and the
    # expert outputs reduce-scattered back, forward and backward; its volume does not grow
    # with top_k, so it wins at small EP and large top_k; permuting reads the gathered tokens
    group = ep * etp
    whole = tokens * h * act_b * group
    gather_s = np.where(group > 1, 2.0 * (coll.all_gather_time(cluster, whole, group, 1, eff)
                                          + coll.reduce_scatter_time(cluster, whole, group, 1,
                                                                     eff)), 0.0)
    gather_pass = 2.0 * act_b * h * tokens * (group - 1.0)  # permute + unpermute, extra reads
    allgather = (ep > 1) & (gather_s + 3.0 * gather_pass / eff.memory_bytes_per_s < dispatch)
    dispatch = np.where(allgather, gather_s, dispatch)
    elementwise = elementwise + np.where(allgather, gather_pass, 0.0)
    # kept for backward: fp32 router scores and the routing map (5E bytes per token), and the
    # top_k expert outputs the unpermute weights by the router probabilities
    extra = tokens * (5.0 * moe.num_experts + moe.top_k * imbalance * h * act_b)
    return MoECost(per_expert, local + 0.0 * tp, up_f + down_f, up_b + down_b, flops,
                   elementwise, elementwise / eff.memory_bytes_per_s, dispatch,
                   np.where(allgather, whole, a2a_bytes), extra, imbalance, allgather)
