"""Serving workload: length specs, arrivals, traces, SLO parsing and the steady-state summary."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sysplan.core.errors import InputError
from sysplan.workloads.serving import (
    LengthSpec,
    Requests,
    ServeWorkload,
    load_trace,
    make_requests,
    parse_arrival,
    parse_length,
)
from sysplan.workloads.slo import RequestMetrics, Slo, parse_slos, summarize

TRACES = Path(__file__).resolve().parents[1] / "examples" / "traces"
CHAT = TRACES / "chat_bursty.jsonl"
SUMMARIES = TRACES / "summarization_long.csv"


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(InputError) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- length specs -------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "kind", "mean"), [
    ("4000", "fixed", 4000), (4000, "fixed", 4000), ("normal:4000,800", "normal", 4000),
    ("lognormal:4000,0.5", "lognormal", 4000), ("uniform:1000,4000", "uniform", 2500),
    ("normal:4000,800,min=100,max=8000", "normal", 4000), (" Normal: 4000, 800 ", "normal", 4000),
])
def test_length_specs_parse(text, kind, mean):
    spec = parse_length(text, "--isl")
    assert (spec.kind, spec.mean) == (kind, mean)
    assert parse_length(str(spec), "--isl") == spec  # str() writes the spec back


@pytest.mark.parametrize(("text", "expected"), [
    ("normal:4000", "--isl normal:4000: expected normal:MEAN,STD"),
    ("lognormal:4000", "expected lognormal:MEAN,SIGMA"),
    ("uniform:1000", "expected uniform:LOW,HIGH"),
    ("poisson:3,4", "expected TOKENS (a positive integer, or with a binary suffix: 4k = 4,096), normal:MEAN,STD"),
    ("abc", "--isl abc: expected TOKENS"), ("4000.5", "expected TOKENS"), ("", "expected TOKENS"),
    ("0", "--isl 0: the length must be a positive integer"),
    ("4000,max=5000", "expected TOKENS"),
    ("uniform:4000,1000", "1 <= LOW <= HIGH"), ("normal:4000,-5", "STD must be >= 0"),
    ("lognormal:4000,-1", "SIGMA must be >= 0"), ("normal:0.5,1", "MEAN must be at least 1"),
    ("normal:4000,800,min=900,max=100", "1 <= min <= max"),
    ("normal:4000,800,mid=3", "expected normal:MEAN,STD"),
    ("normal:4000,800,max=1,max=2", "expected normal:MEAN,STD"),
    ("normal:4000,nan", "expected normal:MEAN,STD"),
])
def test_bad_length_specs_name_the_value(text, expected):
    assert expected in one_line_error(parse_length, text, "--isl")


def test_length_sampling_is_clipped_and_has_the_stated_mean():
    rng = np.random.default_rng(0)
    bounded = parse_length("normal:4000,3000,min=100,max=8000", "--isl").sample(10_000, rng)
    assert bounded.dtype == np.int64 and bounded.min() == 100 and bounded.max() == 8000
    assert parse_length("normal:5,50", "--osl").sample(1000, rng).min() == 1  # never below 1
    lognormal = parse_length("lognormal:4000,0.5", "--isl").sample(50_000, rng)
    assert lognormal.mean() == pytest.approx(4000, rel=0.02)
    uniform = parse_length("uniform:10,12", "--isl").sample(3000, rng)
    assert set(np.unique(uniform)) == {10, 11, 12}  # both ends included
    assert (LengthSpec(kind="fixed", mean_tokens=7).sample(3, rng) == 7).all()


# --- arrivals and the workload ------------------------------------------------------------


def test_arrival_specs():
    assert parse_arrival("poisson") == ("poisson", None)
    assert parse_arrival("gamma:cv=2") == parse_arrival("gamma:2") == ("gamma", 2.0)
    for bad in ("gamma", "gamma:cv=0", "gamma:cv=x", "burst", "poisson:3"):
        assert f"--arrival {bad}: expected poisson, constant, trace or gamma:cv=CV" in (
            one_line_error(parse_arrival, bad))


@pytest.mark.parametrize(("fields", "expected"), [
    ({"rate": 2, "concurrency": 8}, "--rate and --concurrency are exclusive"),
    ({"rate": -1}, "--rate -1.0: expected a positive number"),
    ({"rate": float("nan")}, "expected a positive number"),
    ({"concurrency": 0}, "--concurrency 0: expected at least 1"),
    ({"num_requests": 0}, "--num-requests 0"),
    ({"arrival": "gamma"}, "--arrival gamma needs a cv"),
    ({"cv": 2.0}, "cv applies only to --arrival gamma"),
    ({"arrival": "gamma:cv=2", "cv": 3.0}, "disagree"),
    ({"arrival": "trace"}, "--arrival trace needs --trace FILE"),
    ({"isl": "normal:4000"}, "--isl normal:4000: expected normal:MEAN,STD"),
    ({"trace": CHAT}, "--trace supplies the lengths"),
    ({"osl": None}, "--isl and --osl are both needed"),
    ({"arrival": "constant", "concurrency": 4}, "needs an open-loop --rate"),
])
def test_workload_rejects_bad_combinations(fields, expected):
    assert expected in one_line_error(ServeWorkload, **({"isl": 4000, "osl": 500} | fields))


def test_requests_are_deterministic_for_a_seed():
    workload = ServeWorkload(isl="lognormal:4000,0.5", osl="uniform:100,900", rate=5)
    first, again = make_requests(workload), make_requests(workload)
    for name in ("arrival_s", "input_tokens", "output_tokens"):
        assert np.array_equal(getattr(first, name), getattr(again, name))
    other = make_requests(workload.model_copy(update={"seed": 1}))
    assert not np.array_equal(first.input_tokens, other.input_tokens)
    faster = make_requests(workload.model_copy(update={"rate": 10}))
    assert np.array_equal(faster.input_tokens, first.input_tokens)  # lengths ignore the rate
    assert np.allclose(faster.arrival_s * 2, first.arrival_s)  # Poisson arrivals only rescale
    assert len(first) == 2000 and first.output_tokens.min() >= 100
    assert np.all(np.diff(first.arrival_s) >= 0) and first.arrival_s[0] == 0
    with pytest.raises(ValueError, match="read-only"):
        first.arrival_s[0] = 1.0


def _gaps(**fields) -> np.ndarray:
    workload = ServeWorkload(isl=100, osl=10, num_requests=20_000, **fields)
    return np.diff(make_requests(workload).arrival_s)


def test_poisson_arrivals_have_the_rate_and_unit_cv():
    gaps = _gaps(rate=8.0)
    assert 1 / gaps.mean() == pytest.approx(8.0, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)


def test_gamma_arrivals_have_the_rate_and_cv():
    gaps = _gaps(rate=8.0, arrival="gamma:cv=2")
    assert 1 / gaps.mean() == pytest.approx(8.0, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(2.0, rel=0.08)


def test_constant_offline_and_closed_loop_arrivals():
    assert np.allclose(_gaps(rate=4.0, arrival="constant"), 0.25)
    assert not _gaps(rate=math.inf).any()
    assert not _gaps(rate="inf").any()
    assert not _gaps(concurrency=16).any()
    with pytest.raises(InputError, match="needs --rate"):
        make_requests(ServeWorkload(isl=100, osl=10))


# --- traces -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [CHAT, SUMMARIES])
def test_example_traces_load(path):
    trace = load_trace(path)
    assert len(trace) == 200 and trace.arrival_s[0] == 0
    assert np.all(np.diff(trace.arrival_s) >= 0) and trace.input_tokens.min() >= 1
    assert path.stat().st_size < 20_000


def test_example_traces_have_their_documented_shape():
    chat, summaries = load_trace(CHAT), load_trace(SUMMARIES)
    chat_gaps = np.diff(chat.arrival_s)
    assert chat_gaps.std() / chat_gaps.mean() > 2  # bursty
    assert summaries.input_tokens.mean() > 10 * chat.input_tokens.mean()  # long context


def test_trace_readme_snippet_regenerates_the_traces(tmp_path):
    readme = (TRACES / "README.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", readme, re.DOTALL)[1]
    (tmp_path / "examples" / "traces").mkdir(parents=True)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    for path in (CHAT, SUMMARIES):
        assert (tmp_path / "examples" / "traces" / path.name).read_bytes() == path.read_bytes()


def test_trace_replay_resampling_and_rescaling():
    replay = make_requests(ServeWorkload(trace=CHAT, arrival="trace"))
    trace = load_trace(CHAT)
    assert len(replay) == 200 and np.array_equal(replay.arrival_s, trace.arrival_s)
    first = make_requests(ServeWorkload(trace=CHAT, arrival="trace", num_requests=50))
    assert np.array_equal(first.input_tokens, trace.input_tokens[:50])
    rescaled = make_requests(ServeWorkload(trace=SUMMARIES, arrival="trace", rate=5.0))
    assert 199 / rescaled.arrival_s[-1] == pytest.approx(5.0)
    resampled = make_requests(ServeWorkload(trace=CHAT, rate=3.0, num_requests=500))
    pairs = set(zip(trace.input_tokens.tolist(), trace.output_tokens.tolist(), strict=True))
    assert len(resampled) == 500
    assert set(zip(resampled.input_tokens.tolist(), resampled.output_tokens.tolist(),
                   strict=True)) <= pairs


def test_trace_column_aliases_and_order(tmp_path):
    csv_path = tmp_path / "t.csv"
    csv_path.write_text("timestamp,input_len,output_len,user\n105.5,10,3,a\n100,20,4,b\n\n")
    trace = load_trace(csv_path)
    assert trace.arrival_s.tolist() == [0.0, 5.5] and trace.input_tokens.tolist() == [20, 10]
    jsonl_path = tmp_path / "t.jsonl"
    jsonl_path.write_text('{"timestamp": 1, "input_len": 5, "output_len": 2.0}\n\n')
    assert load_trace(jsonl_path).output_tokens.tolist() == [2]


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("a.csv", "arrival_s,input_tokens,output_tokens\n0,10,5\n1,x,5\n",
     "line 3: input_tokens 'x' is not a positive integer"),
    ("a.csv", "arrival_s,input_tokens,output_tokens\n0,10,0\n",
     "line 2: output_tokens '0' is not a positive integer"),
    ("a.csv", "arrival_s,input_tokens\n0,10\n", "line 2: no output_tokens or output_len value"),
    ("a.csv", "arrival_s,input_tokens,output_tokens\n0,10\n", "line 2: no output_tokens"),
    ("a.csv", "arrival_s,input_tokens,output_tokens\nsoon,10,5\n",
     "line 2: arrival_s 'soon' is not a number of seconds"),
    ("a.csv", "arrival_s,input_tokens,output_tokens\n", "no requests"),
    ("a.jsonl", '{"arrival_s": 0, "input_tokens": 3, "output_tokens": 1}\n{"arrival_s": 1,\n',
     "line 2: not JSON"),
    ("a.jsonl", "[1, 2, 3]\n", "line 1: expected a JSON object"),
    ("a.jsonl", '{"arrival_s": 0, "input_tokens": 2.5, "output_tokens": 1}\n',
     "line 1: input_tokens 2.5 is not a positive integer"),
    ("a.jsonl", '{"arrival_s": 0, "input_tokens": true, "output_tokens": 1}\n',
     "input_tokens True is not a positive integer"),
    ("a.txt", "", "expected a .csv or .jsonl file"),
])
def test_malformed_traces_name_file_and_line(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text)
    message = one_line_error(load_trace, path)
    assert f"trace {path}" in message and expected in message


def test_missing_trace_file():
    assert "cannot read it" in one_line_error(load_trace, "/no/such/trace.csv")


# --- SLOs ---------------------------------------------------------------------------------


def test_slos_parse():
    slos = parse_slos(["ttft=200ms", "ttft:p99=1s,tpot=50ms", "itl:p95=100ms", "e2e=10s"])
    assert slos == (
        Slo(metric="ttft", percentile=90, bound_s=0.2), Slo(metric="ttft", percentile=99, bound_s=1),
        Slo(metric="tpot", percentile=90, bound_s=0.05),
        Slo(metric="itl", percentile=95, bound_s=0.1), Slo(metric="e2e", percentile=90, bound_s=10),
    )
    assert parse_slos("E2EL:p99.9=2s")[0] == Slo(metric="e2e", percentile=99.9, bound_s=2)
    assert parse_slos(None) == () and str(slos[1]) == "ttft:p99=1000ms"


@pytest.mark.parametrize(("text", "expected"), [
    ("ttft<200ms", "--slo 'ttft<200ms': expected METRIC[:pPCT]=TIME"),
    ("latency=1s", "unknown metric 'latency'"), ("ttft:p0=1s", "percentile must be in (0, 100]"),
    ("ttft:p101=1s", "percentile must be in (0, 100]"), ("ttft:99=1s", "expected METRIC"),
    ("ttft=200", "'200' has no unit"), ("ttft=0ms", "the bound must be positive"),
    ("ttft=1s,ttft=2s", "given twice"), ("ttft=1s,", "expected METRIC"),
])
def test_bad_slos_name_the_value(text, expected):
    assert expected in one_line_error(parse_slos, text)


# --- request metrics and the summary ------------------------------------------------------


def run(arrival, ttft, tpot, outputs=11, queue=None, unfinished=()):
    """Metrics of requests with evenly spaced tokens (``unfinished``: stopped after one)."""
    arrival = np.asarray(arrival, dtype=float)
    count = arrival.size
    ttft, tpot, outputs = (np.broadcast_to(x, count) for x in (ttft, tpot, outputs))
    times = [arrival[i] + ttft[i] + tpot[i] * np.arange(outputs[i] if i not in unfinished else 1)
             for i in range(count)]
    queue = np.zeros(count) if queue is None else np.asarray(queue)
    return RequestMetrics.from_token_times(arrival, arrival + queue, times, outputs)


#: Ten requests arriving at 0..9 s, TTFT 0.1..1.0 s, 11 output tokens, TPOT 0.04 / 0.06 s.
TTFT = np.arange(1, 11) / 10
TPOT = np.where(np.arange(10) % 2 == 0, 0.04, 0.06)


def test_from_token_times():
    metrics = RequestMetrics.from_token_times(
        [0.0, 1.0, 2.0], [0.0, 1.5, 2.0], [[0.5, 0.6, 1.0], [2.0], [2.5, 3.0]], [3, 1, 3])
    assert metrics.ttft_s.tolist() == [0.5, 1.0, 0.5]
    assert metrics.tpot_s[:2].tolist() == [0.25, 0.0] and math.isnan(metrics.tpot_s[2])
    assert metrics.itl_max_s[:2] == pytest.approx([0.4, 0.0]) and math.isnan(metrics.finish_s[2])
    assert metrics.itl_all_s == pytest.approx([0.1, 0.4, 0.5])
    assert metrics.itl_counts.tolist() == [2, 0, 1] and metrics.queue_s.tolist() == [0, 0.5, 0]


def test_percentiles_are_numpy_linear_ones():
    summary = summarize(run(np.arange(10), TTFT, TPOT), warmup_fraction=0)
    assert summary.ttft_s.p50 == pytest.approx(0.55)
    assert summary.ttft_s.p90 == pytest.approx(0.91)
    assert summary.ttft_s.p99 == pytest.approx(0.991)
    assert (summary.tpot_s.p50, summary.tpot_s.p90) == pytest.approx((0.05, 0.06))
    assert summary.itl_s.p50 == pytest.approx(0.05)  # 50 gaps of 0.04 and 50 of 0.06
    assert summary.e2e_s.p50 == pytest.approx(np.median(TTFT + 10 * TPOT))


def test_attainment_and_goodput_by_hand():
    slos = parse_slos("ttft=550ms,tpot=50ms")
    summary = summarize(run(np.arange(10), TTFT, TPOT), slos, warmup_fraction=0)
    # requests 0, 2, 4 have TTFT <= 0.55 s and TPOT 0.04 s; rates over the window of
    # arrivals 0..9 s, which requests 0..7 finish inside (8 at 9.3 s and 9 at 10.6 s do not)
    assert summary.slo_attainment == pytest.approx(0.3)
    assert summary.duration_s == pytest.approx(9.0)
    assert summary.offered_rps == pytest.approx(1.0)
    assert summary.goodput_rps == pytest.approx(3 / 9)
    assert summary.throughput_rps == pytest.approx(8 / 9)
    assert summary.output_tokens_per_s == pytest.approx(88 / 9)
    assert [check.observed_s for check in summary.slo_checks] == pytest.approx([0.91, 0.06])
    assert not summary.meets_slo and not summary.saturated
    loose = summarize(run(np.arange(10), TTFT, TPOT), parse_slos("ttft:p50=1s,itl:p99=61ms"))
    assert loose.meets_slo and loose.slo_attainment == 1


def test_warmup_drops_the_earliest_arrivals_not_the_first_rows():
    order = np.random.default_rng(3).permutation(20)
    arrival = np.arange(20.0)[order]
    ttft = np.where(arrival < 2, 50.0, 0.2)  # the two earliest requests are slow
    summary = summarize(run(arrival, ttft, 0.01), parse_slos("ttft:p99=1s,itl:p99=20ms"))
    assert (summary.num_warmup, summary.num_requests) == (2, 18)
    assert summary.ttft_s.p99 == pytest.approx(0.2) and summary.slo_attainment == 1
    assert summary.duration_s == pytest.approx(19 - 2)  # steady arrivals 2..19 s
    assert summarize(run(arrival, ttft, 0.01), warmup_fraction=0).ttft_s.p99 > 1


def test_saturation_is_a_growing_queue_or_an_unfinished_request():
    arrival = np.arange(100.0)
    growing = summarize(run(arrival, 0.1 * arrival + 0.2, 0.02, queue=0.1 * arrival),
                        parse_slos("ttft:p99=60s"))
    assert growing.saturated and not growing.meets_slo and growing.slo_checks[0].met
    assert "median queueing delay grew" in growing.saturation_reason
    flat = summarize(run(arrival, 0.3, 0.02, queue=np.full(100, 0.1)))
    assert not flat.saturated and flat.saturation_reason == ""
    small = summarize(run(arrival, 0.3, 0.02, queue=0.001 * arrival))  # grows, under 1 s
    assert not small.saturated
    unfinished = summarize(run(arrival, 0.3, 0.02, unfinished=(50,)))
    assert unfinished.saturated and unfinished.num_finished == 89
    assert unfinished.saturation_reason == "1 of 100 requests never finished"
    assert unfinished.slo_attainment == pytest.approx(89 / 90)
    offline = summarize(run(np.zeros(100), 0.1 * arrival, 0.02, queue=0.1 * arrival))
    assert not offline.saturated  # everything queued at t=0: the queue grows by construction


def test_summary_json_has_no_nan():
    summary = summarize(run([0.0, 1.0], 0.1, 0.01, outputs=1), warmup_fraction=0)
    data = summary.to_dict()
    assert data["tpot_s"]["p50"] is None and data["itl_s"]["p99"] is None
    json.dumps(data, allow_nan=False)


def test_requests_validate_their_arrays():
    with pytest.raises(AssertionError):
        Requests(arrival_s=[1.0, 0.0], input_tokens=[1, 1], output_tokens=[1, 1])


def test_lengths_take_a_binary_suffix():
    assert parse_length("4k", "--isl").mean_tokens == 4096
    assert parse_length("normal:4k,512", "--isl").mean_tokens == 4096
