"""Per-layer recompute and pipeline-stage boundaries under one per-rank memory budget, as one
ILP (the choices couple through each stage's in-flight activations)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from sysplan.core.errors import InputError, NoPlanFits
from sysplan.core.types import Frozen
from sysplan.costmodels.candidates import Candidates
from sysplan.costmodels.compute import layer_forward
from sysplan.costmodels.efficiency import Efficiency
from sysplan.costmodels.layers import layer_shapes
from sysplan.costmodels.memory import (
    ALLOCATOR_RESERVE_FRACTION,
    activation_bytes_per_token,
    element_bytes,
)
from sysplan.costmodels.training import (
    _accumulate,
    _layer_comm,
    _layer_params,
    _lm_head_seconds,
    price_training,
)
from sysplan.costmodels.types import ParallelConfig
from sysplan.hardware.types import Cluster
from sysplan.models.counting import padded_vocab
from sysplan.models.spec import ModelSpec
from sysplan.planners.ilp import (
    RECOMPUTE_MODES,
    ZERO_AS_GROUPS,
    IlpResult,
    _solve,
)
from sysplan.planners.ilp_sharding import _groups, _layout_arrays, _state_bytes
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
    result = _solve(lp, time_limit_s, warm is not None, "recompute and stage boundaries")
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

    Per layer kind (dense or MoE), per mode: seconds per micro-batch as price_training sums
    them (``layer_forward`` + ``_layer_comm`` + ``_accumulate`` with one layer), kept bytes
    from ``activation_bytes_per_token`` (full recompute keeps the layer input), states under
    ``config.zero``. Stage 0 holds the embedding; the last stage the LM head, its time and
    its logits; every stage the communicator buffers. 1F1B only (vpp = 1).
    """
    if config.vpp > 1:
        raise InputError(f"vpp {config.vpp}: the stage ILP models 1F1B (vpp 1); interleaved "
                         "stages hold non-adjacent chunks")
    eff = efficiency or Efficiency.for_cluster(cluster)
    priced = price_training(model, job, cluster, Candidates.from_configs([config]), eff)
    reserve = eff.calibration.allocator_reserve
    reserve = ALLOCATOR_RESERVE_FRACTION if reserve is None else reserve
    dense_groups, expert_groups = _groups(cluster, config)
    shard = ZERO_AS_GROUPS[config.zero]
    fd, fe = [dense_groups[g] for g in shard], [expert_groups[g] for g in shard]
    kinds = {moe: _layer_kind(model, job, cluster, eff, config, moe, reserve, fd, fe)
             for moe in ({False, model.moe is not None})}
    per_layer = [kinds[model.is_moe_layer(i)] for i in range(model.num_layers)]
    h, tp = model.hidden_size, config.tp
    vocab = padded_vocab(model, tp)
    # embedding (+ learned positions) on stage 0, LM head + final norm on the last stage
    # (as costmodels.training._local_params)
    embedding = vocab * h / tp + (model.max_seq_len * h if model.learned_positions else 0.0)
    head = (0.0 if model.tied_embeddings else vocab * h / tp) + h
    p = config.pp
    stage_bytes = np.full(p, float(priced.memory["comm_buffers"][0]))
    largest = max(k["params"] for k in kinds.values())
    stage_bytes += _state_bytes(job.precision, 0.0, 0.0, largest, fd, fe).sum()
    stage_bytes[0] += _state_bytes(job.precision, embedding, 0.0, 0.0, fd, fe).sum()
    stage_bytes[-1] += _state_bytes(job.precision, head, 0.0, 0.0, fd, fe).sum()
    tokens = config.micro_batch * job.seq_len / config.cp
    # fp32 logits of the padded vocab for the one micro-batch on the last stage
    # (Megatron cross-entropy, training-formulas 4.3, as price_training's logits term)
    stage_bytes[-1] += (1.0 + reserve) * 4.0 * tokens * (h + vocab / tp)
    stage_time = np.zeros(p)
    stage_time[-1] = float(_lm_head_seconds(model, eff, np.array([tokens]),
                                            np.array([float(tp)]), job.precision)[0])
    return StageProblem(
        layer_time_s=np.array([k["seconds"] for k in per_layer]),
        activation_bytes=np.array([k["kept"] for k in per_layer]),
        state_bytes=np.array([k["state"] for k in per_layer]),
        recompute_peak_bytes=np.array([k["peak"] for k in per_layer]),
        stages=p, microbatches=config.num_microbatches, budget_bytes=budget_bytes,
        stage_time_s=stage_time, stage_bytes=stage_bytes)


def _layer_kind(model, job, cluster, eff, config, moe_layer, reserve, fd, fe) -> dict:
    """Seconds and kept bytes per recompute mode, and state bytes, of one layer kind."""
    shapes = layer_shapes(model, moe_layer)
    arrays = _layout_arrays(config, 3)
    tokens = np.full(3, config.micro_batch * job.seq_len / config.cp)
    full, selective = np.array([0.0, 0.0, 1.0]), np.array([False, True, False])
    fwd = layer_forward(model, job, eff, shapes, tokens=tokens, **arrays,
                        imbalance=job.moe_load_imbalance)
    comm = _layer_comm(model, job, cluster, eff, shapes, fwd, tokens, arrays["tp"], arrays["cp"],
                       arrays["ep"], arrays["etp"])
    per_mb = {k: np.zeros(3) for k in
              ("gemm", "attn", "elem", "recompute", "tp", "cp", "ep", "fwd", "bwd")}
    _accumulate(per_mb, fwd, comm, 1.0, full, selective)
    seconds = sum(per_mb[k] for k in ("gemm", "attn", "elem", "recompute", "tp", "cp", "ep"))
    layer_bytes = tokens * activation_bytes_per_token(model, job, shapes, arrays["tp"],
                                                      arrays["sp"], arrays["etp"], selective)
    # full recompute keeps only the layer input, 2 b s h (/ t with SP) (Korthikanti 2022, T. 2)
    inputs = (element_bytes(job.precision) * model.hidden_size * tokens
              / (config.tp if config.sequence_parallel else 1))
    kept = (1.0 + reserve) * np.where(full > 0, inputs, layer_bytes)
    split, replicated, routed = _layer_params(shapes, model.hidden_size)
    dense, expert = split / config.tp + replicated, routed / (config.ep * config.etp)
    return {"seconds": seconds, "kept": kept, "peak": float((1.0 + reserve) * layer_bytes[0]),
            "params": dense + expert,
            "state": float(_state_bytes(job.precision, dense, expert, 0.0, fd, fe).sum())}
