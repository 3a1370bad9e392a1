"""Pipeline-stage DP: equal to brute force, memory limits, balance, schedule formulas."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from sysplan.core.errors import NoPlanFits
from sysplan.costmodels import schedules as sched
from sysplan.planners.pipeline_dp import evaluate_stages, optimal_stages
from sysplan.planners.stage_costs import layer_costs

MODES = ("none", "selective", "full")


def _compositions(n: int, parts: int):
    for cuts in itertools.combinations(range(1, n), parts - 1):
        bounds = (0, *cuts, n)
        yield [bounds[i + 1] - bounds[i] for i in range(parts)]


def _brute_force(inst, pp, m, schedule, limit):
    """Best step time over every split and every recompute mode per stage (None: no fit)."""
    fwd, bwd, act, trans = inst["fwd"], inst["bwd"], inst["act"], inst["trans"]
    rows = fwd.shape[0]
    best = None
    for counts in _compositions(fwd.shape[1], pp):
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for modes in itertools.product(range(rows), repeat=pp):
            f, b, w, ok = [], [], [], True
            for i, r in enumerate(modes):
                a, z = bounds[i], bounds[i + 1]
                extra = np.zeros(3)
                extra += inst["first"] if i == 0 else 0.0
                extra += inst["last"] if i == pp - 1 else 0.0
                mem = (inst["state"][a:z].sum() + extra[1] + trans[r, a:z].max()
                       + sched.in_flight(schedule, pp, m, i) * (act[r, a:z].sum() + extra[2]))
                ok &= mem <= limit
                f.append(fwd[r, a:z].sum() + extra[0])
                b.append(bwd[r, a:z].sum())
                w.append(inst["wgrad"][a:z].sum())
            if not ok:
                continue
            time = (sched.step_time_zb_h1(f, b, w, m) if schedule == "zb-h1"
                    else sched.step_time_1f1b(f, b, m))
            best = time if best is None else min(best, time)
    return best


def _instance(rng: random.Random, layers: int, rows: int) -> dict:
    def vec(lo, hi, n=layers):
        return np.array([rng.uniform(lo, hi) for _ in range(n)])
    fwd = np.array([vec(1, 3)] * rows)
    extra_s = np.array([vec(0, 1) * r for r in range(rows)])  # recompute costs time ...
    act = np.array([vec(2, 6) / (1 + 2 * r) for r in range(rows)])  # ... and saves memory
    return {"fwd": fwd, "bwd": 2 * fwd + extra_s, "act": act, "state": vec(1, 4),
            "trans": np.array([np.zeros(layers)] * (rows - 1) + [vec(0, 2)]),
            "wgrad": 0.5 * fwd[0], "first": np.array([rng.uniform(0, 2), rng.uniform(0, 5), 0]),
            "last": np.array([rng.uniform(0, 4), rng.uniform(0, 5), rng.uniform(0, 2)]),
            "modes": MODES[:rows]}


def _optimal(inst, pp, m, schedule, limit):
    return optimal_stages(inst["fwd"], inst["bwd"], inst["act"], inst["state"], pp, m, schedule,
                          limit, first_extra=inst["first"], last_extra=inst["last"],
                          recompute_options=inst["modes"], layer_wgrad_s=inst["wgrad"],
                          layer_transient_bytes=inst["trans"])


@pytest.mark.parametrize("seed", range(40))
def test_dp_equals_brute_force(seed):
    rng = random.Random(seed)
    layers, pp = rng.randint(2, 9), rng.randint(1, 4)
    pp = min(pp, layers)
    inst = _instance(rng, layers, rng.randint(1, 3))
    m = rng.choice([1, 2, 3, 8])
    schedule = ("1f1b", "gpipe", "zb-h1")[seed % 3]
    limit = rng.uniform(5, 40) * layers / pp
    expected = _brute_force(inst, pp, m, schedule, limit)
    if expected is None:
        with pytest.raises(NoPlanFits, match="GiB"):
            _optimal(inst, pp, m, schedule, limit)
        return
    plan = _optimal(inst, pp, m, schedule, limit)
    assert plan.exact and plan.pipeline_time_s == pytest.approx(expected, rel=1e-9)
    assert sum(plan.stage_layers) == layers and len(plan.stage_recompute) == pp
    assert max(plan.stage_memory_bytes) <= limit


def test_memory_limit_forces_recompute_and_fails_clearly():
    rng = random.Random(7)
    inst = _instance(rng, 8, 3)
    free = _optimal(inst, 2, 4, "1f1b", math.inf)
    assert set(free.stage_recompute) == {"none"}
    tight = _optimal(inst, 2, 4, "1f1b", 0.8 * max(free.stage_memory_bytes))
    assert max(tight.stage_memory_bytes) <= 0.8 * max(free.stage_memory_bytes)
    assert tight.pipeline_time_s >= free.pipeline_time_s
    with pytest.raises(NoPlanFits, match="fullest stage"):
        _optimal(inst, 2, 4, "1f1b", 1.0)


@pytest.mark.parametrize(("layers", "pp"), [(12, 4), (16, 8), (126, 16)])
def test_uniform_costs_give_the_balanced_split(layers, pp):
    ones = np.ones(layers)
    plan = optimal_stages(ones, 2 * ones, ones, ones, pp, 64)
    assert max(plan.stage_layers) - min(plan.stage_layers) <= 1
    assert plan.pipeline_time_s == pytest.approx(3 * (sum(plan.stage_layers) + 63 * max(
        plan.stage_layers)))


def test_embedding_and_head_move_layers_off_the_end_stages():
    ones = np.ones(24)
    plan = optimal_stages(ones, 2 * ones, ones, ones, 4, 32, first_extra=(4.0, 0.0),
                          last_extra=(7.0, 0.0))
    first, *middle, last = plan.stage_layers
    assert max(first, last) < min(middle), plan.stage_layers
    uniform = evaluate_stages((6, 6, 6, 6), ("none",) * 4, 32, layer_fwd_s=ones,
                              layer_bwd_s=2 * ones, layer_act_bytes=ones, layer_state_bytes=ones,
                              first_extra=(4.0, 0.0), last_extra=(7.0, 0.0))
    assert plan.pipeline_time_s < uniform.pipeline_time_s


def test_schedule_formulas_on_hand_examples():
    assert sched.step_time_1f1b([1, 2], [2, 4], 3) == 3 + 6 + 2 * 6
    # ZB-H1 uniform: m (f + b) + (p - 1)(f + b - 2 w) = 8 x 3 + 3 x 1
    assert sched.step_time_zb_h1([1] * 4, [2] * 4, [1] * 4, 8) == pytest.approx(27)
    # interleaved: m t + (p - 1) t / v
    assert sched.step_time_interleaved([4] * 4, 8, 2) == pytest.approx(32 + 3 * 4 / 2)
    # ZB-V with F = B = W: no bubble
    assert sched.step_time_zb_v([6] * 4, [1] * 8, [2] * 8, [1] * 8, 8) == pytest.approx(48)
    # DualPipe: m/2 (t_r + t_{p-1-r}) + (p/2 - 1)(F&B + B - 3W) = 24 + 1 x (3 + 2 - 3)
    assert sched.step_time_dualpipe([1] * 4, [2] * 4, [1] * 4, 8) == pytest.approx(26)
    assert [sched.in_flight("1f1b", 4, 8, i) for i in range(4)] == [4, 3, 2, 1]
    assert sched.in_flight("1f1b", 4, 2, 0) == 2 and sched.in_flight("gpipe", 4, 8, 3) == 8
    trace = sched.interleaved_trace(4, 8, 2, 0)
    assert trace.sum(axis=1).max() / 2 == pytest.approx(4 + 3 / 2)  # p + (p - 1)/v
    assert trace[-1].sum() == 0 and trace.min() >= 0


@pytest.mark.parametrize(("schedule", "vpp"), [("interleaved-1f1b", 2), ("zb-v", 2),
                                               ("dualpipe", 2)])
def test_chunked_schedules_are_heuristic_and_fit(schedule, vpp):
    rng = random.Random(3)
    inst = _instance(rng, 24, 3)
    free = _optimal({**inst}, 4, 16, "1f1b", math.inf)
    limit = 1.5 * max(free.stage_memory_bytes)
    plan = optimal_stages(inst["fwd"], inst["bwd"], inst["act"], inst["state"], 4, 16, schedule,
                          limit, first_extra=inst["first"], last_extra=inst["last"],
                          recompute_options=inst["modes"], layer_wgrad_s=inst["wgrad"],
                          layer_transient_bytes=inst["trans"], vpp=vpp)
    assert not plan.exact and "heuristic" in plan.note
    assert sum(plan.stage_layers) == 24 and sum(plan.chunk_layers) == 24
    assert max(plan.stage_memory_bytes) <= limit


def test_layer_costs_reproduce_price_training_per_stage():
    from sysplan.costmodels.candidates import Candidates
    from sysplan.costmodels.efficiency import Efficiency
    from sysplan.costmodels.training import price_training
    from sysplan.costmodels.types import ParallelConfig
    from sysplan.hardware import load_cluster
    from sysplan.models import resolve_model
    from sysplan.workloads.training import make_train_job

    model, cluster = resolve_model("8b")[0], load_cluster("dgx-h100")[0]
    job = make_train_job(model, seq_len=4096, global_batch=64)[0]
    eff = Efficiency.default(cluster)
    for recompute in MODES:
        config = ParallelConfig(tp=2, pp=4, dp=2, global_batch=64, recompute=recompute)
        costs = layer_costs(model, job, cluster, config, eff)
        priced = price_training(model, job, cluster, Candidates.from_configs([config]), eff)
        compute = sum(float(priced.time[k][0]) for k in (
            "compute_gemm", "compute_attention", "compute_elementwise", "recompute", "lm_head",
            "tp_comm", "cp_comm", "ep_comm"))
        plan = evaluate_stages((8, 8, 8, 8), (recompute,) * 4, costs.microbatches,
                               **costs.arrays())
        # price_training charges m x (a stage's layers + the LM head) for the slowest stage
        assert costs.microbatches * plan.stage_time_s[-1] == pytest.approx(compute, rel=1e-9)
