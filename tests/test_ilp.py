"""ILP planners (planners/ilp.py): equal to exhaustive search on small instances, true status."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest

from sysplan.core.errors import InputError, NoPlanFits
from sysplan.core.units import GIB
from sysplan.costmodels.candidates import Candidates
from sysplan.costmodels.training import price_training
from sysplan.costmodels.types import ParallelConfig
from sysplan.hardware import load_cluster
from sysplan.models import resolve_model
from sysplan.planners import ilp, ilp_sharding, ilp_stages
from sysplan.planners.pipeline_dp import evaluate_stages
from sysplan.planners.stage_costs import layer_costs, plan_stages
from sysplan.planners.stages import layer_problem, price_assignment
from sysplan.workloads.training import TrainJob


def _synthetic_sharding(seed: int, budget: float) -> ilp_sharding.ShardingCosts:
    rng = np.random.default_rng(seed)
    combos = itertools.product(ilp.SHARD_GROUPS, repeat=3)
    step = {c: float(rng.uniform(1.0, 2.0)) for c in combos}
    state = {s: dict(zip(ilp.SHARD_GROUPS, sorted(rng.uniform(1.0, 10.0, 3), reverse=True)))
             for s in ilp.STATES}
    return ilp_sharding.ShardingCosts(step, state, other_bytes=5.0, budget_bytes=budget)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("nested", [True, False])
def test_sharding_ilp_equals_enumeration_on_synthetic_costs(seed: int, nested: bool) -> None:
    costs = _synthetic_sharding(seed, budget=5.0 + 4.0 * (4 + seed))
    enumerated = ilp_sharding.enumerate_sharding(costs, nested=nested)
    # a limit no busy CI machine reaches: the test is about the optimum, not the solve time
    # (at the 10 s default CBC once stopped at a 0.015 % gap on a loaded 2-core runner)
    solved = ilp_sharding.plan_sharding_ilp(costs, nested=nested, time_limit_s=120.0)
    assert solved.ilp is not None and solved.ilp.status == "optimal"
    assert solved.step_time_s == pytest.approx(enumerated.step_time_s, rel=1e-3)  # its gap_rel
    assert solved.memory_bytes <= costs.budget_bytes


def _llama_layout():
    model, _ = resolve_model("8b")
    cluster, _ = load_cluster("dgx-h100")
    job = TrainJob(seq_len=4096, global_batch=64)
    config = ParallelConfig(tp=2, dp=8, micro_batch=1, global_batch=64, sequence_parallel=True)
    return model, job, cluster, config


def _moe_layout():
    """Mixtral on 4 nodes, EP 8 inside each node: the expert-DP group spans the nodes."""
    model, _ = resolve_model("mixtral-8x7b")
    cluster, _ = load_cluster("dgx-h100")
    job = TrainJob(seq_len=4096, global_batch=64)
    config = ParallelConfig(tp=1, dp=32, ep=8, micro_batch=1, global_batch=64)
    return model, job, cluster, config


@pytest.mark.parametrize("layout", [_llama_layout, _moe_layout])
def test_sharding_costs_reproduce_price_training_for_zero_stages(layout) -> None:
    model, job, cluster, config = layout()
    costs = ilp_sharding.sharding_costs(model, job, cluster, config, budget_bytes=76 * GIB)
    for zero, combo in ilp.ZERO_AS_GROUPS.items():
        priced = price_training(model, job, cluster,
                                Candidates.from_configs([config.model_copy(update={"zero": zero})]))
        plan = ilp_sharding.enumerate_sharding(ilp_sharding.ShardingCosts(
            {c: (t if c == combo else 1e9) for c, t in costs.step_time_s.items()},
            costs.state_bytes, costs.other_bytes, 1e30))
        assert plan.memory_bytes == pytest.approx(float(priced.memory_bytes[0]), rel=1e-12)
        assert plan.step_time_s == pytest.approx(float(priced.step_time_s[0]), rel=1e-12), zero


@pytest.mark.parametrize("budget_gib", [24, 40, 76])
def test_sharding_ilp_equals_enumeration_on_real_layout(budget_gib: int) -> None:
    model, job, cluster, config = _llama_layout()
    costs = ilp_sharding.sharding_costs(model, job, cluster, config, budget_bytes=budget_gib * GIB)
    enumerated = ilp_sharding.enumerate_sharding(costs)
    solved = ilp_sharding.plan_sharding_ilp(costs, warm_start=ilp.ZERO_AS_GROUPS[3])
    assert solved.step_time_s == pytest.approx(enumerated.step_time_s, rel=1e-3)  # its gap_rel


def test_sharding_that_cannot_fit_says_so() -> None:
    costs = _synthetic_sharding(0, budget=1.0)
    with pytest.raises(NoPlanFits):
        ilp_sharding.enumerate_sharding(costs)
    with pytest.raises(NoPlanFits, match="no feasible assignment"):
        ilp_sharding.plan_sharding_ilp(costs)


def _synthetic_stages(seed: int, layers: int, stages: int, budget: float) -> ilp_stages.StageProblem:
    """Mixed layers; ``budget`` in [0, 1] places the memory limit between the uniform plan
    with full recompute (0) and without recompute (1); below 0 nothing uniform fits."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 2, layers)  # mixed "dense" and "MoE" layers
    time = np.where(kind[:, None] == 1, 1.6, 1.0) * np.array([1.0, 1.04, 1.33])
    kept = np.where(kind[:, None] == 1, 1.5, 1.0) * np.array([1.0, 0.7, 0.12])
    # forward + backward as one time (a zero backward), the transient only under full recompute
    per_layer = layer_problem(
        (time * rng.uniform(0.9, 1.1, (layers, 1))).T, np.zeros((3, layers)), kept.T,
        np.where(kind == 1, 2.5, 1.0), first_extra=(0.0, 0.7), last_extra=(0.5, 0.0),
        recompute_options=("none", "selective", "full"),
        layer_transient_bytes=[np.zeros(layers), np.zeros(layers), kept[:, 0]])
    counts = [len(part) for part in np.array_split(np.arange(layers), stages)]
    low, high = (max(price_assignment(per_layer, counts, [mode] * layers, 8).stage_memory_bytes)
                 for mode in (2, 0))
    return ilp_stages.StageProblem(per_layer, stages, 8, budget_bytes=low + budget * (high - low))


@pytest.mark.parametrize(("seed", "layers", "stages"),
                         [(0, 4, 2), (1, 5, 2), (2, 5, 3), (3, 6, 3), (4, 6, 2), (5, 6, 1)])
def test_stage_ilp_equals_brute_force(seed: int, layers: int, stages: int) -> None:
    problem = _synthetic_stages(seed, layers, stages, budget=0.15 * (seed + 1))
    exact = ilp_stages.brute_force_stages(problem)
    solved = ilp_stages.plan_stages_ilp(problem, time_limit_s=30)
    assert solved.ilp is not None and solved.ilp.status == "optimal"
    assert solved.ilp.describe().startswith("optimal")
    assert solved.pipeline_time_s == pytest.approx(exact.pipeline_time_s, rel=1e-7)
    assert max(solved.stage_memory_bytes) <= problem.budget_bytes * (1 + 1e-9)
    baseline = ilp_stages.uniform_stages(problem)
    assert baseline is None or solved.pipeline_time_s <= baseline.pipeline_time_s * (1 + 1e-9)


def test_stage_problem_that_cannot_fit_says_so() -> None:
    problem = _synthetic_stages(0, 4, 2, budget=-2.0)
    assert ilp_stages.uniform_stages(problem) is None
    with pytest.raises(NoPlanFits):
        ilp_stages.brute_force_stages(problem)
    with pytest.raises(NoPlanFits):
        ilp_stages.plan_stages_ilp(problem)


def test_stage_problem_checks_its_shapes() -> None:
    ones = np.ones(3)
    with pytest.raises(InputError, match="stages 5"):
        ilp_stages.StageProblem(layer_problem(ones, ones, ones, ones), 5, 4, 10.0)
    with pytest.raises(InputError, match="layer_fwd_s"):
        layer_problem(np.ones((3, 2)), ones, ones, ones, recompute_options=("none", "full"))


def test_true_status_reads_sol_status_not_status() -> None:
    import pulp

    # a time-limited CBC run with an incumbent: status Optimal, sol_status integer-feasible
    assert ilp.true_status(pulp.LpStatusOptimal, pulp.LpSolutionIntegerFeasible) == "feasible"
    assert ilp.true_status(pulp.LpStatusOptimal, pulp.LpSolutionOptimal) == "optimal"
    assert ilp.true_status(pulp.LpStatusNotSolved, pulp.LpSolutionNoSolutionFound) == "no-solution"
    assert ilp.true_status(pulp.LpStatusInfeasible, pulp.LpSolutionInfeasible) == "infeasible"


def test_feasible_result_describes_its_gap_and_time() -> None:
    result = ilp.IlpResult(status="feasible", objective=10.0, gap=0.0123, solve_time_s=2.04,
                           time_limit_s=2.0)
    assert result.describe() == "best found in 2.0 s (limit 2 s), gap 1.23 %"
    log = "Result - Stopped on time limit\n\nObjective value:   10.0\nLower bound:   9.5\n"
    assert ilp._cbc_gap(log) == pytest.approx(0.05)


def test_time_limited_solve_reports_feasible_not_optimal() -> None:
    """A 61-layer, 8-stage instance is far from proven in 0.5 s: the result must say so."""
    problem = _synthetic_stages(7, 61, 8, budget=0.4)
    solved = ilp_stages.plan_stages_ilp(problem, time_limit_s=0.5)
    assert solved.ilp is not None
    if solved.ilp.status == "feasible":  # CBC may prove it on a fast machine
        assert solved.ilp.describe().startswith("best found in")
    assert max(solved.stage_memory_bytes) <= problem.budget_bytes * (1 + 1e-9)


def test_stage_problem_from_the_cost_model_is_consistent() -> None:
    model, _ = resolve_model("mixtral-8x7b")
    cluster, _ = load_cluster("dgx-h100")
    job = TrainJob(seq_len=4096, global_batch=64)
    config = ParallelConfig(tp=2, pp=4, dp=2, ep=2, micro_batch=1, global_batch=64,
                            sequence_parallel=True, zero=1)
    problem = ilp_stages.stage_problem(model, job, cluster, config, budget_bytes=60 * GIB)
    time = problem.per_layer.fwd + problem.per_layer.bwd
    assert time.shape == (3, model.num_layers)
    # full recompute costs time and saves memory; selective sits between
    assert (np.diff(time, axis=0) >= 0).all()
    assert (np.diff(problem.per_layer.act, axis=0) <= 0).all()
    with pytest.raises(InputError, match="vpp"):
        ilp_stages.stage_problem(model, job, cluster,
                          config.model_copy(update={"vpp": 2, "schedule": "interleaved-1f1b"}),
                          budget_bytes=60 * GIB)


def _deepseek_cut():
    """3 dense + 5 MoE layers of DeepSeek-V3 on 3 stages."""
    model, _ = resolve_model("deepseek-v3")
    model = model.model_copy(update={"num_layers": 8, "mtp_layers": 0})
    cluster, _ = load_cluster("dgx-h100")
    job = TrainJob(seq_len=4096, global_batch=1024)
    config = ParallelConfig(tp=2, pp=3, dp=64, ep=64, micro_batch=1, global_batch=1024,
                            sequence_parallel=True, zero=1)
    return model, job, cluster, config


def test_stage_ilp_counts_kinds_and_equals_brute_force_on_a_deepseek_cut() -> None:
    # 3 dense + 5 MoE layers: two kinds, so the ILP chooses mode counts per stage and kind
    model, job, cluster, config = _deepseek_cut()
    for budget_gib in (14, 16, 20, 40):  # 16: CBC called a worse plan optimal in bytes
        problem = ilp_stages.stage_problem(model, job, cluster, config, budget_gib * GIB)
        assert len(ilp_stages._kinds(problem.per_layer)[1]) == 2
        exact = ilp_stages.brute_force_stages(problem)
        solved = ilp_stages.plan_stages_ilp(problem, time_limit_s=30)
        assert solved.ilp.status == "optimal"
        assert solved.pipeline_time_s == pytest.approx(exact.pipeline_time_s, rel=1e-7)


def test_the_stage_ilp_and_the_stage_dp_price_an_assignment_alike() -> None:
    """Both read one per-layer problem (layer_costs) and price with stages.price_assignment:
    the DP's plan costs the same on the ILP's StageProblem as through the DP's own
    evaluate_stages, and with one recompute mode (per-stage = per-layer choice) both optima
    agree; with all modes the ILP's per-layer choice is never slower than the DP's per-stage."""
    model, job, cluster, config = _deepseek_cut()
    budget = 14 * GIB  # the DP needs full recompute on some stages, not all
    costs = layer_costs(model, job, cluster, config)
    problem = ilp_stages.stage_problem(model, job, cluster, config, budget)
    dp = plan_stages(costs, config.pp, "1f1b", budget)
    assert len(set(dp.stage_recompute)) > 1
    rows = [problem.per_layer.modes.index(mode) for mode in dp.layer_recompute]
    on_ilp = price_assignment(problem.per_layer, dp.stage_layers, rows, problem.microbatches)
    again = evaluate_stages(dp.stage_layers, dp.stage_recompute, costs.microbatches,
                            fixed_bytes=costs.fixed_bytes, **costs.arrays())
    for plan in (on_ilp, again):
        assert plan.pipeline_time_s == pytest.approx(dp.pipeline_time_s, rel=1e-12)
        assert plan.stage_memory_bytes == pytest.approx(dp.stage_memory_bytes, rel=1e-12)
    # 1F1B: sum of the stage times + (m - 1) x the slowest (Narayanan et al. 2021, 2.2)
    times = on_ilp.stage_time_s
    assert on_ilp.pipeline_time_s == pytest.approx(
        sum(times) + (problem.microbatches - 1) * max(times), rel=1e-12)
    solved = ilp_stages.plan_stages_ilp(problem, time_limit_s=30)
    assert solved.exact and solved.pipeline_time_s <= dp.pipeline_time_s * (1 + 1e-7)
    full = replace(costs, modes=("full",), backward_s=costs.backward_s[2:],
                   activation_bytes=costs.activation_bytes[2:],
                   transient_bytes=costs.transient_bytes[2:])
    one_dp = plan_stages(full, config.pp, "1f1b", budget)
    one_ilp = ilp_stages.plan_stages_ilp(ilp_stages.StageProblem(
        layer_problem(fixed_bytes=full.fixed_bytes, **full.arrays()), config.pp,
        full.microbatches, budget), time_limit_s=30)
    assert one_ilp.pipeline_time_s == pytest.approx(one_dp.pipeline_time_s, rel=1e-9)
    assert one_ilp.stage_layers == one_dp.stage_layers
