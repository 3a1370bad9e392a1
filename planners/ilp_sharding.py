"""Model-state sharding per state (AMSP, Chen et al. 2024) as an ILP, and by enumeration
(27 combinations: enumeration is exact and enough; the ILP is the formulation, tested equal)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from sysplan.core.errors import NoPlanFits
from sysplan.core.types import Frozen
from sysplan.costmodels import collectives as coll
from sysplan.costmodels.candidates import Candidates
from sysplan.costmodels.efficiency import Efficiency
from sysplan.costmodels.memory import state_bytes_per_param
from sysplan.costmodels.training import (
    bucketed_seconds,
    expert_data_parallel,
    exposed_sharding_seconds,
    price_training,
    stage_view,
)
from sysplan.costmodels.types import ParallelConfig
from sysplan.hardware.types import Cluster
from sysplan.models.spec import ModelSpec
from sysplan.planners.ilp import (
    SHARD_GROUPS,
    STATES,
    IlpResult,
    solve_ilp,
)
from sysplan.workloads.training import TrainJob

# --------------------------------------------------------------------------- 1. AMSP sharding


@dataclass(frozen=True)
class ShardingCosts:
    """The sharding problem of one layout: step time of each (P, G, O) combination and the
    per-GPU bytes of each state under each shard group."""

    step_time_s: dict[tuple[str, str, str], float]  # all 27 (params, grads, optimizer) groups
    state_bytes: dict[str, dict[str, float]]  # state -> group -> bytes per GPU
    other_bytes: float  # activations, logits, buffers, reserve: independent of sharding
    budget_bytes: float


class ShardingPlan(Frozen):
    """Shard group per model state, its step time and memory, and how it was found."""

    groups: dict[str, str]  # state -> "none" | "node" | "full"
    step_time_s: float
    memory_bytes: float
    ilp: IlpResult | None = None  # None when found by enumeration


def _allowed(combo: tuple[str, ...], nested: bool) -> bool:
    """AMSP's ordering: a state is sharded no wider than the one derived from it, P <= G <= O
    (f_P | f_G | f_OS | D; planners.md section 3.3): an optimizer shard must find its whole
    reduced gradient, and a gradient shard the parameters that produce it, on the same rank."""
    rank = [SHARD_GROUPS.index(g) for g in combo]
    return not nested or rank[0] <= rank[1] <= rank[2]


def _plan_for(costs: ShardingCosts, combo: tuple[str, str, str]) -> ShardingPlan:
    memory = costs.other_bytes + sum(costs.state_bytes[s][g] for s, g in zip(STATES, combo))
    return ShardingPlan(groups=dict(zip(STATES, combo)), step_time_s=costs.step_time_s[combo],
                        memory_bytes=memory)


def enumerate_sharding(costs: ShardingCosts, *, nested: bool = True) -> ShardingPlan:
    """Exact: the fastest of the 27 combinations that fits (ties: less sharding first)."""
    fits = [(costs.step_time_s[c], [SHARD_GROUPS.index(g) for g in c], c)
            for c in itertools.product(SHARD_GROUPS, repeat=3)
            if _allowed(c, nested) and _plan_for(costs, c).memory_bytes <= costs.budget_bytes]
    if not fits:
        raise NoPlanFits(f"no sharding of parameters, gradients and optimizer states fits in "
                         f"{costs.budget_bytes / 2**30:.1f} GiB per GPU")
    return _plan_for(costs, min(fits)[2])


def plan_sharding_ilp(costs: ShardingCosts, *, nested: bool = True, time_limit_s: float = 10.0,
                      warm_start: tuple[str, str, str] | None = None) -> ShardingPlan:
    """The same choice as an ILP: one-hot x[state][group]; memory is linear in x; step time
    is not separable over states (overlap windows, gathers between the P and O layouts), so
    z[combination] carries it, linked to x by its marginals (one-hot marginals force z
    one-hot). ``warm_start`` is a feasible (P, G, O), e.g. the best ZeRO stage."""
    import pulp

    problem = pulp.LpProblem("amsp_sharding", pulp.LpMinimize)
    x = {(s, g): problem.add_variable(f"x_{s}_{g}", cat="Binary")
         for s in STATES for g in SHARD_GROUPS}
    combos = list(itertools.product(SHARD_GROUPS, repeat=3))
    z = {c: problem.add_variable("z_" + "_".join(c), cat="Binary") for c in combos}
    problem += pulp.lpSum(costs.step_time_s[c] * z[c] for c in combos)
    for i, state in enumerate(STATES):
        for g in SHARD_GROUPS:
            problem += x[state, g] == pulp.lpSum(z[c] for c in combos if c[i] == g)
    problem += pulp.lpSum(z.values()) == 1
    rank = {s: pulp.lpSum(SHARD_GROUPS.index(g) * x[s, g] for g in SHARD_GROUPS) for s in STATES}
    if nested:
        problem += rank["params"] <= rank["grads"]
        problem += rank["grads"] <= rank["optimizer"]
    # in units of the budget: byte-sized coefficients (1e10) next to 0/1 variables left CBC
    # stalling short of its gap, or calling a feasible instance infeasible
    scale = costs.budget_bytes if np.isfinite(costs.budget_bytes) else 1.0
    problem += costs.other_bytes / scale + pulp.lpSum(
        costs.state_bytes[s][g] / scale * x[s, g] for s in STATES for g in SHARD_GROUPS
    ) <= costs.budget_bytes / scale
    if warm_start is not None:
        for (s, g), var in x.items():
            var.setInitialValue(float(warm_start[STATES.index(s)] == g))
        for c, var in z.items():
            var.setInitialValue(float(c == tuple(warm_start)))
    # a 0.1 % relative gap ends the search: CBC could otherwise stall at a 0.03 % gap on
    # these 27 combinations until the time limit (seen in CI and under load)
    result = solve_ilp(problem, time_limit_s, warm_start is not None, "model-state sharding",
                    gap_rel=1e-3)
    combo = tuple(max(SHARD_GROUPS, key=lambda g, s=s: x[s, g].value() or 0.0) for s in STATES)
    return _plan_for(costs, combo).model_copy(update={"ilp": result})


def _groups(cluster: Cluster, config: ParallelConfig):
    """(size per shard group) for dense and expert states: ZeRO's DP x CP group (stride tp)
    and the expert-DP group (``expert_data_parallel``), each cut to the ranks one node holds
    for "node"; and the expert-DP group's stride."""
    dense = config.dp * config.cp
    size, stride = expert_data_parallel(config.dp, config.cp, config.tp, config.ep, config.etp)
    expert = int(size)
    per_node = max(1, cluster.gpus_per_node // config.tp)
    expert_per_node = max(1, cluster.gpus_per_node // stride)
    return ({"none": 1, "node": math.gcd(dense, per_node), "full": dense},
            {"none": 1, "node": math.gcd(expert, expert_per_node), "full": expert}, stride)


def _state_bytes(job: TrainJob, dense, expert, largest, f_dense, f_expert) -> np.ndarray:
    """(params, grads, optimizer) bytes per GPU for shard factors; a sharded state keeps one
    gathered layer (params: two, prefetch) as costmodels.training._memory does for ZeRO."""
    w_b, g_b, o_b = state_bytes_per_param(job)
    sharded = [dense / f_dense[i] + expert / f_expert[i] for i in range(3)]
    return np.array([
        w_b * (sharded[0] + np.where(f_dense[0] > 1, 2.0 * largest, 0.0)),
        g_b * (sharded[1] + np.where(f_dense[1] > 1, largest, 0.0)),
        o_b * sharded[2],
    ])


def sharding_costs(model: ModelSpec, job: TrainJob, cluster: Cluster, config: ParallelConfig,
                   budget_bytes: float, efficiency: Efficiency | None = None) -> ShardingCosts:
    """Price the 27 (P, G, O) shard groups of ``config``'s layout with the training cost model.

    Compute, TP/CP/EP/PP and activations come from ``price_training`` (they do not depend on
    sharding). Per step, with f_P <= f_G <= f_O shard factors of the DP group D (collectives
    priced on the group's size and stride): P sharded -> all-gather of the weights forward
    and backward every micro-batch; G sharded -> reduce-scatter every micro-batch (the
    accumulated gradient only exists as a shard); once per step the f_G shard is
    reduce-scattered to the f_O shard and all-reduced over the D / f_O replicas; after the
    optimizer step the f_O shards are all-gathered to the f_P layout. ZeRO 0, 1 and 3 reduce
    to price_training's dp_comm; ZeRO-2 here pays its per-micro-batch reduce-scatter, which
    price_training charges once per step. Overlap windows as price_training's.
    """
    eff = efficiency or Efficiency.for_cluster(cluster)
    c = Candidates.from_configs([config.model_copy(update={"zero": 0})])
    priced = price_training(model, job, cluster, c, eff)
    _, _, slowest, stage_params = stage_view(model, job, cluster, c, eff)
    params = stage_params.stage(np.argmax(stage_params.total, axis=1))
    layers = math.ceil(model.num_layers / config.pp)
    dense_groups, expert_groups, expert_stride = _groups(cluster, config)
    combos = list(itertools.product(SHARD_GROUPS, repeat=3))
    fd = np.array([[dense_groups[g] for g in combo] for combo in combos], dtype=float).T
    fe = np.array([[expert_groups[g] for g in combo] for combo in combos], dtype=float).T
    m = float(config.num_microbatches)
    compute_terms = ("compute_gemm", "compute_attention", "compute_elementwise", "recompute",
                     "lm_head", "tp_comm", "cp_comm", "ep_comm")
    worst_mb = sum(priced.time[t] for t in compute_terms)[0] / m
    fwd_mb, bwd_mb = float(slowest["fwd"][0]), float(slowest["bwd"][0])
    per_mb, step_grad, step_gather = np.zeros(27), np.zeros(27), np.zeros(27)
    for nbytes, group, factors, stride in (
            (params.dense[0], dense_groups["full"], fd, config.tp),
            (params.expert[0], expert_groups["full"], fe, expert_stride)):
        a, b, g = _sharding_comm(cluster, eff, job, nbytes, group, stride, factors,
                                 layers)
        per_mb, step_grad, step_gather = per_mb + a, step_grad + b, step_gather + g
    exposed = exposed_sharding_seconds(  # the overlap price_training applies
        per_mb, step_grad, step_gather, m=m, layers=layers, compute_mb=worst_mb,
        fwd_mb=fwd_mb, bwd_mb=bwd_mb, overlap=eff.calibration.overlap, job=job,
        per_mb_gathers=fd[0] > 1)
    total = float(params.total[0])
    optimizer = priced.time["optimizer"][0] * (params.dense[0] / fd[2]
                                               + params.expert[0] / fe[2]) / total
    base = float(priced.step_time_s[0] - priced.time["dp_comm"][0] - priced.time["optimizer"][0])
    step = base + exposed + optimizer
    state = {}
    for i, s in enumerate(STATES):
        for g in SHARD_GROUPS:
            one = _state_bytes(job, params.dense[0], params.expert[0],
                               params.largest_layer[0], [dense_groups[g]] * 3,
                               [expert_groups[g]] * 3)
            state.setdefault(s, {})[g] = float(one[i])
    other = sum(float(priced.memory[t][0]) for t in
                ("activations", "logits", "comm_buffers", "allocator_reserve"))
    return ShardingCosts({combo: float(step[i]) for i, combo in enumerate(combos)}, state,
                         other, budget_bytes)


def _layout_arrays(config: ParallelConfig, n: int) -> dict[str, np.ndarray]:
    return {k: np.full(n, float(v)) for k, v in (
        ("tp", config.tp), ("etp", config.etp), ("ep", config.ep),
        ("sp", int(config.sequence_parallel)), ("cp", config.cp))}


def _sharding_comm(cluster, eff, job, params, group, stride, factors, layers):
    """(per micro-batch, once-per-step gradient, post-step gather) seconds over combinations,
    one collective per layer's bucket as ``price_training`` issues them."""
    w_b, g_b, _ = state_bytes_per_param(job)
    f_p, f_g, f_o = factors

    def run(fn, nbytes, size, at):
        return np.where((size > 1) & (nbytes > 0), bucketed_seconds(
            fn, cluster, nbytes, np.maximum(size, 1.0), at, eff, layers), 0.0)

    per_mb = (2.0 * run(coll.all_gather_time, w_b * params, f_p, stride)
              + run(coll.reduce_scatter_time, g_b * params, f_g, stride))
    step_grad = (run(coll.reduce_scatter_time, g_b * params / f_g, f_o / f_g, stride * f_g)
                 + run(coll.all_reduce_time, g_b * params / f_o, group / f_o, stride * f_o))
    step_gather = run(coll.all_gather_time, w_b * params / f_p, f_o / f_p, stride * f_p)
    return per_mb, step_grad, step_gather


