"""Serving SLOs, per-request latency metrics and their steady-state summary.

Definitions (serving-formulas section 4.4): TTFT = arrival -> first output token; TPOT =
(E2E - TTFT) / (O - 1) per request (``vllm bench serve``); ITL = every gap between consecutive
output tokens of a request (TBT in Vidur/Splitwise); E2E = arrival -> last token; queueing
delay = arrival -> first scheduled. Attainment and goodput count the requests that meet every
bound at once (DistServe, Zhong et al. OSDI'24, section 2; ``vllm bench serve --goodput``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal, get_args

import numpy as np
from pydantic import Field

from sysplan.core.errors import InputError
from sysplan.core.types import Frozen
from sysplan.core.units import parse_time
from sysplan.workloads.steady import (  # the run's statistics, re-exported
    drift,
    in_window,
    saturation,
    steady_window,
    upper_confidence,
)

Metric = Literal["ttft", "tpot", "itl", "e2e"]
METRICS: tuple[str, ...] = get_args(Metric)
#: Default SLO percentile: DistServe states attainment targets at 90 % (section 2).
DEFAULT_PERCENTILE = 90.0
#: Other spellings: vllm bench's ``e2el``; Vidur/Splitwise call ITL "time between tokens".
_ALIASES = {"e2el": "e2e", "tbt": "itl"}
_SLO_FORM = re.compile(
    r"^(?P<metric>[A-Za-z0-9]+)(?::[pP](?P<percentile>\d+(?:\.\d+)?))?=(?P<bound>.+)$"
)
_ACCEPTED_SLO = (
    "expected METRIC[:pPCT]=TIME with METRIC one of ttft, tpot, itl, e2e "
    "(e.g. ttft=200ms, ttft:p99=200ms; default p90)"
)


class Slo(Frozen):
    """One latency objective: the ``percentile`` of ``metric`` must be at most ``bound_s``."""

    metric: Metric = Field(description="ttft, tpot, itl (each token gap) or e2e.")
    percentile: float = Field(
        default=DEFAULT_PERCENTILE, gt=0, le=100, description="Percentile the bound applies to."
    )
    bound_s: float = Field(gt=0, description="Upper bound on that percentile, in seconds.")

    def __str__(self) -> str:
        return f"{self.metric}:p{self.percentile:g}={self.bound_s * 1000:g}ms"


def _parse_one_slo(text: str, field: str) -> Slo:
    match = _SLO_FORM.match(text)
    if match is None:
        raise InputError(f"{field} {text!r}: {_ACCEPTED_SLO}")
    metric = _ALIASES.get(match["metric"].lower(), match["metric"].lower())
    if metric not in METRICS:
        raise InputError(f"{field} {text!r}: unknown metric {match['metric']!r}; {_ACCEPTED_SLO}")
    percentile = float(match["percentile"] or DEFAULT_PERCENTILE)
    if not 0 < percentile <= 100:
        raise InputError(f"{field} {text!r}: percentile must be in (0, 100], e.g. p99")
    bound_s = parse_time(match["bound"].strip(), f"{field} {metric}")
    if bound_s <= 0:
        raise InputError(f"{field} {text!r}: the bound must be positive, e.g. {metric}=200ms")
    return Slo(metric=metric, percentile=percentile, bound_s=bound_s)


def parse_slos(values: str | Sequence[str] | None, field: str = "--slo") -> tuple[Slo, ...]:
    """SLOs from ``'ttft=200ms'``, ``['ttft:p99=200ms', 'tpot=50ms']`` or ``'ttft=1s,e2e=9s'``."""
    if values is None:
        return ()
    items = [values] if isinstance(values, str) else list(values)
    slos: list[Slo] = []
    for item in items:
        for part in str(item).split(","):
            slo = _parse_one_slo(part.strip(), field)
            if any((s.metric, s.percentile) == (slo.metric, slo.percentile) for s in slos):
                raise InputError(f"{field} {part.strip()!r}: {slo.metric} p{slo.percentile:g} "
                                 "is given twice; give each metric and percentile once")
            slos.append(slo)
    return tuple(slos)


def _array(values: object, dtype: type) -> np.ndarray:
    array = np.array(values, dtype=dtype)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class RequestMetrics:
    """Per-request timings of one simulated run, in seconds, one entry per request.

    A request that never finished has NaN ``finish_s``, ``e2e_s``, ``tpot_s`` and ``itl_max_s``.
    ``itl_all_s`` concatenates every token gap, request by request in array order; request i
    contributed ``itl_counts[i]`` gaps (``None``: every request finished, so output_tokens - 1).
    """

    arrival_s: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    ttft_s: np.ndarray
    tpot_s: np.ndarray
    itl_max_s: np.ndarray
    itl_all_s: np.ndarray
    e2e_s: np.ndarray
    queue_s: np.ndarray
    output_tokens: np.ndarray
    itl_counts: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name == "itl_counts" and value is None:
                value = np.maximum(np.asarray(self.output_tokens) - 1, 0)
            dtype = np.int64 if name in ("output_tokens", "itl_counts") else np.float64
            object.__setattr__(self, name, _array(value, dtype))
        sizes = {getattr(self, name).shape for name in self.__dataclass_fields__
                 if name != "itl_all_s"}
        assert sizes == {self.arrival_s.shape}, f"per-request arrays differ in length: {sizes}"
        assert self.itl_counts.sum() == self.itl_all_s.size, "itl_counts must add up to itl_all_s"

    def __len__(self) -> int:
        return self.arrival_s.size

    def with_request_overhead(self, seconds: float) -> RequestMetrics:
        """The same run seen from a client ``seconds`` away (HTTP, tokenizer, detokenizer):
        first token, finish, TTFT and end-to-end latency all later by that much."""
        if not seconds:
            return self
        return replace(self, first_token_s=self.first_token_s + seconds,
                       finish_s=self.finish_s + seconds, ttft_s=self.ttft_s + seconds,
                       e2e_s=self.e2e_s + seconds, itl_counts=self.itl_counts)

    @classmethod
    def from_token_times(
        cls,
        arrival_s: Sequence[float],
        scheduled_s: Sequence[float],
        token_times_s: Sequence[Sequence[float]],
        output_tokens: Sequence[int],
    ) -> RequestMetrics:
        """Metrics from each request's output-token times (fewer than O: it never finished)."""
        arrival = np.asarray(arrival_s, dtype=float)
        rows = [_request_row(arrival[i], np.asarray(times, dtype=float), int(output_tokens[i]))
                for i, times in enumerate(token_times_s)]
        first, finish, tpot, itl_max = np.array(rows, dtype=float).reshape(-1, 4).T
        gaps = [np.diff(np.asarray(times, dtype=float)) for times in token_times_s]
        return cls(
            arrival_s=arrival, first_token_s=first, finish_s=finish, ttft_s=first - arrival,
            tpot_s=tpot, itl_max_s=itl_max,
            itl_all_s=np.concatenate(gaps) if gaps else np.zeros(0),
            e2e_s=finish - arrival, queue_s=np.asarray(scheduled_s, dtype=float) - arrival,
            output_tokens=np.asarray(output_tokens), itl_counts=[gap.size for gap in gaps],
        )


def _request_row(arrival: float, times: np.ndarray, output_tokens: int) -> tuple[float, ...]:
    """(first token, finish, tpot, largest gap) of one request; NaN where it never got there."""
    first = times[0] if times.size else math.nan
    if times.size < output_tokens:
        return first, math.nan, math.nan, math.nan
    # TPOT = (E2E - TTFT) / (O - 1), vllm bench serve; 0 for a single output token
    tpot = (times[-1] - first) / (output_tokens - 1) if output_tokens > 1 else 0.0
    return first, times[-1], tpot, float(np.diff(times).max()) if times.size > 1 else 0.0


class LatencyPercentiles(Frozen):
    """P50/P90/P99 of one latency, in seconds (NaN when no request has a value)."""

    p50: float = Field(description="Median, seconds.")
    p90: float = Field(description="90th percentile, seconds.")
    p99: float = Field(description="99th percentile, seconds.")


class SloCheck(Frozen):
    """One SLO and what the run achieved on it."""

    slo: Slo = Field(description="The objective.")
    observed_s: float = Field(description="The run's value of that percentile, seconds.")
    met: bool = Field(description="observed_s <= slo.bound_s.")
    upper_s: float = Field(default=math.nan, description="Upper 95 % confidence bound of that "
                           "percentile from this run's sample (order statistics, batch "
                           "means), seconds.")
    drift_s: float = Field(default=0.0, description="How much that percentile grew over the "
                           "steady window (regression over consecutive batches), seconds.")
    drifting: bool = Field(default=False, description="The growth is significant and, went on "
                           "for a run five times as long, would cross the bound.")


class ServeSummary(Frozen):
    """Steady-state latency, throughput and SLO figures of one run (SI units)."""

    num_requests: int = Field(description="Steady-state requests (after warm-up).")
    num_warmup: int = Field(description="Earliest-arriving requests left out as warm-up.")
    num_finished: int = Field(description="Steady-state requests that finished.")
    duration_s: float = Field(description="Window the rates are over: offline, first arrival "
                              "to last finish (makespan); online, the steady-state requests' "
                              "first to last arrival.")
    ttft_s: LatencyPercentiles = Field(description="Time to first token.")
    tpot_s: LatencyPercentiles = Field(description="Time per output token (O > 1 requests).")
    itl_s: LatencyPercentiles = Field(description="Inter-token latency over every gap.")
    e2e_s: LatencyPercentiles = Field(description="End-to-end latency.")
    queue_s: LatencyPercentiles = Field(description="Arrival to first scheduled.")
    offered_rps: float = Field(description="Requests/s arriving in the window (offline: every "
                               "request over the makespan).")
    throughput_rps: float = Field(description="Requests/s finishing in the window.")
    output_tokens_per_s: float = Field(description="Output tokens/s of the requests finishing "
                                       "in the window.")
    goodput_rps: float = Field(description="Requests/s finishing in the window within every "
                               "SLO bound.")
    slo_attainment: float = Field(description="Share of requests meeting every bound at once.")
    slo_checks: tuple[SloCheck, ...] = Field(description="Each stated SLO and its value.")
    meets_slo: bool = Field(description="Every stated percentile within bound, every request "
                            "finished, and (online) unsaturated.")
    holds_slo: bool = Field(default=False, description="meets_slo, and with 95 % confidence: "
                            "every percentile's upper confidence bound within its bound and "
                            "none drifting up, so a longer run of the same load keeps the "
                            "verdict.")
    saturated: bool = Field(description="Online only: requests never finished, the queue kept "
                            "growing, or fewer finished than arrived.")
    saturation_reason: str = Field(default="", description="Why it counts as saturated.")

    def to_dict(self) -> dict:
        """JSON-ready dict; NaN (no value) becomes None."""
        return _nan_to_none(self.model_dump(mode="json"))


def _nan_to_none(value: object) -> object:
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(item) for item in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def _percentile(values: np.ndarray, percentile: float) -> float:
    """numpy's linear-interpolation percentile (as vllm bench) over the finite values."""
    finite = values[np.isfinite(values)]
    return float(np.percentile(finite, percentile)) if finite.size else math.nan


def _percentiles(values: np.ndarray) -> LatencyPercentiles:
    """p50, p90 and p99 as ``_percentile`` gives each (one sort for the three)."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return LatencyPercentiles(p50=math.nan, p90=math.nan, p99=math.nan)
    p50, p90, p99 = np.percentile(finite, (50, 90, 99)).tolist()
    return LatencyPercentiles(p50=p50, p90=p90, p99=p99)


def _request_values(metrics: RequestMetrics, metric: str) -> np.ndarray:
    """The per-request value a bound applies to (ITL: the request's largest gap)."""
    return {"ttft": metrics.ttft_s, "tpot": metrics.tpot_s, "itl": metrics.itl_max_s,
            "e2e": metrics.e2e_s}[metric]


def summarize(
    metrics: RequestMetrics, slos: Sequence[Slo] = (), warmup_fraction: float = 0.1,
    saturation_floor_s: float = 1.0,
) -> ServeSummary:
    """Steady-state summary of one run (warm-up and window: ``steady_window``).

    Percentiles are numpy's linear ones over the steady-state requests (ITL over all of their
    token gaps; TPOT over requests with more than one output token, as vllm bench). Rates are
    over the window: offline, every request over the makespan (``trtllm-bench``, ``vllm bench
    throughput``); online, the requests finishing inside the window per second, which in a
    stable queue equals the arrival rate (a drain tail does not dilute it). ``meets_slo``:
    every stated percentile within its bound, every steady-state request finished, and not
    saturated (see ``saturation``); ``holds_slo`` also asks it of each percentile's upper 95 %
    confidence bound (``upper_confidence``) and that none drifts up (``drift``): the verdict
    the serving planner prints.
    """
    assert 0 <= warmup_fraction < 1 and len(metrics) > 0, "need requests and a fraction in [0,1)"
    window = steady_window(metrics, warmup_fraction)
    steady = window.steady
    in_steady = np.zeros(len(metrics), dtype=bool)
    in_steady[steady] = True
    gaps = metrics.itl_all_s[np.repeat(in_steady, metrics.itl_counts)]
    tpot = metrics.tpot_s[steady][metrics.output_tokens[steady] > 1]
    distributions = {"ttft": metrics.ttft_s[steady], "tpot": tpot, "itl": gaps,
                     "e2e": metrics.e2e_s[steady]}
    finished = np.isfinite(metrics.finish_s)
    ok = finished.copy()
    for slo in slos:
        with np.errstate(invalid="ignore"):
            ok &= _request_values(metrics, slo.metric) <= slo.bound_s
    checks = []
    for slo in slos:
        observed = _percentile(distributions[slo.metric], slo.percentile)
        growth, drifting = drift(distributions[slo.metric], slo.percentile, slo.bound_s)
        checks.append(SloCheck(slo=slo, observed_s=observed, met=observed <= slo.bound_s,
                               upper_s=upper_confidence(distributions[slo.metric],
                                                        slo.percentile),
                               drift_s=growth, drifting=drifting))
    reason = saturation(metrics, window, saturation_floor_s)
    if window.offline:  # every request over the makespan
        counted, arrived = finished, len(metrics)
    else:  # finishing inside the window; arrivals after it opened
        counted, arrived = in_window(metrics, window), steady.size - 1
    per_s = 1 / window.seconds if window.seconds > 0 else 0.0
    meets = all(c.met for c in checks) and not reason and bool(finished[steady].all())
    return ServeSummary(
        num_requests=steady.size, num_warmup=len(metrics) - steady.size,
        num_finished=int(finished[steady].sum()), duration_s=window.seconds,
        ttft_s=_percentiles(distributions["ttft"]), tpot_s=_percentiles(tpot),
        itl_s=_percentiles(gaps), e2e_s=_percentiles(distributions["e2e"]),
        queue_s=_percentiles(metrics.queue_s[steady]), offered_rps=arrived * per_s,
        throughput_rps=int(counted.sum()) * per_s,
        output_tokens_per_s=float(metrics.output_tokens[counted].sum()) * per_s,
        goodput_rps=int((counted & ok).sum()) * per_s, slo_attainment=float(ok[steady].mean()),
        slo_checks=tuple(checks),
        meets_slo=meets, holds_slo=meets and all(c.upper_s <= c.slo.bound_s
                                                 and not c.drifting for c in checks),
        saturated=bool(reason), saturation_reason=reason,
    )
