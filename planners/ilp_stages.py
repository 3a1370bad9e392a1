"""Per-layer recompute and pipeline-stage boundaries under one per-rank memory budget, as one
ILP (the choices couple through each stage's in-flight activations)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from sysplan.core.errors import InputError, NoPlanFits
from sysplan.costmodels.efficiency import Efficiency
from sysplan.costmodels.types import ParallelConfig
from sysplan.hardware.types import Cluster
from sysplan.models.spec import ModelSpec
from sysplan.planners.ilp import solve_ilp
from sysplan.planners.stage_costs import layer_costs
from sysplan.planners.stages import (
    LayerProblem,
    StagePlan,
    layer_problem,
    price_assignment,
    stage_cost,
)
from sysplan.workloads.training import TrainJob

SCHEDULE = "1f1b"  # the schedule the stage ILP models (one stage per rank, vpp 1)

# ------------------------------------------------------ 2. per-layer recompute + stage boundaries


@dataclass(frozen=True)
class StageProblem:
    """The recompute and stage-boundary problem: the per-layer costs the stage DP reads
    (``stages.LayerProblem``, SI units, one row per recompute mode) split into ``stages``
    contiguous stages run 1F1B with ``microbatches`` per step, each within ``budget_bytes``.

    Priced as the DP prices (``stages.stage_cost``, ``stages.price_assignment``): a stage's
    time per micro-batch is its layers' forward + backward (+ recompute) plus the embedding /
    LM head it carries; its bytes are its layers' states + the fixed bytes + in-flight
    micro-batches (1F1B: min(p - k, m) on stage k) x kept activations + the transient of its
    largest recomputed layer (Korthikanti et al. 2022, Table 2); the pipeline time is the sum
    of the stage times plus (m - 1) x the slowest (GPipe / 1F1B, issue 7 section 1; Narayanan
    et al. 2021, section 2.2). The weight-gradient share (``per_layer.wgrad``) only enters
    zero-bubble schedules, so no 1F1B price reads it.
    """

    per_layer: LayerProblem
    stages: int
    microbatches: int
    budget_bytes: float

    def __post_init__(self) -> None:
        layers, p = self.per_layer.layers, self.stages
        if not 1 <= p <= layers:
            raise InputError(f"stages {p}: must be between 1 and the {layers} layers")
        if self.microbatches < 1:
            raise InputError(f"microbatches {self.microbatches}: must be at least 1")


def uniform_stages(problem: StageProblem) -> StagePlan | None:
    """The naive baseline: even stages (extra layers on middle stages), one recompute mode
    for every layer (the fastest that fits); None when no mode fits."""
    prob, p = problem.per_layer, problem.stages
    layers = prob.layers
    counts = [layers // p] * p
    first = (p - layers % p) // 2
    for k in range(first, first + layers % p):
        counts[k] += 1
    plans = [price_assignment(prob, counts, [mode] * layers, problem.microbatches, SCHEDULE)
             for mode in range(len(prob.modes))]
    fits = [plan for plan in plans if max(plan.stage_memory_bytes) <= problem.budget_bytes]
    return min(fits, key=lambda plan: plan.pipeline_time_s) if fits else None


def brute_force_stages(problem: StageProblem) -> StagePlan:
    """Exact by exhaustion: every split into contiguous non-empty stages x every per-layer
    mode (C(L-1, p-1) x R^L; the reference for tests and the benchmark's extrapolation), each
    stage priced by ``stages.stage_cost`` over all mode assignments at once."""
    prob, p, m = problem.per_layer, problem.stages, problem.microbatches
    layers = prob.layers
    modes = np.array(list(itertools.product(range(len(prob.modes)), repeat=layers)))
    columns = np.arange(layers)
    t, a = (prob.fwd + prob.bwd)[modes, columns], prob.act[modes, columns]
    peak = prob.transient[modes, columns]
    best = (np.inf, None, None)
    for cuts in itertools.combinations(range(1, layers), p - 1):
        starts = [0, *cuts]
        time, kept = np.add.reduceat(t, starts, axis=1), np.add.reduceat(a, starts, axis=1)
        top, state = np.maximum.reduceat(peak, starts, axis=1), np.add.reduceat(prob.state, starts)
        stage_t, memory = (np.array(x) for x in zip(*(
            stage_cost(prob, k, p, m, SCHEDULE, time[:, k], kept[:, k], state[k], top[:, k])
            for k in range(p))))  # (p, assignments)
        # 1F1B: sum of the stage times + (m - 1) x the slowest (Narayanan et al. 2021, 2.2)
        value = stage_t.sum(0) + (m - 1) * stage_t.max(0)
        value = np.where((memory <= problem.budget_bytes).all(0), value, np.inf)
        i = int(np.argmin(value))
        if value[i] < best[0]:
            best = (value[i], np.diff([*starts, layers]), modes[i])
    if best[1] is None:
        raise NoPlanFits("no stage split and recompute assignment fits the memory budget")
    return price_assignment(prob, best[1], best[2], m, SCHEDULE, exact=True,
                            note="exact: brute force over every split and per-layer mode")


def plan_stages_ilp(problem: StageProblem, *, time_limit_s: float = 10.0,
                    warm_start: StagePlan | None = None) -> StagePlan:
    """One ILP over stage boundaries and, per stage, how many layers of each kind take each
    recompute mode.

    Layers with identical rows form a kind (DeepSeek-V3: dense and MoE); inside a stage they
    are interchangeable, so counts c[k][q][j] replace per-layer choices and branch and bound
    never revisits permutations. z[k][b] = 1 when stage k starts at layer b; the layers of kind
    q in stage k are C_q(start(k + 1)) - C_q(start(k)), linear in z (C_q: kind-q layers before
    b). w[k][q][j] marks a kind-q layer in mode j with a recompute transient in stage k (its
    peak). Stage time and memory are ``stages.stage_cost`` on these linear sums. T >= each
    stage's time; objective sum of stage times + (m - 1) T (1F1B; Narayanan et al. 2021,
    section 2.2). ``warm_start`` defaults to the uniform baseline when it fits. Modes go back
    to layers heaviest first (full, selective, none) within each stage and kind (Megatron
    recomputes the first N layers of a stage).
    """
    import pulp

    prob = problem.per_layer
    kind, kinds = _kinds(prob)
    layers, p, m = prob.layers, problem.stages, problem.microbatches
    rows, q_all = range(len(prob.modes)), range(len(kinds))
    first = [int(np.argmax(kind == q)) for q in q_all]
    t, a = (prob.fwd + prob.bwd)[:, first].T, prob.act[:, first].T  # [q, j]
    state, peak_q = prob.state[first], prob.transient[:, first].T
    cum = np.concatenate([np.zeros((len(kinds), 1)),
                          np.cumsum(kind[None, :] == np.arange(len(kinds))[:, None], axis=1)],
                         axis=1)  # [q, b]: kind-q layers among the first b
    total = cum[:, -1]
    lp = pulp.LpProblem("recompute_stages", pulp.LpMinimize)
    starts = {k: range(k, layers - p + k + 1) for k in range(1, p)}
    z = {(k, b): lp.add_variable(f"z_{k}_{b}", cat="Binary") for k in starts for b in starts[k]}

    def before(q: int, k: int):  # kind-q layers before stage k
        if k in (0, p):
            return 0.0 if k == 0 else float(total[q])
        return pulp.lpSum(float(cum[q, b]) * z[k, b] for b in starts[k])

    def start(k: int):
        return k and (layers if k == p else pulp.lpSum(b * z[k, b] for b in starts[k]))

    c = {(k, q, j): lp.add_variable(f"c_{k}_{q}_{j}", lowBound=0, upBound=int(total[q]),
                                    cat="Integer")
         for k in range(p) for q in q_all for j in rows}
    w = {(k, q, j): lp.add_variable(f"w_{k}_{q}_{j}", cat="Binary")
         for k in range(p) for q in q_all for j in rows if peak_q[q, j] > 0}
    slowest = lp.add_variable("T", lowBound=0)
    # bytes in units of the budget: byte-sized coefficients (1e10) next to 0/1 variables let
    # CBC return a worse plan as optimal (the DeepSeek-V3 cut of the tests at 16 GiB)
    scale = problem.budget_bytes if np.isfinite(problem.budget_bytes) else 1.0
    peak = [lp.add_variable(f"peak_{k}", lowBound=0) for k in range(p)]  # x scale bytes
    count = [{q: before(q, k + 1) - before(q, k) for q in q_all} for k in range(p)]
    stage_t, memory = zip(*(stage_cost(
        prob, k, p, m, SCHEDULE,
        pulp.lpSum(float(t[q, j]) * c[k, q, j] for q in q_all for j in rows),
        pulp.lpSum(float(a[q, j]) * c[k, q, j] for q in q_all for j in rows),
        pulp.lpSum(float(state[q]) * count[k][q] for q in q_all), scale * peak[k])
        for k in range(p)))
    lp += pulp.lpSum(stage_t) + (m - 1) * slowest
    for k, positions in starts.items():
        lp += pulp.lpSum(z[k, b] for b in positions) == 1
    for k in range(p):
        lp += start(k + 1) - start(k) >= 1
        lp += stage_t[k] <= slowest
        for q in q_all:
            lp += pulp.lpSum(c[k, q, j] for j in rows) == count[k][q]
            for j in rows:
                if (k, q, j) in w:
                    lp += c[k, q, j] <= float(total[q]) * w[k, q, j]
                    lp += peak[k] >= float(peak_q[q, j] / scale) * w[k, q, j]
        lp += memory[k] / scale <= problem.budget_bytes / scale
    warm = warm_start or uniform_stages(problem)
    if warm is not None:
        bounds = np.cumsum([0, *warm.stage_layers])
        modes = np.array([prob.modes.index(name) for name in warm.layer_recompute])
        held = prob.transient[modes, np.arange(layers)]
        for (k, b), var in z.items():
            var.setInitialValue(float(bounds[k] == b))
        for (k, q, j), var in c.items():
            span = slice(bounds[k], bounds[k + 1])
            var.setInitialValue(float(((kind[span] == q) & (modes[span] == j)).sum()))
        for (k, q, j), var in w.items():
            span = slice(bounds[k], bounds[k + 1])
            var.setInitialValue(float(((kind[span] == q) & (modes[span] == j)).any()))
        slowest.setInitialValue(max(warm.stage_time_s))
        for k, var in enumerate(peak):
            var.setInitialValue(float(held[bounds[k]:bounds[k + 1]].max() / scale))
    result = solve_ilp(lp, time_limit_s, warm is not None, "recompute and stage boundaries")
    bounds = [0, *(round(sum(b * (z[k, b].value() or 0.0) for b in starts[k])) for k in starts),
              layers]
    modes = np.zeros(layers, dtype=int)
    for k in range(p):
        for q in q_all:
            mine = [l for l in range(bounds[k], bounds[k + 1]) if kind[l] == q]
            # rows are listed lightest first (RECOMPUTE_MODES order)
            order = [j for j in reversed(rows) for _ in range(round(c[k, q, j].value() or 0.0))]
            modes[mine] = order
    plan = price_assignment(prob, np.diff(bounds), modes, m, SCHEDULE,
                            exact=result.status == "optimal", note=f"ILP: {result.describe()}")
    assert abs(plan.pipeline_time_s - result.objective) <= 1e-6 * max(1.0, result.objective)
    return plan.model_copy(update={"ilp": result})


def _kinds(prob: LayerProblem) -> tuple[np.ndarray, list[bytes]]:
    """Kind index of every layer (layers with identical columns share one) and the kinds."""
    rows = np.column_stack([(prob.fwd + prob.bwd).T, prob.act.T, prob.transient.T, prob.state])
    keys = [row.tobytes() for row in rows]
    kinds = list(dict.fromkeys(keys))
    return np.array([kinds.index(key) for key in keys]), kinds


def stage_problem(model: ModelSpec, job: TrainJob, cluster: Cluster, config: ParallelConfig,
                  budget_bytes: float, efficiency: Efficiency | None = None) -> StageProblem:
    """The recompute/stage problem of ``config``'s layout priced by the training cost model.

    The per-layer problem the stage DP reads (``stage_costs.layer_costs``: per layer kind,
    dense or MoE, per mode, seconds and kept bytes per micro-batch from
    ``layer_cost.model_costs``, the per-layer function price_training sums over a stage;
    states under ``config.zero``). Stage 0 holds the embedding; the last stage the LM head,
    the MTP modules, their time and the logits; every stage the communicator buffers.
    1F1B only (vpp = 1).
    """
    if config.vpp > 1:
        raise InputError(f"vpp {config.vpp}: the stage ILP models 1F1B (vpp 1); interleaved "
                         "stages hold non-adjacent chunks")
    costs = layer_costs(model, job, cluster, config, efficiency)
    return StageProblem(layer_problem(fixed_bytes=costs.fixed_bytes, **costs.arrays()),
                        stages=config.pp, microbatches=costs.microbatches,
                        budget_bytes=budget_bytes)
