"""Continuous-batching simulator: timings, scheduler policies, disaggregation and routing,
checked against a linear step cost whose numbers can be worked out by hand."""

from __future__ import annotations

import heapq
import math

import numpy as np
import pytest

from sysplan.core.errors import InputError
from sysplan.costmodels.serving import simulator
from sysplan.costmodels.serving.deployment import Deployment, EngineKnobs, ReplicaLayout
from sysplan.costmodels.serving.simulator import SimResult, simulate, weighted_percentile

A, B, C = 0.01, 1e-4, 1e-6  # seconds per iteration, per token computed, per key read


class LinearCost:
    """Iteration = A + B·(prefill + decode tokens) + C·(keys read); fixed KV capacity."""

    def __init__(self, capacity_tokens: int = 1_000_000, transfer_s: float = 0.05) -> None:
        self.capacity_tokens, self.transfer_s = capacity_tokens, transfer_s

    def iteration_seconds(self, layout, batch):
        return (A + B * (batch.prefill_tokens + batch.decode_seqs)
                + C * (batch.prefill_context_tokens + batch.decode_context_tokens))

    def kv_capacity_tokens(self, layout, knobs):
        return self.capacity_tokens

    def kv_transfer_seconds(self, prefill, decode, tokens):
        return self.transfer_s


def aggregated(replicas: int = 1, routing: str = "least-loaded", **knobs) -> Deployment:
    return Deployment(replicas=replicas, routing=routing, engine=EngineKnobs(**knobs))


def disaggregated(prefill: int = 1, decode: int = 1, **knobs) -> Deployment:
    return Deployment(disaggregated=True, prefill=ReplicaLayout(), decode=ReplicaLayout(),
                      prefill_replicas=prefill, decode_replicas=decode,
                      engine=EngineKnobs(**knobs))


def run(deployment, arrival, inputs, outputs, cost=None, **kwargs) -> SimResult:
    return simulate(deployment, cost or LinearCost(), np.asarray(arrival, dtype=float),
                    np.asarray(inputs), np.asarray(outputs), **kwargs)


def request_gaps(result: SimResult, rid: int) -> np.ndarray:
    gaps, counts = result.itl_by_request()
    start = int(counts[:rid].sum())
    return gaps[start:start + counts[rid]]


def max_in_flight(result: SimResult) -> int:
    """Most requests between arrival and finish at once."""
    events = sorted([(t, 1) for t in result.arrival_s] + [(t, -1) for t in result.finish_s],
                    key=lambda event: (event[0], event[1]))
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def test_single_request_prefill_then_decode_steps():
    result = run(aggregated(), [0.0], [100], [5])
    prefill = A + B * 100 + C * 100
    steps = [A + B + C * (101 + k) for k in range(4)]  # keys read grow by one per step
    assert result.ttft_s[0] == pytest.approx(prefill)
    assert result.tpot_s[0] == pytest.approx(sum(steps) / 4)
    assert result.e2e_s[0] == pytest.approx(prefill + sum(steps))
    assert result.itl_max_s[0] == pytest.approx(steps[-1])
    assert request_gaps(result, 0) == pytest.approx(steps)
    assert result.queue_s[0] == 0 and result.iterations == 5 and result.preemptions == 0


def test_chunked_prefill_spreads_the_prompt_over_iterations():
    result = run(aggregated(max_num_batched_tokens=32, max_num_seqs=8), [0.0], [100], [2])
    chunks = [(32, 32), (32, 64), (32, 96), (4, 100)]  # (new tokens, keys read)
    assert result.ttft_s[0] == pytest.approx(sum(A + B * n + C * keys for n, keys in chunks))


def test_single_output_token_finishes_at_the_first_token():
    for deployment in (aggregated(), disaggregated()):
        result = run(deployment, [0.0], [100], [1])
        assert result.finish_s[0] == result.first_token_s[0]
        assert result.tpot_s[0] == 0 and result.itl_max_s[0] == 0


def test_vllm_preempts_when_kv_runs_out_and_trtllm_makes_requests_wait():
    cost = LinearCost(capacity_tokens=20 * 16)  # 20 blocks; each request grows to 8 blocks
    arrivals, inputs, outputs = [0.0] * 4, [60] * 4, [60] * 4
    vllm = run(aggregated(engine="vllm"), arrivals, inputs, outputs, cost)
    assert vllm.preemptions > 0 and vllm.finished.all()
    trtllm = run(aggregated(engine="trtllm"), arrivals, inputs, outputs, cost)
    assert trtllm.preemptions == 0 and trtllm.finished.all()
    # GUARANTEED_NO_EVICT reserves prompt + output (8 blocks): two run at once, two queue
    assert sorted(trtllm.queue_s > 0) == [False, False, True, True]
    spans = sorted(zip(trtllm.first_token_s - trtllm.ttft_s + trtllm.queue_s, trtllm.finish_s))
    assert all(start >= spans[k][1] for k, (start, _) in enumerate(spans[2:]))


def test_a_request_that_can_never_fit_is_rejected():
    result = run(aggregated(), [0.0, 0.0], [5000, 50], [10, 10], LinearCost(capacity_tokens=4096))
    assert result.rejected.tolist() == [True, False]
    assert math.isnan(result.finish_s[0]) and math.isnan(result.ttft_s[0])
    assert result.finished[1]


def long_prompts_during_decodes(engine: str, chunked: bool, budget: int) -> SimResult:
    """Four requests decoding 200 tokens while four 3000-token prompts arrive."""
    arrivals = [0.0] * 4 + [0.5, 1.0, 1.5, 2.0]
    deployment = aggregated(engine=engine, chunked_prefill=chunked,
                            max_num_batched_tokens=budget, max_num_seqs=8)
    return run(deployment, arrivals, [100] * 4 + [3000] * 4, [200] * 4 + [2] * 4)


@pytest.mark.parametrize("engine", ["vllm", "trtllm"])
def test_chunked_prefill_lowers_itl_p99(engine):
    whole = long_prompts_during_decodes(engine, chunked=False, budget=4096)
    chunked = long_prompts_during_decodes(engine, chunked=True, budget=256)
    p99_whole = weighted_percentile(whole.itl_gap_s, whole.itl_weight, 99)
    p99_chunked = weighted_percentile(chunked.itl_gap_s, chunked.itl_weight, 99)
    stall = A + B * 3000 + C * 3000  # a whole 3000-token prefill in one iteration
    assert p99_whole >= stall
    assert p99_chunked < 0.2 * p99_whole
    assert np.nanmax(chunked.itl_max_s) < np.nanmax(whole.itl_max_s)


def test_disaggregation_keeps_decodes_out_of_ttft_and_pays_the_transfer():
    arrivals, inputs, outputs = [0.0] * 8 + [1.0], [500] * 8 + [2000], [400] * 8 + [3]
    prefill_alone = A + B * 2000 + C * 2000
    disagg = run(disaggregated(), arrivals, inputs, outputs, LinearCost(transfer_s=0.05))
    mixed = run(aggregated(), arrivals, inputs, outputs, LinearCost(transfer_s=0.05))
    assert disagg.ttft_s[8] == pytest.approx(prefill_alone)
    assert mixed.ttft_s[8] > prefill_alone + 8 * B  # shares its iteration with 8 decodes
    single = run(disaggregated(), [0.0], [1000], [3], LinearCost(transfer_s=0.05))
    first_decode = A + B + C * 1001
    assert request_gaps(single, 0)[0] == pytest.approx(0.05 + first_decode)
    assert single.replica_roles == ("prefill", "decode")


def test_least_loaded_balances_skewed_lengths_better_than_round_robin():
    count = 40
    arrivals = np.arange(count) * 0.1
    outputs = np.where(np.arange(count) % 2 == 0, 400, 10)  # round-robin: long ones pile up
    results = {routing: run(aggregated(replicas=2, routing=routing), arrivals, [100] * count,
                            outputs) for routing in ("round-robin", "least-loaded")}
    imbalance = {routing: abs(r.busy_s[0] - r.busy_s[1]) / r.busy_s.sum()
                 for routing, r in results.items()}
    assert imbalance["least-loaded"] < imbalance["round-robin"]
    p99 = {routing: np.percentile(r.e2e_s, 99) for routing, r in results.items()}
    assert p99["least-loaded"] < p99["round-robin"]


def test_closed_loop_keeps_at_most_n_in_flight():
    rng = np.random.default_rng(3)
    inputs, outputs = rng.integers(10, 300, 12), rng.integers(1, 80, 12)
    result = run(aggregated(), np.full(12, 99.0), inputs, outputs, concurrency=3)
    assert result.finished.all()
    assert result.arrival_s[:3].tolist() == [0.0, 0.0, 0.0]
    assert max_in_flight(result) == 3
    assert set(result.arrival_s[3:]) <= set(result.finish_s)  # each finish sends the next


def test_offline_all_at_time_zero():
    result = run(aggregated(max_num_seqs=4), np.zeros(10), [200] * 10, [20] * 10)
    assert result.finished.all() and result.makespan_s == pytest.approx(result.finish_s.max())
    assert (result.queue_s > 0).sum() >= 6  # only four run at a time


def test_over_capacity_the_queue_grows_and_unfinished_requests_are_nan():
    count = 200
    arrivals = np.arange(count) * 0.02  # 50 requests/s against about 10/s of capacity
    result = run(aggregated(max_num_seqs=8), arrivals, [500] * count, [50] * count,
                 max_time_s=5.0)
    unfinished = ~result.finished
    assert unfinished.any() and result.makespan_s == 5.0
    for values in (result.finish_s, result.e2e_s, result.tpot_s, result.itl_max_s):
        assert np.isnan(values[unfinished]).all() and np.isfinite(values[~unfinished]).all()
    queue = result.queue_s[np.isfinite(result.queue_s)]
    assert np.median(queue[len(queue) // 2:]) > 2 * np.median(queue[: len(queue) // 2])


DEPLOYMENTS = {
    "vllm-chunked-tight-kv": (aggregated(replicas=2, max_num_batched_tokens=512), 3000),
    "vllm-whole-prompts": (aggregated(chunked_prefill=False, max_num_batched_tokens=1024), 3000),
    "trtllm": (aggregated(replicas=2, engine="trtllm", routing="round-robin"), 3000),
    "disaggregated": (disaggregated(2, 3, max_num_batched_tokens=512), 3000),
    "sglang": (aggregated(replicas=2, engine="sglang", max_num_batched_tokens=512), 3000),
    "trtllm-max-utilization": (aggregated(engine="trtllm", capacity_policy="max_utilization",
                                          max_num_seqs=64), 3000),
}


def random_requests(count: int = 300, seed: int = 1):
    rng = np.random.default_rng(seed)
    return (np.cumsum(rng.exponential(0.05, count)), rng.integers(1, 600, count),
            rng.integers(1, 200, count))


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_token_gaps_add_up(name):
    deployment, capacity = DEPLOYMENTS[name]
    arrivals, inputs, outputs = random_requests()
    result = run(deployment, arrivals, inputs, outputs, LinearCost(capacity_tokens=capacity))
    assert result.finished.all()
    gaps, counts = result.itl_by_request()
    assert counts.tolist() == (outputs - 1).tolist()
    bounds = np.concatenate([[0], np.cumsum(counts)])
    for rid in range(len(result)):
        mine = gaps[bounds[rid]:bounds[rid + 1]]
        assert mine.sum() == pytest.approx(result.finish_s[rid] - result.first_token_s[rid])
        assert (mine.max() if mine.size else 0.0) == pytest.approx(result.itl_max_s[rid])
    pooled = np.repeat(result.itl_gap_s, result.itl_weight)
    assert np.sort(pooled) == pytest.approx(np.sort(gaps))


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_deterministic_and_inline_stepping_changes_nothing(name, monkeypatch):
    deployment, capacity = DEPLOYMENTS[name]
    arrivals, inputs, outputs = random_requests(seed=2)
    cost = LinearCost(capacity_tokens=capacity, transfer_s=0.0123)
    first = run(deployment, arrivals, inputs, outputs, cost, seed=0)
    second = run(deployment, arrivals, inputs, outputs, cost, seed=1)

    def through_the_heap(self, replica, now):
        end = replica.start(now)
        if end is not None:
            heapq.heappush(self.heap, (end, self.ticket, replica.index, -1))
            self.ticket += 1

    monkeypatch.setattr(simulator._EventLoop, "_advance", through_the_heap)
    plain = run(deployment, arrivals, inputs, outputs, cost)
    assert_same_run(first, second, plain)


def assert_same_run(first: SimResult, *others: SimResult) -> None:
    for other in others:
        for name_ in ("arrival_s", "first_token_s", "finish_s", "itl_max_s", "queue_s",
                      "itl_gap_s", "itl_weight", "busy_s"):
            assert np.array_equal(getattr(first, name_), getattr(other, name_), equal_nan=True)
        assert (first.preemptions, first.iterations) == (other.preemptions, other.iterations)
        assert np.array_equal(first.itl_by_request()[0], other.itl_by_request()[0])


def _one_iteration_at_a_time(self, now_s, limit_s):
    return now_s


@pytest.mark.parametrize("engine", ["vllm", "sglang", "trtllm", "trtllm-max-utilization"])
@pytest.mark.parametrize("shape", ["aggregated", "disaggregated", "closed-loop", "cut-off"])
def test_decode_runs_ahead_exactly_as_one_iteration_at_a_time(engine, shape, monkeypatch):
    """``Replica.decode_ahead`` books runs of decode-only iterations at once, and decode
    replicas run ahead past other decode replicas' events: the same result to the last bit,
    with the real cost model (its ``decode_seconds``) and tight KV (preemptions, waits)."""
    from sysplan.costmodels.serving.cost import ServingCost
    from sysplan.hardware import load_cluster
    from sysplan.models import resolve_model

    knobs = {"engine": engine.split("-")[0], "max_num_seqs": 96, "block_size": 16,
             "max_num_batched_tokens": 1024, "gpu_memory_utilization": 0.2}
    if engine == "trtllm-max-utilization":
        knobs["capacity_policy"] = "max_utilization"
    layout = ReplicaLayout(tp=1)
    if shape == "disaggregated":
        deployment = Deployment(disaggregated=True, prefill=layout, decode=layout,
                                prefill_replicas=1, decode_replicas=2,
                                engine=EngineKnobs(**knobs))
    else:
        deployment = Deployment(replica=layout, replicas=2, engine=EngineKnobs(**knobs))
    cost = ServingCost(resolve_model("8b")[0], load_cluster("dgx-h100")[0])
    rng = np.random.default_rng(7)
    count = 400
    arrivals = np.cumsum(rng.exponential(1 / 12.0, count))
    inputs, outputs = rng.integers(100, 4000, count), rng.integers(1, 800, count)
    options = {"concurrency": 48} if shape == "closed-loop" else {}
    if shape == "cut-off":
        options["max_time_s"] = 0.5 * float(arrivals[-1])
    ahead = simulate(deployment, cost, arrivals, inputs, outputs, **options)
    monkeypatch.setattr(simulator.Replica, "decode_ahead", _one_iteration_at_a_time)
    monkeypatch.setattr(simulator._EventLoop, "_limit", _heap_limit)
    plain = simulate(deployment, cost, arrivals, inputs, outputs, **options)
    assert_same_run(ahead, plain)


def _heap_limit(self, replica):
    """The limit before decode replicas ran ahead: any event of any replica."""
    limit = min(self.times[self.next_rid] if self.next_rid < self.sent else math.inf,
                self.horizon_s)
    if self.closed_loop or replica.role == "decode":
        limit = min(limit, self.heap[0][0] if self.heap else math.inf)
    return limit


def test_weighted_percentile_is_the_inverted_cdf():
    rng = np.random.default_rng(0)
    values = rng.normal(size=101)
    for q in (0, 1, 50, 90, 99, 100):
        expected = np.percentile(values, q, method="inverted_cdf")
        assert weighted_percentile(values, np.ones(101), q) == expected
    weights = rng.integers(1, 5, 101)
    assert weighted_percentile(values, weights, [50, 99]) == pytest.approx(
        np.percentile(np.repeat(values, weights), [50, 99], method="inverted_cdf"))
    assert math.isnan(weighted_percentile([math.nan], [1], 50))


def test_request_metrics_adapter():
    serving = pytest.importorskip("sysplan.workloads.serving")
    arrivals, inputs, outputs = random_requests(50)
    result = run(aggregated(), arrivals, inputs, outputs)
    metrics = simulator.to_request_metrics(result)
    assert isinstance(metrics, serving.RequestMetrics)
    assert metrics.itl_all_s.size == (outputs - 1).sum()
    assert np.array_equal(metrics.ttft_s, result.ttft_s)


@pytest.mark.parametrize("arrival, inputs, outputs, kwargs", [
    ([1.0, 0.0], [10, 10], [5, 5], {}),
    ([0.0], [10], [0], {}),
    ([0.0], [10, 20], [5], {}),
    ([0.0], [10], [5], {"concurrency": 0}),
    ([0.0], [10], [5], {"max_time_s": 0.0}),
])
def test_bad_requests_are_input_errors(arrival, inputs, outputs, kwargs):
    with pytest.raises(InputError):
        run(aggregated(), arrival, inputs, outputs, **kwargs)


class RecordingCost(LinearCost):
    """LinearCost that keeps every distinct batch it priced."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.batches: list = []

    def iteration_seconds(self, layout, batch):
        self.batches.append(batch)
        return super().iteration_seconds(layout, batch)


def _poisson(n: int, rate: float, isl: int = 600, osl: int = 64, seed: int = 3):
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.exponential(1 / rate, n)), np.full(n, isl), np.full(n, osl)


def test_sglang_never_mixes_prefill_and_decode_while_vllm_does():
    arrivals = _poisson(200, 20.0)
    mixed = {}
    for engine in ("vllm", "sglang"):
        cost = RecordingCost()
        result = simulator.simulate(aggregated(engine=engine, max_num_batched_tokens=1024),
                                    cost, *arrivals)
        assert result.finished.all()
        mixed[engine] = sum(b.prefill_tokens > 0 and b.decode_seqs > 0 for b in cost.batches)
    assert mixed["sglang"] == 0
    assert mixed["vllm"] > 0


def test_sglang_admission_reserves_expected_output():
    # a KV cache that holds the prompts but not their outputs at once: SGLang admits fewer
    # requests at a time than vLLM (which admits on the prompt alone and preempts later)
    arrivals = (np.zeros(40), np.full(40, 200), np.full(40, 800))
    peak = {}
    for engine in ("vllm", "sglang"):
        cost = RecordingCost(capacity_tokens=16_000)
        result = simulator.simulate(aggregated(engine=engine, block_size=1), cost, *arrivals)
        assert result.finished.all()
        peak[engine] = max(b.decode_seqs for b in cost.batches)
    assert peak["sglang"] < peak["vllm"]


def test_prefix_cache_hits_skip_prefill_work():
    arrivals = _poisson(100, 5.0, isl=4000, osl=16)
    ttft = {}
    for rate in (0.0, 0.75):
        cost = RecordingCost()
        result = simulator.simulate(aggregated(prefix_cache_hit_rate=rate), cost, *arrivals)
        ttft[rate] = float(np.mean(result.ttft_s))
        if rate:
            assert all(b.prefill_tokens <= 8192 for b in cost.batches)
    assert ttft[0.75] < 0.6 * ttft[0.0]


def test_trtllm_max_utilization_packs_more_and_pauses_where_no_evict_waits():
    # KV for the prompts of all 40 but the outputs of few: GUARANTEED_NO_EVICT admits only
    # what fits to completion and never preempts; MAX_UTILIZATION admits on the prompt and
    # pauses (recomputes) requests when blocks run out
    arrivals = (np.zeros(40), np.full(40, 200), np.full(40, 800))
    peak, preempted = {}, {}
    for policy in ("guaranteed_no_evict", "max_utilization"):
        cost = RecordingCost(capacity_tokens=16_000)
        result = simulator.simulate(aggregated(engine="trtllm", capacity_policy=policy), cost,
                                    *arrivals)
        assert result.finished.all()
        peak[policy] = max(b.decode_seqs for b in cost.batches)
        preempted[policy] = result.preemptions
    assert peak["max_utilization"] > peak["guaranteed_no_evict"]
    assert preempted["guaranteed_no_evict"] == 0 < preempted["max_utilization"]
