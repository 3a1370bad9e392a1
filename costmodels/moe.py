"""The routed-expert block of an MoE layer priced as Megatron-Core runs it (dropless,
``--moe-grouped-gemm``), per micro-batch on one GPU, with the token dispatcher that is faster
for the layout: all-to-all, all-gather or flex (DeepEP-style deduplicating kernels)
(``--moe-token-dispatcher-type``).

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
from sysplan.workloads.training import MOE_DISPATCHERS, TrainJob

#: Megatron ``--moe-token-dispatcher-type`` values, in the order of ``MoECost.dispatcher`` codes
DISPATCHERS = MOE_DISPATCHERS

#: Rows of one CTA tile of a grouped GEMM: each expert's token count is padded to it
#: (CUTLASS grouped GEMM schedules whole 128-row tiles per problem; cuBLAS/TE the same).
GROUPED_GEMM_TILE_M = 128

#: Kernels the MoE block launches per micro-batch besides its expert GEMMs, forward (the
#: backward runs as many): router GEMM, score function, top-k, the auxiliary-loss terms, the
#: tokens-per-expert histogram and its copy to the host, permute (index map + gather),
#: dispatch, chunk sort, activation, probability weighting, chunk unsort, combine and
#: unpermute (Megatron-Core MoELayer with MoEAlltoAllTokenDispatcher, counted from its forward)
MOE_BLOCK_KERNELS = 20
#: Of those, the ones Transformer Engine's scoped CUDA graphs replay (Megatron --cuda-graph-scope
#: moe_router moe_preprocess): router GEMM, score function, top-k, the auxiliary-loss terms,
#: the histogram and the permute, all but the copy to the host
MOE_SCOPED_KERNELS = 10
#: Shared-expert MLP: up GEMM, activation, down GEMM, the add to the routed output
SHARED_EXPERT_KERNELS = 4
#: HBM bytes per routed element of Megatron-Core's eager expert-bias add, forward + backward
#: (``moe_layer_cost``), and its kernels: per local expert a multiply and an add forward, plus
#: the concatenation and the cast; backward the two casts and per local expert the two
#: products and their two reductions (core_v0.15.0 moe/experts.py TEGroupedMLP._apply_bias)
EXPERT_BIAS_BYTES = 64.0
EXPERT_BIAS_KERNELS = ((2.0, 2.0), (4.0, 2.0))  # (per local expert, fixed): forward, backward
#: The experts' activation clamp (GPT-OSS swiglu_limit): Megatron-Core clamps the gate and the
#: linear halves of fc1's output and concatenates them before its fused activation
#: (core_v0.15.0-0.17.0 fusions/fused_bias_geglu.py weighted_bias_quick_geglu_impl), each an
#: eager pass. Elements per routed row, in units of the expert width f: forward the two
#: clamps (read f, write f each) and the cat (read 2f, write 2f); backward the two clamps'
#: gradients (read the gradient and the saved input, write: 3f each) and the chunk's
#: gradient concatenated back (read 2f, write 2f)
CLAMP_ELEMENTS = (8.0, 10.0)  # forward, backward
CLAMP_KERNELS = (3.0, 3.0)  # forward: two clamps and the cat; backward: two and the cat
#: Expert kernels of Transformer Engine's fused MXFP8 grouped MLP (``TrainJob.moe_fused_experts``)
#: per micro-batch, whatever the number of local experts: forward the grouped quantisation of
#: the dispatched tokens, the fc1 grouped GEMM with the gated activation, router weighting and
#: quantisation in its epilogue, and the fc2 grouped GEMM; backward the output-gradient
#: quantisation, fc2 dgrad with the activation's gradient in its epilogue, fc2 wgrad, fc1
#: dgrad, fc1 wgrad and the bias gradients' reduction (Transformer Engine ops/fused/
#: grouped_mlp.py: the CuTe DSL grouped GEMM + activation, dactivation and wgrad kernels)
FUSED_EXPERT_KERNELS = (3.0, 6.0)
#: Seconds each kernel of the MoE block costs beyond its work: the block is many small kernels
#: (router, permutation, one cuBLAS GEMM per local expert in TE's GroupedLinear
#: ``general_grouped_gemm``) whose launch, ramp and tail and the host's issue gaps add up
#: (Megatron-Core MoE report, arXiv 2603.07685, section 1: the compute wall's "many kernel
#: launches, host-boundedness"). A calibration, not a datasheet figure: fitted (least MAPE) on
#: the even-numbered rows of benchmarks/data/training_moe.csv, ``MOE_KERNEL_FITTED_ON``
#: (``benchmarks/training_accuracy.py --fit-moe-kernel``), and judged on the odd-numbered ones
#: and training_moe_gb300.csv's. Fitted on one system alone it moved (at an earlier 26 us fit):
#: 17 us on the GB300 rows, 45 us on the H100 rows (host CPUs and software stacks differ).
MOE_KERNEL_S = 30e-6
#: Share of ``MOE_KERNEL_S`` a kernel still costs when a CUDA graph replays it: the graph
#: removes the host's issue and launch calls, not the kernel's launch latency, ramp and tail
#: on the GPU nor the waves of one small GEMM per expert (NVIDIA CUDA C++ Programming Guide,
#: "CUDA Graphs": a graph cuts the CPU launch cost; the work submitted is the same). Fitted
#: with ``MOE_KERNEL_S`` on the same rows, whose Megatron-Bridge runs state their graphs
#: (benchmarks/training_accuracy.py ``BRIDGE_RUNTIME``): 1.0, the graphed runs among them
#: showed no saving in the MoE block (the held-out 25.09 B200 Qwen3-30B-A3B run did, 2x).
MOE_GRAPHED_SHARE = 1.0
#: The rows ``MOE_KERNEL_S`` and ``MOE_GRAPHED_SHARE`` were fitted on (marked in-sample)
MOE_KERNEL_FITTED_ON = tuple(f"T{i}" for i in range(300, 336, 2))


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
    dispatcher: np.ndarray  # index into DISPATCHERS of the cheapest dispatcher per layout
    kernels: np.ndarray  # kernels the block launches per micro-batch, forward
    kernels_bwd: np.ndarray  # and backward
    launch_s: np.ndarray  # their fixed cost (MOE_KERNEL_S each, a share if graphed), forward
    launch_bwd_s: np.ndarray  # and backward
    activation_s: np.ndarray | float = 0.0  # the experts' activation pass, forward

    def dispatcher_name(self, i: int = 0) -> str:
        """The dispatcher of configuration ``i``."""
        return DISPATCHERS[int(self.dispatcher[i])]

    def add_to(self, t: LayerTime) -> LayerTime:
        """The layer's time with this block added."""
        return replace(t, gemm_s=t.gemm_s + self.expert_gemm_s,
                       gemm_bwd_s=t.gemm_bwd_s + self.expert_gemm_bwd_s,
                       elementwise_s=t.elementwise_s + self.elementwise_s,
                       flops=t.flops + self.expert_flops,
                       overhead_s=t.overhead_s + self.launch_s,
                       overhead_bwd_s=t.overhead_bwd_s + self.launch_bwd_s)


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
    return costs.kinds["moe"].moe.dispatcher_name()


def _log_comb(n, k):
    from scipy.special import gammaln  # lazily: keeps scipy off the CLI's start-up path

    return gammaln(n + 1.0) - gammaln(k + 1.0) - gammaln(n - k + 1.0)


def distinct_units(units, spec) -> np.ndarray:
    """Expected number of distinct units (GPUs or NVLink domains, each holding an equal share
    of the experts) a token's top-k experts land on under uniform routing: units x (1 -
    C(E - E/u, k) / C(E, k)) (hypergeometric: the chance a unit holds none of the k). With
    group-limited routing (DeepSeek-V3 report section 2.1.2: at most topk_group of n_group
    groups per token; DeepSeek-V2 section 2.1.3) a token reaches only its chosen groups: when
    units hold whole groups the same formula counts groups, else the k experts fall among
    the chosen groups' units."""
    units = np.maximum(np.asarray(units, dtype=float), 1.0)
    experts, k = float(spec.num_experts), float(spec.top_k)
    groups = float(spec.route_groups)
    chosen = float(spec.route_groups_per_token or spec.route_groups)
    if chosen < groups:
        whole = units <= groups  # each unit holds groups / units whole groups
        per = np.where(whole, groups / units, 1.0)
        by_groups = units * (1.0 - np.exp(_log_comb(groups - per, chosen)
                                          - _log_comb(groups, chosen)))
        eligible = units * chosen / groups  # units of the chosen groups
        pool = experts * chosen / groups
        share = pool / np.maximum(eligible, 1.0)
        by_experts = eligible * (1.0 - np.exp(_log_comb(pool - share, k) - _log_comb(pool, k)))
        return np.where(whole, by_groups, by_experts)
    return units * (1.0 - np.exp(_log_comb(experts - experts / units, k)
                                 - _log_comb(experts, k)))


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
    fused = job.moe_fused_experts
    if fused:
        # the fused grouped MLP applies the activation, the router weighting, the bias and
        # fc2's input quantisation in fc1's epilogue: only the dispatched tokens are cast
        # (Transformer Engine ops/fused/grouped_mlp.py)
        activation, casts = 0.0, 3.0 * routed * h
    elementwise = router + permute + activation + casts
    if moe.activation_clamp is not None and not fused:
        # the eager clamps and cat before the fused activation (CLAMP_ELEMENTS): their forward
        # joins the activation pass (recomputed with it), the whole under the layer's 3x
        # convention
        clamp_f, clamp_b = (act_b * routed * f * n for n in CLAMP_ELEMENTS)
        activation = activation + clamp_f
        elementwise = elementwise + (clamp_f + clamp_b) / 3.0
    if moe.expert_bias and not fused:
        # the down GEMM's bias, scaled by the router probability, is added eagerly outside
        # it (Megatron-Core TEGroupedMLP._apply_bias, core_v0.15.0 moe/experts.py: per expert
        # t + b * p in fp32, cat, cast to bf16): 28 bytes per routed element forward, 36 in
        # backward (the cast's and add's gradients, then grad x p and grad x b reduced for
        # the bias and the probability), as 64 / 3 forward under the layer's 3x convention
        elementwise = elementwise + EXPERT_BIAS_BYTES / 3.0 * routed * h
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
    token_bytes = tokens * h * act_b * imbalance
    # flex sends one copy per distinct destination GPU (DeepEP deduplicates a token's experts
    # on one GPU)
    flex_bytes = token_bytes * distinct_units(ep, model.moe)
    flex_s = 4.0 * _flex_seconds(model, cluster, eff, token_bytes, flex_bytes, ep, etp)
    # the cheapest of the allowed ones per layout (EP 1: none is used; all-to-all is the
    # default); the flex dispatcher runs without expert tensor parallelism only, and "auto"
    # proposes it (an extra library, DeepEP) only where the EP group leaves its NVLink domain,
    # the inter-node case its kernels are built for; pinned, it is priced anywhere
    flex_ok = etp <= 1
    if job.moe_dispatcher == "auto":
        flex_ok = flex_ok & (_ep_domains(cluster, ep, etp)[1] > 1)
    options = np.stack([dispatch, gather_s + 3.0 * gather_pass / eff.memory_bytes_per_s,
                        np.where(flex_ok, flex_s, np.inf)])
    if job.moe_dispatcher != "auto":  # a pinned one (all-to-all where flex cannot run)
        keep = np.array(DISPATCHERS) == job.moe_dispatcher
        options = np.where(keep[:, None], options, np.inf)
    dispatcher = np.where(ep > 1, np.argmin(options, axis=0), 0)
    dispatch = np.choose(dispatcher, [dispatch, gather_s, flex_s])
    elementwise = elementwise + np.where(dispatcher == 1, gather_pass, 0.0)
    sent = np.choose(dispatcher, [a2a_bytes, whole, flex_bytes])
    # kept for backward: fp32 router scores and the routing map (5E bytes per token), and the
    # fp32 router probability of each routed copy: Megatron-Core (>= 0.13, TEGroupedMLP)
    # weights the expert activation by it (weighted_bias_swiglu_impl) instead of the expert
    # output at unpermute, so no h-wide copy of the expert outputs is kept
    extra = tokens * (5.0 * moe.num_experts + 4.0 * moe.top_k * imbalance)
    kernels, kernels_bwd = block_kernels(model, job, local + 0.0 * tp)
    # on a CPU the profile's per-op overhead already charges every op (compute.layer_forward);
    # a CUDA graph replays its kernels without the host launching each: they cost
    # MOE_GRAPHED_SHARE of the eager figure
    per_kernel = 0.0 if eff.gpu.gpu_class == "cpu" else MOE_KERNEL_S
    launch, launch_bwd = (_graphed_kernels(job.cuda_graphs, n) * per_kernel
                          for n in (kernels, kernels_bwd))
    return MoECost(per_expert, local + 0.0 * tp, up_f + down_f, up_b + down_b, flops,
                   elementwise, elementwise / eff.memory_bytes_per_s, dispatch, sent, extra,
                   imbalance, dispatcher, kernels, kernels_bwd, launch, launch_bwd,
                   activation / eff.memory_bytes_per_s)


def _graphed_kernels(cuda_graphs: str, kernels):
    """Kernels of the MoE block counted at full ``MOE_KERNEL_S`` cost, those a CUDA graph
    replays at ``MOE_GRAPHED_SHARE`` of it: none captured eagerly, ``MOE_SCOPED_KERNELS``
    with Transformer Engine's scoped graphs, all with whole-layer or whole-iteration ones."""
    captured = {"none": 0.0, "scoped": MOE_SCOPED_KERNELS, "full": kernels}[cuda_graphs]
    return kernels - (1.0 - MOE_GRAPHED_SHARE) * captured


def block_kernels(model: ModelSpec, job: TrainJob, local) -> tuple[np.ndarray, np.ndarray]:
    """(forward, backward) kernels the MoE block launches per micro-batch with ``local``
    experts per GPU: ``MOE_BLOCK_KERNELS`` each way (+ the shared experts'), and per local
    expert one GEMM for each of its two linears forward, data and weight gradient backward (TE
    GroupedLinear runs one cuBLAS GEMM per expert, ``general_grouped_gemm``), each fp8 GEMM
    input quantised by its own kernel (TE per-expert ``split_quantize``), a clamped
    activation's eager clamps (``CLAMP_KERNELS``) and biased experts' eager bias add
    (``EXPERT_BIAS_KERNELS``)."""
    fixed = MOE_BLOCK_KERNELS + (SHARED_EXPERT_KERNELS if model.moe.num_shared_experts else 0)
    if job.moe_fused_experts:  # one grouped kernel per linear (FUSED_EXPERT_KERNELS)
        forward, backward = FUSED_EXPERT_KERNELS
        return fixed + forward + 0.0 * local, fixed + backward + 0.0 * local
    fp8 = 1.0 if job.precision == "fp8" else 0.0
    forward = fixed + local * 2.0 * (1.0 + fp8)  # fc1, fc2 (+ their input quantisations)
    backward = fixed + local * 2.0 * (2.0 + fp8)  # dgrad + wgrad each (+ output-grad casts)
    if model.moe.activation_clamp is not None:  # the eager clamps (CLAMP_KERNELS)
        forward, backward = forward + CLAMP_KERNELS[0], backward + CLAMP_KERNELS[1]
    if model.moe.expert_bias:  # the eager bias add (EXPERT_BIAS_KERNELS)
        (per_f, fixed_f), (per_b, fixed_b) = EXPERT_BIAS_KERNELS
        forward, backward = forward + per_f * local + fixed_f, backward + per_b * local + fixed_b
    return forward, backward


def _ep_domains(cluster: Cluster, ep, etp):
    """(EP ranks per innermost fabric domain, domains the EP group spans); the group's ranks
    are ETP ranks apart (Megatron expert rank order etp-ep-edp)."""
    inner = np.clip(np.floor(cluster.tiers[0].domain_size / etp), 1.0, ep)
    return inner, np.maximum(ep / inner, 1.0)


def _flex_seconds(model, cluster: Cluster, eff: Efficiency, token_bytes, flex_bytes, ep, etp):
    """One flex (DeepEP-style) dispatch or combine: a token crosses the scale-out fabric once
    per distinct remote NVLink domain holding its experts and is forwarded inside that domain
    over NVLink to each expert's GPU (DeepEP README, normal kernels: "NVLink and RDMA
    forwarding"; DeepSeek-V3 report section 3.2.2: IB to the node once, then NVLink); the two
    hops are pipelined, so the slower tier sets the time. Each hop is priced as an all-to-all
    of the deduplicated bytes over its ranks (``flex_bytes``: one copy per distinct GPU)."""
    inner, domains = _ep_domains(cluster, ep, etp)
    # scale-out: distinct domains per token (each rank sends to its peer GPU in each domain)
    outer = coll.all_to_all_time(cluster, token_bytes * distinct_units(domains, model.moe), ep,
                                 etp, eff)
    outer = np.where(domains > 1, outer, 0.0)
    # NVLink: one copy per distinct GPU hit, own and forwarded traffic alike
    nvlink = coll.all_to_all_time(cluster, flex_bytes, inner, etp, eff)
    return np.where(ep > 1, np.maximum(outer, nvlink), 0.0)
