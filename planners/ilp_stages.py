"""Per-layer recompute and pipeline-stage boundaries under one per-rank memory budget, as one
ILP (the choices couple through each stage's in-flight activations)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from sysplan.core.errors import InputError, NoPlanFits
from sysplan.core.types import Frozen
from sysplan.costmodels.efficiency import Efficiency
from sysplan.costmodels.layer_cost import RECOMPUTE_MODES
from sysplan.costmodels.types import ParallelConfig
from sysplan.hardware.types import Cluster
from sysplan.models.spec import ModelSpec
from sysplan.planners.ilp import IlpResult, solve_ilp
from sysplan.planners.stage_costs import layer_costs
from sysplan.workloads.training import TrainJob

# ------------------------------------------------------ 2. per-layer recompute + stage boundaries


@dataclass(frozen=True)
class StageProblem:
    """Per-layer inputs of the recompute and stage-boundary problem (SI units).

    Columns of the [L, 3] arrays follow RECOMPUTE_MODES. Pipeline seconds per step (GPipe /
    1F1B, issue 7 section 1; Narayanan et al. 2021 section 2.2): the sum of the stage times
    plus (m - 1) x the slowest, a stage's time per micro-batch being its layers' forward +
    backward (+ recompute) plus its fixed work (LM head). Bytes of stage k: its layers' states
    + its fixed bytes + in_flight[k] x its layers' kept activations + the transient of one
    fully recomputed layer (Korthikanti et al. 2022, Table 2).
    """

    layer_time_s: np.ndarray  # [L, 3] seconds per micro-batch
    activation_bytes: np.ndarray  # [L, 3] bytes kept per micro-batch
    state_bytes: np.ndarray  # [L] weights + gradients + optimizer bytes per GPU
    stages: int
    microbatches: int
    budget_bytes: float
    recompute_peak_bytes: np.ndarray | None = None  # [L] transient under full recompute
    stage_time_s: np.ndarray | None = None  # [p] fixed seconds per micro-batch
    stage_bytes: np.ndarray | None = None  # [p] fixed bytes (embedding, head, logits, buffers)
    in_flight: np.ndarray | None = None  # [p] micro-batches held; 1F1B: min(p - k, m)

    def __post_init__(self) -> None:
        layers, p = len(self.state_bytes), self.stages
        if not 1 <= p <= layers:
            raise InputError(f"stages {p}: must be between 1 and the {layers} layers")
        if self.microbatches < 1:
            raise InputError(f"microbatches {self.microbatches}: must be at least 1")
        defaults = {"recompute_peak_bytes": np.zeros(layers), "stage_time_s": np.zeros(p),
                    "stage_bytes": np.zeros(p),
                    "in_flight": np.minimum(np.arange(p, 0, -1), self.microbatches)}
        for name, value in defaults.items():
            given = getattr(self, name)
            object.__setattr__(self, name, value if given is None else np.asarray(given, float))
        for name, shape in (("layer_time_s", (layers, 3)), ("activation_bytes", (layers, 3)),
                            ("recompute_peak_bytes", (layers,)), ("stage_time_s", (p,)),
                            ("stage_bytes", (p,)), ("in_flight", (p,))):
            if np.shape(getattr(self, name)) != shape:
                raise InputError(f"{name}: shape {np.shape(getattr(self, name))}, "
                                 f"expected {shape}")


class StagePlan(Frozen):
    """Layers per stage and recompute per layer, with their pipeline time and memory."""

    stage_layers: tuple[int, ...]
    recompute: tuple[str, ...]  # one of RECOMPUTE_MODES per layer
    pipeline_time_s: float
    stage_time_s: tuple[float, ...]  # per micro-batch
    stage_memory_bytes: tuple[float, ...]
    ilp: IlpResult | None = None  # None for enumerated or baseline plans


def evaluate_stages(problem: StageProblem, stage_layers, modes) -> StagePlan:
    """Price one assignment: ``stage_layers`` counts per stage, ``modes`` indices per layer."""
    modes = np.asarray(modes, dtype=int)
    rows = np.arange(len(modes))
    starts = np.cumsum([0, *stage_layers])[:-1]
    stage_t = np.add.reduceat(problem.layer_time_s[rows, modes], starts) + problem.stage_time_s
    kept = np.add.reduceat(problem.activation_bytes[rows, modes], starts)
    peak = np.maximum.reduceat(np.where(modes == 2, problem.recompute_peak_bytes, 0.0), starts)
    memory = (np.add.reduceat(problem.state_bytes, starts) + problem.stage_bytes
              + problem.in_flight * kept + peak)
    return StagePlan(
        stage_layers=tuple(int(n) for n in stage_layers),
        recompute=tuple(RECOMPUTE_MODES[i] for i in modes),
        pipeline_time_s=float(stage_t.sum() + (problem.microbatches - 1) * stage_t.max()),
        stage_time_s=tuple(float(t) for t in stage_t),
        stage_memory_bytes=tuple(float(b) for b in memory))


def uniform_stages(problem: StageProblem) -> StagePlan | None:
    """The naive baseline: even stages (extra layers on middle stages), one recompute mode
    for every layer (the fastest that fits); None when no mode fits."""
    layers, p = len(problem.state_bytes), problem.stages
    counts = [layers // p] * p
    first = (p - layers % p) // 2
    for k in range(first, first + layers % p):
        counts[k] += 1
    plans = [evaluate_stages(problem, counts, [mode] * layers) for mode in range(3)]
    fits = [plan for plan in plans if max(plan.stage_memory_bytes) <= problem.budget_bytes]
    return min(fits, key=lambda plan: plan.pipeline_time_s) if fits else None


def brute_force_stages(problem: StageProblem) -> StagePlan:
    """Exact by exhaustion: every split into contiguous non-empty stages x every per-layer
    mode (C(L-1, p-1) x 3^L; the reference for tests and the benchmark's extrapolation)."""
    layers = len(problem.state_bytes)
    modes = np.array(list(itertools.product(range(3), repeat=layers)))
    rows = np.arange(layers)
    t, a = problem.layer_time_s[rows, modes], problem.activation_bytes[rows, modes]
    peak = np.where(modes == 2, problem.recompute_peak_bytes, 0.0)
    best = (np.inf, None, None)
    for cuts in itertools.combinations(range(1, layers), problem.stages - 1):
        starts = [0, *cuts]
        stage_t = np.add.reduceat(t, starts, axis=1) + problem.stage_time_s
        memory = (np.add.reduceat(problem.state_bytes, starts) + problem.stage_bytes
                  + problem.in_flight * np.add.reduceat(a, starts, axis=1)
                  + np.maximum.reduceat(peak, starts, axis=1))
        value = stage_t.sum(1) + (problem.microbatches - 1) * stage_t.max(1)
        value = np.where((memory <= problem.budget_bytes).all(1), value, np.inf)
        i = int(np.argmin(value))
        if value[i] < best[0]:
            best = (value[i], np.diff([*starts, layers]), modes[i])
    if best[1] is None:
        raise NoPlanFits("no stage split and recompute assignment fits the memory budget")
    return evaluate_stages(problem, best[1], best[2])


def plan_stages_ilp(problem: StageProblem, *, time_limit_s: float = 10.0,
                    warm_start: StagePlan | None = None) -> StagePlan:
    """One ILP over stage boundaries and, per stage, how many layers of each kind take each
    recompute mode.

    Layers with identical rows form a kind (DeepSeek-V3: dense and MoE); inside a stage they
    are interchangeable, so counts c[k][q][j] replace per-layer choices and branch and bound
    never revisits permutations. z[k][b] = 1 when stage k starts at layer b; the layers of kind
    q in stage k are C_q(start(k + 1)) - C_q(start(k)), linear in z (C_q: kind-q layers before
    b). w[k][q] marks a fully recomputed kind-q layer in stage k (its transient peak). T >= each
    stage's time; objective sum of stage times + (m - 1) T (1F1B; Narayanan et al. 2021,
    section 2.2). ``warm_start`` defaults to the uniform baseline when it fits. Modes go back
    to layers full first, then selective, then none within each stage and kind (Megatron
    recomputes the first N layers of a stage).
    """
    import pulp

    kind, kinds = _kinds(problem)
    layers, p, m = len(kind), problem.stages, problem.microbatches
    first = [int(np.argmax(kind == q)) for q in range(len(kinds))]
    t, a = problem.layer_time_s[first], problem.activation_bytes[first]
    state, peak_q = problem.state_bytes[first], problem.recompute_peak_bytes[first]
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
         for k in range(p) for q in range(len(kinds)) for j in range(3)}
    w = {(k, q): lp.add_variable(f"w_{k}_{q}", cat="Binary")
         for k in range(p) for q in range(len(kinds)) if peak_q[q] > 0}
    slowest = lp.add_variable("T", lowBound=0)
    peak = [lp.add_variable(f"peak_{k}", lowBound=0) for k in range(p)]
    stage_t = [pulp.lpSum(float(t[q, j]) * c[k, q, j] for q in range(len(kinds))
                          for j in range(3)) + float(problem.stage_time_s[k]) for k in range(p)]
    lp += pulp.lpSum(stage_t) + (m - 1) * slowest
    for k, positions in starts.items():
        lp += pulp.lpSum(z[k, b] for b in positions) == 1
    for k in range(p):
        lp += start(k + 1) - start(k) >= 1
        lp += stage_t[k] <= slowest
        count = {q: before(q, k + 1) - before(q, k) for q in range(len(kinds))}
        for q in range(len(kinds)):
            lp += pulp.lpSum(c[k, q, j] for j in range(3)) == count[q]
            if (k, q) in w:
                lp += c[k, q, 2] <= float(total[q]) * w[k, q]
                lp += peak[k] >= float(peak_q[q]) * w[k, q]
        lp += (pulp.lpSum(float(state[q]) * count[q] for q in range(len(kinds)))
               + float(problem.in_flight[k]) * pulp.lpSum(
                   float(a[q, j]) * c[k, q, j] for q in range(len(kinds)) for j in range(3))
               + peak[k] + float(problem.stage_bytes[k]) <= problem.budget_bytes)
    warm = warm_start or uniform_stages(problem)
    if warm is not None:
        bounds = np.cumsum([0, *warm.stage_layers])
        modes = np.array([RECOMPUTE_MODES.index(name) for name in warm.recompute])
        for (k, b), var in z.items():
            var.setInitialValue(float(bounds[k] == b))
        for (k, q, j), var in c.items():
            span = slice(bounds[k], bounds[k + 1])
            var.setInitialValue(float(((kind[span] == q) & (modes[span] == j)).sum()))
        for (k, q), var in w.items():
            span = slice(bounds[k], bounds[k + 1])
            var.setInitialValue(float(((kind[span] == q) & (modes[span] == 2)).any()))
        slowest.setInitialValue(max(warm.stage_time_s))
        for k, var in enumerate(peak):
            span = slice(bounds[k], bounds[k + 1])
            var.setInitialValue(float(np.where(modes[span] == 2, problem.recompute_peak_bytes[span],
                                               0.0).max()))
    result = solve_ilp(lp, time_limit_s, warm is not None, "recompute and stage boundaries")
    bounds = [0, *(round(sum(b * (z[k, b].value() or 0.0) for b in starts[k])) for k in starts),
              layers]
    modes = np.zeros(layers, dtype=int)
    for k in range(p):
        for q in range(len(kinds)):
            mine = [l for l in range(bounds[k], bounds[k + 1]) if kind[l] == q]
            order = [j for j in (2, 1, 0) for _ in range(round(c[k, q, j].value() or 0.0))]
            modes[mine] = order
    plan = evaluate_stages(problem, np.diff(bounds), modes)
    assert abs(plan.pipeline_time_s - result.objective) <= 1e-6 * max(1.0, result.objective)
    return plan.model_copy(update={"ilp": result})


def _kinds(problem: StageProblem) -> tuple[np.ndarray, list[bytes]]:
    """Kind index of every layer (layers with identical rows share one) and the kinds."""
    rows = np.column_stack([problem.layer_time_s, problem.activation_bytes,
                            problem.state_bytes, problem.recompute_peak_bytes])
    keys = [row.tobytes() for row in rows]
    kinds = list(dict.fromkeys(keys))
    return np.array([kinds.index(key) for key in keys]), kinds


def stage_problem(model: ModelSpec, job: TrainJob, cluster: Cluster, config: ParallelConfig,
                  budget_bytes: float, efficiency: Efficiency | None = None) -> StageProblem:
    """The recompute/stage problem of ``config``'s layout priced by the training cost model.

    Per layer kind (dense or MoE), per mode: seconds and kept bytes per micro-batch from
    ``layer_cost.model_costs`` (the per-layer function price_training sums over a stage),
    states under ``config.zero``. Stage 0 holds the embedding; the last stage the LM head,
    the MTP modules, their time and the logits; every stage the communicator buffers.
    1F1B only (vpp = 1).
    """
    if config.vpp > 1:
        raise InputError(f"vpp {config.vpp}: the stage ILP models 1F1B (vpp 1); interleaved "
                         "stages hold non-adjacent chunks")
    costs = layer_costs(model, job, cluster, config, efficiency)
    p = config.pp
    stage_bytes = np.full(p, costs.fixed_bytes)
    stage_bytes[0] += costs.first_extra[1]
    # the last stage's MTP activations are held for its one in-flight micro-batch
    stage_bytes[-1] += costs.last_extra[1] + costs.last_extra[2]
    stage_time = np.zeros(p)
    stage_time[0] += costs.first_extra[0]
    stage_time[-1] += costs.last_extra[0]
    return StageProblem(
        layer_time_s=(costs.forward_s[None, :] + costs.backward_s).T,
        activation_bytes=costs.activation_bytes.T, state_bytes=costs.state_bytes,
        recompute_peak_bytes=costs.transient_bytes[2],
        stages=p, microbatches=config.num_microbatches, budget_bytes=budget_bytes,
        stage_time_s=stage_time, stage_bytes=stage_bytes)
