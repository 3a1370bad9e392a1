"""How a serving question's runs are judged (``planners.serving.runs``, ``workloads.slo``):
offline runs to completion over the makespan, online rates over the steady window, and what
counts as saturated (issue 13 causes 1 and 4)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_cli import invoke

from sysplan.costmodels.serving.cost import ServingCost
from sysplan.costmodels.serving.deployment import Deployment, EngineKnobs, ReplicaLayout
from sysplan.exporters.serve_common import ServeExportRequest, serve_provenance_lines
from sysplan.hardware import load_cluster
from sysplan.models import resolve_model
from sysplan.planners.serving import runs
from sysplan.planners.serving.search import ServeQuestion, plan_serving
from sysplan.planners.serving.types import ServePins
from sysplan.workloads.serving import ServeWorkload
from sysplan.workloads.slo import RequestMetrics, parse_slos, summarize
from sysplan.workloads.steady import drift, upper_confidence

LLAMA8, _ = resolve_model("llama-3.1-8b")
LLAMA70, _ = resolve_model("70b")
H100, _ = load_cluster("dgx-h100")
A100, _ = load_cluster("dgx-a100")


def _question(workload: ServeWorkload, slos=(), cluster=H100, model=LLAMA8, **changes):
    fields = {"model": model, "cluster": cluster, "workload": workload,
              "slos": parse_slos(list(slos)), "max_gpus": 8}
    return ServeQuestion(**{**fields, **changes})


def test_an_offline_run_goes_to_completion_and_is_rated_over_its_makespan():
    """Cause 1: the 1.5 x last arrival + 120 s horizon cut offline runs at 120 s and counted
    only the requests finished by then (saturated, a fraction of the throughput)."""
    q = _question(ServeWorkload(isl="1000", osl="1000", rate=float("inf")), cluster=A100,
                  engine="trtllm")
    d = Deployment(replica=ReplicaLayout(tp=1), engine=EngineKnobs(
        engine="trtllm", max_num_seqs=256, max_num_batched_tokens=2048))
    summary = runs.evaluate(q, ServingCost(LLAMA8, A100), d, None, 600)
    assert summary.num_finished == summary.num_requests == 600 and summary.num_warmup == 0
    assert summary.duration_s > 150  # well past the old horizon
    assert not summary.saturated and summary.saturation_reason == ""
    assert summary.output_tokens_per_s == pytest.approx(600 * 1000 / summary.duration_s)
    assert summary.throughput_rps == pytest.approx(600 / summary.duration_s)


def test_online_rates_are_over_the_steady_window_not_the_drain():
    """Cause 1: goodput and throughput divided by first arrival to last finish were diluted
    by the drain tail (99.4 % attainment at 20 req/s printed as goodput 18.2)."""
    q = _question(ServeWorkload(isl="1000", osl="2000", rate=1.0), slos=["tpot=100ms"])
    d = Deployment(replica=ReplicaLayout(tp=1), engine=EngineKnobs(max_num_seqs=1024,
                                                                    max_num_batched_tokens=8192))
    summary = runs.evaluate(q, ServingCost(LLAMA8, H100), d, 1.0, 200)
    assert not summary.saturated and summary.slo_attainment == 1.0
    assert summary.offered_rps == pytest.approx(1.0, rel=0.1)
    # first arrival to last finish would give 0.82 here
    assert summary.throughput_rps == pytest.approx(summary.offered_rps, rel=0.07)
    assert summary.goodput_rps == pytest.approx(summary.throughput_rps, rel=1e-9)
    assert summary.output_tokens_per_s == pytest.approx(2000 * summary.throughput_rps, rel=1e-9)


def test_a_run_cut_off_at_the_horizon_is_saturated(monkeypatch):
    q = _question(ServeWorkload(isl="4000", osl="500", rate=50.0))
    monkeypatch.setattr(runs, "_horizon_s", lambda *args: 20.0)
    d = Deployment(replica=ReplicaLayout(tp=1))
    summary = runs.evaluate(q, ServingCost(LLAMA8, H100), d, 50.0, 400)
    assert summary.saturated and summary.saturation_reason.endswith("never finished")
    assert not summary.meets_slo and summary.num_finished < summary.num_requests


def test_a_short_online_run_is_run_again_until_it_can_settle():
    """A run whose arrivals span fewer than STEADY_LATENCIES latencies is extended."""
    q = _question(ServeWorkload(isl="1000", osl="1000", rate=40.0))
    d = Deployment(replica=ReplicaLayout(tp=1), engine=EngineKnobs(max_num_seqs=1024,
                                                                    max_num_batched_tokens=8192))
    summary = runs.evaluate(q, ServingCost(LLAMA8, H100), d, 40.0, 100)
    assert summary.num_requests + summary.num_warmup > 100


def _linear_backlog(arrival_rps: float, served_rps: float, count: int = 400) -> RequestMetrics:
    """Requests admitted at once (flat queueing delay) but finishing at ``served_rps``, as a
    replica that keeps admitting and preempting does: the backlog grows linearly."""
    arrival = np.arange(count) / arrival_rps
    finish = np.maximum(arrival + 0.5, np.arange(count) / served_rps + 0.5)
    times = [np.linspace(a + 0.2, f, 10) for a, f in zip(arrival, finish, strict=True)]
    return RequestMetrics.from_token_times(arrival, arrival + 0.05, times, [10] * count)


def test_finishing_fewer_than_arrive_is_saturated_even_with_a_flat_queue():
    """Cause 4: the quarter test on queueing delay missed a backlog of admitted requests."""
    summary = summarize(_linear_backlog(10.0, 7.0), parse_slos("ttft=1000s"))
    assert summary.saturated and not summary.meets_slo
    assert "finished over the steady window" in summary.saturation_reason
    assert summary.throughput_rps == pytest.approx(7.0, rel=0.05)
    assert summary.offered_rps == pytest.approx(10.0, rel=0.01)
    stable = summarize(_linear_backlog(10.0, 12.0), parse_slos("ttft=1000s"))
    assert not stable.saturated and stable.meets_slo


def test_a_pinned_deployment_behind_its_load_is_saturated():
    """Issue 13: 70B TP8 offered 10 req/s completes about 6 with a p90 TTFT over a minute,
    and was reported unsaturated and meeting a 100 s TTFT bound."""
    q = _question(ServeWorkload(isl="2000", osl="500", rate=10.0, num_requests=600),
                  slos=["ttft=100s"], model=LLAMA70, pins=ServePins(tp=8, replicas=1))
    plan = plan_serving(q).plans[0]
    assert plan.summary["saturated"] and not plan.summary["meets_slo"]
    assert plan.summary["throughput_rps"] < 0.9 * plan.summary["offered_rps"]


def test_a_missing_prediction_is_written_as_unknown():
    """Cause: exporters/serve_common.py formatted a None prediction (TypeError)."""
    d = Deployment(replica=ReplicaLayout(tp=1))
    request = ServeExportRequest(deployment=d, model=LLAMA8, cluster=H100,
                                 kv_cache_bytes_per_gpu=1e10, weight_bytes_per_gpu=1.6e10,
                                 max_model_len=4096,
                                 predicted={"ttft_p90_s": 0.25, "tpot_p90_s": None})
    lines = serve_provenance_lines(request, "vllm")
    assert "Predicted: tpot_p90_s=unknown ttft_p90_s=0.25." in lines


def test_the_offline_export_that_crashed_now_answers():
    """The issue's command (fewer requests): an offline question on one H200 as JSON."""
    result = invoke("serve", "--model", "llama-3.1-8b", "--cluster", "dgx-h200", "--engine",
                    "trtllm", "--gpus", "1", "--tp", "1", "--pp", "1", "--replicas", "1",
                    "--no-disagg", "--weights-precision", "fp8", "--kv-precision", "fp8",
                    "--isl", "20000", "--osl", "2000", "--num-requests", "200", "--rate", "inf",
                    "--json")
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)["plans"][0]
    assert not plan["saturated"] and plan["output_tokens_per_s"] > 0
    assert plan["latency_s"]["tpot"]["p90"] is not None


def test_a_percentile_of_correlated_requests_gets_a_wider_bound():
    """Requests served together share their batch: a p90 from them is less sure than from
    independent draws, and the verdict the planner prints (holds_slo) uses the wider bound."""
    rng = np.random.default_rng(0)
    independent = rng.normal(1.0, 0.1, 1600)
    correlated = 1.0 + np.repeat(rng.normal(0.0, 0.1, 16), 100) + rng.normal(0.0, 0.02, 1600)
    estimate = np.percentile(independent, 90)
    assert estimate < upper_confidence(independent, 90) < estimate * 1.05
    spread = upper_confidence(correlated, 90) - np.percentile(correlated, 90)
    assert spread > 2 * (upper_confidence(independent, 90) - estimate)


def test_a_latency_growing_through_the_run_drifts():
    rng = np.random.default_rng(1)
    growing = np.linspace(0.1, 0.3, 800) + rng.normal(0.0, 0.01, 800)
    flat = 0.2 + rng.normal(0.0, 0.01, 800)
    growth, drifting = drift(growing, 90, bound_s=0.5)
    assert drifting and growth == pytest.approx(0.2, rel=0.2)
    assert not drift(flat, 90, bound_s=0.5)[1]
    assert not drift(growing, 90, bound_s=5.0)[1]  # 4 more windows of 0.2 s stay below 5 s
