"""Sequence-parallel mixes (planners/sp_mix.py) and length files (workloads/lengths.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from sysplan.core.errors import InputError, NoPlanFits
from sysplan.hardware.loader import load_cluster
from sysplan.models.catalog import resolve_model
from sysplan.planners.sp_mix import SequenceCosts, plan_sp_mix, sequence_costs
from sysplan.workloads.lengths import parse_lengths, read_lengths, sample_step
from sysplan.workloads.training import TrainJob

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "lengths"
INF = math.inf


def synthetic(count: int, slots: int, seed: int) -> SequenceCosts:
    """FlexSP-shaped costs: (a l^2 + b l) / d compute, a per-degree communication overhead
    that grows with d, memory l / d against a budget that pushes long sequences up."""
    rng = np.random.default_rng(seed)
    lengths = np.sort(rng.integers(1, 64, count))[::-1].copy()
    degrees = tuple(2**i for i in range(int(math.log2(slots)) + 1))
    d = np.array(degrees, dtype=float)
    overhead = 1.0 + 0.15 * np.log2(d)
    time_s = (0.002 * lengths[:, None] ** 2 + lengths[:, None]) / d * overhead + 0.3 * (d > 1)
    memory = lengths[:, None] / d
    return SequenceCosts(lengths, degrees, time_s, memory, budget_bytes=24.0)


def exhaustive(costs: SequenceCosts, slots: int) -> float:
    """Optimal step time over every partition into groups and every degree, by DP over
    subsets: best[S][g] = least makespan of subset S on at most g slots."""
    n = costs.lengths.size
    times = [[t if ok else INF for t, ok in zip(row, fit, strict=True)]
             for row, fit in zip(costs.time_s.tolist(), costs.fits.tolist(), strict=True)]
    cost = [[0.0] * len(costs.degrees) for _ in range(1 << n)]
    for subset in range(1, 1 << n):
        low = subset & -subset
        i = low.bit_length() - 1
        cost[subset] = [a + b for a, b in zip(cost[subset ^ low], times[i], strict=True)]
    best = [[0.0] * (slots + 1)] + [None] * ((1 << n) - 1)
    for subset in range(1, 1 << n):
        low = subset & -subset
        rest = subset ^ low
        row = [INF] * (slots + 1)
        sub = rest
        while True:
            block = sub | low
            remainder = best[subset ^ block]
            for d, c in zip(costs.degrees, cost[block], strict=True):
                if c < INF:
                    for g in range(d, slots + 1):
                        value = max(remainder[g - d], c)
                        row[g] = min(row[g], value)
            if not sub:
                break
            sub = (sub - 1) & rest
        best[subset] = row
    return best[-1][slots]


def check_valid(plan, costs: SequenceCosts, slots: int) -> None:
    placed = sorted(s for g in plan.groups for s in g.sequence_indices)
    assert placed == list(range(costs.lengths.size))
    assert sum(g.degree for g in plan.groups) <= slots
    for group in plan.groups:
        j = costs.degrees.index(group.degree)
        index = list(group.sequence_indices)
        assert (costs.memory_bytes[index, j] <= costs.budget_bytes).all()
        assert group.time_s == pytest.approx(costs.time_s[index, j].sum(), rel=1e-9)
    assert plan.step_time_s == pytest.approx(max(g.time_s for g in plan.groups), rel=1e-12)
    assert plan.lower_bound_s <= plan.step_time_s * (1 + 1e-9)
    if plan.uniform_step_time_s is not None:
        assert plan.step_time_s <= plan.uniform_step_time_s * (1 + 1e-12)


@pytest.mark.parametrize(("count", "slots", "seed"), [
    (6, 8, 0), (8, 8, 1), (9, 4, 2), (10, 8, 3), (11, 4, 4), (12, 4, 5), (12, 4, 6)])
def test_milp_equals_exhaustive_search(count, slots, seed):
    costs = synthetic(count, slots, seed)
    plan = plan_sp_mix(costs, slots, method="milp", time_limit_s=20)
    check_valid(plan, costs, slots)
    assert plan.status == "optimal" and plan.gap == 0.0
    assert plan.step_time_s == pytest.approx(exhaustive(costs, slots), rel=1e-7)


@pytest.mark.parametrize("method", ["auto", "milp", "lp", "greedy", "uniform"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_method_is_valid_and_never_worse_than_uniform(method, seed):
    costs = synthetic(60, 16, seed)
    plan = plan_sp_mix(costs, 16, method=method, time_limit_s=2, max_buckets=12)
    check_valid(plan, costs, 16)
    if method == "uniform":
        assert plan.method == "uniform" and plan.step_time_s == plan.uniform_step_time_s
    if method == "greedy":
        assert plan.step_time_s == min(plan.greedy_step_time_s, plan.uniform_step_time_s)


def test_greedy_packs_every_sequence_within_memory():
    costs = synthetic(40, 8, 9)
    plan = plan_sp_mix(costs, 8, method="greedy")
    assert plan.greedy_step_time_s is not None
    check_valid(plan, costs, 8)


def test_a_sequence_that_fits_nowhere_is_refused():
    costs = synthetic(5, 4, 0)
    costs = SequenceCosts(costs.lengths, costs.degrees, costs.time_s,
                          costs.memory_bytes * 10, costs.budget_bytes)
    with pytest.raises(NoPlanFits, match="fits no CP degree <= 4"):
        plan_sp_mix(costs, 4)


def test_same_input_same_plan_byte_for_byte():
    # solved to proven optimality (a binding time limit would make it machine-dependent)
    for costs, slots, method in ((synthetic(12, 8, 3), 8, "milp"),
                                 (synthetic(200, 32, 3), 32, "lp")):
        runs = [plan_sp_mix(costs, slots, method=method, time_limit_s=20)
                .model_dump_json(exclude={"solve_time_s"}) for _ in range(2)]
        assert runs[0] == runs[1]


@pytest.fixture(scope="module")
def llama8b():
    model, _ = resolve_model("8b")
    cluster, _ = load_cluster("dgx-h100")
    return model, cluster, TrainJob(seq_len=8192, global_batch=1)


def test_sequence_costs_follow_the_training_cost_model(llama8b):
    model, cluster, job = llama8b
    lengths = [1024, 8192, 131072, 8192]
    ring = sequence_costs(model, job, cluster, lengths, (1, 2, 4, 8, 16, 32, 64), "p2p",
                          recompute=("selective",))
    assert np.array_equal(ring.time_s[1], ring.time_s[3])
    assert (np.diff(ring.time_s[:3], axis=0) > 0).all()  # longer is slower at every degree
    assert (np.diff(ring.memory_bytes, axis=1) <= 0).all()  # more ranks, less memory each
    assert not ring.fits[2, 0] and ring.fits[2, -1]  # 128K needs context parallelism
    either = sequence_costs(model, job, cluster, lengths, (1, 2, 4, 8, 16, 32, 64), "p2p")
    assert (either.fits >= ring.fits).all() and either.fits.sum() > ring.fits.sum()
    assert (either.time_s[ring.fits] <= ring.time_s[ring.fits]).all()
    ulysses = sequence_costs(model, job, cluster, lengths, (1, 2, 4, 8, 16, 32, 64), "a2a")
    assert not ulysses.fits[:, -1].any()  # 32 heads cannot split 64 ways
    assert (ulysses.time_s[:, 0] == either.time_s[:, 0]).all()  # no CP, no CP traffic


def test_real_step_plan_beats_or_matches_uniform(llama8b):
    model, cluster, job = llama8b
    lengths = sample_step(read_lengths(EXAMPLES / "long_tail.csv"), 400_000, seed=1)
    costs = sequence_costs(model, job, cluster, lengths, (1, 2, 4, 8, 16), "p2p",
                           pool_slots=16)
    plan = plan_sp_mix(costs, 16, time_limit_s=2)
    check_valid(plan, costs, 16)
    assert plan.speedup >= 1.0


def test_sequence_costs_refuses_bad_degrees_and_comm(llama8b):
    model, cluster, job = llama8b
    with pytest.raises(InputError, match="powers of two"):
        sequence_costs(model, job, cluster, [1024], (1, 3), "p2p")
    with pytest.raises(InputError, match="p2p .ring. or a2a"):
        sequence_costs(model, job, cluster, [1024], (1, 2), "ring")


def test_length_files_one_per_line_and_histogram(tmp_path):
    lines = tmp_path / "docs.txt"
    lines.write_text("# lengths\n1024\n\n4096  # long one\n1024\n", encoding="utf-8")
    mix = read_lengths(lines)
    assert mix.values.tolist() == [1024, 4096] and mix.weights.tolist() == [2, 1]
    table = tmp_path / "hist.csv"
    table.write_text("length,count\n1024,3\n2048,0\n8192,1\n", encoding="utf-8")
    mix = parse_lengths(str(table))
    assert mix.values.tolist() == [1024, 8192] and mix.mean_tokens == pytest.approx(2816)
    for name in ("long_tail.csv", "documents.txt"):
        example = read_lengths(EXAMPLES / name)
        assert example.values.min() >= 128 and example.values.max() == 131072


@pytest.mark.parametrize(("text", "message"), [
    ("", "no lengths in the file"),
    ("1024\nabc\n", "line 2: length 'abc' is not a positive whole number"),
    ("1024\n0\n", "line 2: length '0' is not a positive"),
    ("1024,2\n2048\n", "line 2: expected length,count"),
    ("1024,2\n2048,-1\n", "line 2: count '-1' is not a whole number >= 0"),
    ("1024,0\n", "every count is 0"),
    ("1024,2,3\n", "line 1: expected length,count"),
])
def test_bad_length_files_name_the_line(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=message) as error:
        read_lengths(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_missing_file_and_bad_distribution(tmp_path):
    with pytest.raises(InputError, match="cannot read it"):
        parse_lengths(str(tmp_path / "nope.txt"))
    with pytest.raises(InputError, match="--lengths lognormal:abc"):
        parse_lengths("lognormal:abc")


def test_a_step_fills_the_token_batch_deterministically():
    mix = parse_lengths("lognormal:8192,1.0,min=1024,max=131072")
    step = sample_step(mix, "4M", seed=3, step=2)
    assert step.sum() >= 4 * 2**20 > step[:-1].sum()  # 4M: a binary batch size
    assert step.min() >= 1024 and step.max() <= 131072
    assert np.array_equal(step, sample_step(mix, 4 * 2**20, seed=3, step=2))
    assert not np.array_equal(step[:20], sample_step(mix, "4M", seed=3, step=3)[:20])
    with pytest.raises(InputError):
        sample_step(mix, "0M")
