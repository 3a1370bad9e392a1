"""The serving planner's proven limits (``planners.serving.bound``): what the proof assumes of
the cost model holds, and no simulation beats the ceiling or the floors."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sysplan.costmodels.serving.cost import ServingCost
from sysplan.costmodels.serving.deployment import Batch, Deployment, EngineKnobs, ReplicaLayout
from sysplan.costmodels.serving.simulator import simulate
from sysplan.hardware import load_cluster
from sysplan.models import resolve_model
from sysplan.planners.serving.bound import MONOTONE_SLACK, Lengths, analytic_bound, min_per_token

LLAMA8, _ = resolve_model("llama-3.1-8b")
H100, _ = load_cluster("dgx-h100")
A100, _ = load_cluster("dgx-a100")
COSTS = {"h100": ServingCost(LLAMA8, H100), "a100": ServingCost(LLAMA8, A100)}
LAYOUTS = [ReplicaLayout(tp=1), ReplicaLayout(tp=2, weights_precision="fp8", kv_precision="fp8"),
           ReplicaLayout(tp=4, pp=2)]
FIELDS = Batch._fields


def _batch(prompts: list[tuple[int, int]], seqs: int, context: int) -> Batch:
    batch = Batch.decode(seqs, seqs * context) if seqs else Batch()
    for chunk, done in prompts:
        batch = batch + Batch.prompt(chunk, done)
    return batch


batches = st.builds(_batch, st.lists(st.tuples(st.integers(1, 4096), st.integers(0, 8000)),
                                     max_size=3),
                    st.integers(0, 512), st.integers(1, 8000))


@settings(max_examples=40, deadline=None)
@given(batches, st.sampled_from(FIELDS), st.integers(1, 5000), st.sampled_from(LAYOUTS),
       st.sampled_from(sorted(COSTS)))
def test_an_iteration_never_gets_faster_when_a_batch_field_grows(batch, name, more, layout, gpu):
    """Assumption 1 of the bound: iteration_seconds is monotone in every Batch field, up to
    MONOTONE_SLACK (more (query, key) pairs read the attention efficiency at a longer
    chunk, which runs a little faster)."""
    cost = COSTS[gpu]
    grown = batch._replace(**{name: getattr(batch, name) + more})
    before = cost.iteration_seconds(layout, batch)
    assert cost.iteration_seconds(layout, grown) >= (1 - MONOTONE_SLACK) * before


@settings(max_examples=40, deadline=None)
@given(batches, st.sampled_from(LAYOUTS), st.sampled_from(sorted(COSTS)))
def test_a_batch_costs_at_least_its_tokens_bare(batch, layout, gpu):
    """Assumption 2: T tokens cost at least T bare prompt tokens or T bare decodes."""
    cost = COSTS[gpu]
    tokens = batch.prefill_tokens + batch.decode_seqs
    if tokens == 0:
        return
    bare = min(cost.iteration_seconds(layout, Batch(tokens, tokens, tokens, 1)),
               cost.iteration_seconds(layout, Batch.decode(tokens, tokens)))
    assert cost.iteration_seconds(layout, batch) >= bare


def test_the_grid_minimum_is_a_lower_bound_of_every_integer():
    def seconds(t: int) -> float:  # monotone, with a dip of seconds / t between grid points
        return 1.0 + 0.01 * t + (0.5 if t > 700 else 0.0)

    bound = min_per_token(seconds, 2000)
    assert bound <= min(seconds(t) / t for t in range(1, 2001))
    assert bound >= 0.97 * min(seconds(t) / t for t in range(1, 2001))


def _engine_knobs(engine: str, seqs: int, tokens: int, chunked: bool) -> EngineKnobs:
    return EngineKnobs(engine=engine, max_num_seqs=seqs, max_num_batched_tokens=tokens,
                       chunked_prefill=chunked or engine == "sglang")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(LAYOUTS), st.sampled_from(sorted(COSTS)),
       st.sampled_from(["vllm", "sglang", "trtllm"]), st.sampled_from([4, 16, 64, 256]),
       st.sampled_from([256, 1024, 8192]), st.booleans(), st.integers(1, 3),
       st.lists(st.tuples(st.integers(8, 600), st.integers(1, 120)), min_size=8, max_size=40))
def test_no_offline_simulation_beats_the_ceiling_or_the_floors(layout, gpu, engine, seqs, tokens,
                                                               chunked, replicas, lengths):
    cost = COSTS[gpu]
    knobs = _engine_knobs(engine, seqs, tokens, chunked)
    inputs = np.array([p for p, _ in lengths])
    outputs = np.array([o for _, o in lengths])
    bound = analytic_bound(cost, layout, knobs, Lengths.of(inputs, outputs))
    d = Deployment(replica=layout, replicas=replicas, engine=knobs)
    result = simulate(d, cost, np.zeros(inputs.size), inputs, outputs)
    assert result.finished.all()
    assert inputs.size / result.makespan_s <= replicas * bound.rate_rps * (1 + 1e-9)
    assert np.all(result.ttft_s >= bound.ttft_s * (1 - 1e-9))
    gaps = result.itl_gap_s[result.itl_weight > 0]
    assert gaps.size == 0 or gaps.min() >= bound.tpot_s * (1 - 1e-9)
    assert np.all(result.e2e_s >= bound.e2e_s * (1 - 1e-9))


def test_the_ceiling_bounds_what_used_to_beat_it():
    """Issue 13 cause 3: 8B, ISL = OSL = 128 had an 'analytic ceiling' of 76 req/s while the
    simulator sustained 152 unsaturated; the proven ceiling is above what it sustains."""
    cost, layout = COSTS["h100"], ReplicaLayout(tp=1)
    knobs = EngineKnobs(max_num_seqs=1024, max_num_batched_tokens=8192)
    inputs, outputs = np.full(2000, 128), np.full(2000, 128)
    bound = analytic_bound(cost, layout, knobs, Lengths.of(inputs, outputs))
    result = simulate(Deployment(replica=layout, engine=knobs), cost, np.zeros(2000), inputs,
                      outputs)
    sustained = 2000 / result.makespan_s
    assert sustained > 100  # what the old ceiling called impossible
    assert bound.rate_rps >= sustained
    assert bound.rate_rps < 10 * sustained  # and it still prunes
    assert math.isfinite(bound.decode_rate_rps) and bound.prefill_rate_rps > bound.rate_rps
