"""What a finished serving run tells: where its steady state is, whether it is saturated, and
how sure a percentile is (``workloads.slo.summarize`` reads them).

A run starts empty and its batch fills; an open-loop run that cannot keep up builds a queue
that a finite run only starts to show. So: a warm-up that covers the filling, rates over the
steady-state arrivals' window, three tests of saturation, and, for a verdict a longer run
would keep, each percentile's upper confidence bound and whether it drifts up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sysplan.workloads.slo import RequestMetrics


def _median(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else math.nan


#: Online runs finishing fewer than this share of the requests that arrived over the steady
#: window are saturated (a stable queue finishes as many as arrive, up to sampling noise).
COMPLETED_SHARE = 0.9
#: Fewest steady-state requests the growth tests (queue, completed share) are applied to.
MIN_STEADY = 8
#: Online warm-up: requests arriving within this many median latencies of the first.
WARMUP_LATENCIES = 1.5


@dataclass(frozen=True)
class Window:
    """Where one run's rates are measured: requests left out as warm-up, and the window."""

    steady: np.ndarray  # indices of the steady-state requests, in arrival order
    start_s: float
    end_s: float
    offline: bool  # every request arrived at the same instant

    @property
    def seconds(self) -> float:
        return self.end_s - self.start_s


def steady_window(metrics: RequestMetrics, warmup_fraction: float = 0.1) -> Window:
    """Warm-up and window of a run.

    Offline (every request arrives at once, as ``trtllm-bench`` and ``vllm bench throughput``
    run): no warm-up, window = first arrival to last finish (the makespan they divide by).
    Online: warm-up = the first ``warmup_fraction`` of requests by arrival, and also every
    request arriving within ``WARMUP_LATENCIES`` median end-to-end latencies of the first (the
    batch fills for about one, and its steps slow as it fills; at most half of them); window = the steady-state requests' first to last
    arrival, so the drain after the last arrival is left out.
    """
    order = np.argsort(metrics.arrival_s, kind="stable")
    arrival = metrics.arrival_s[order]
    if arrival[-1] == arrival[0]:
        finish = metrics.finish_s[np.isfinite(metrics.finish_s)]
        end = float(finish.max()) if finish.size else float(arrival[0])
        return Window(order, float(arrival[0]), end, offline=True)
    count = math.floor(len(metrics) * warmup_fraction)
    if warmup_fraction > 0:
        latency = _median(metrics.e2e_s)
        if math.isfinite(latency):
            filling = int(np.searchsorted(arrival, arrival[0] + WARMUP_LATENCIES * latency,
                                          side="left"))
            count = max(count, min(filling, len(metrics) // 2))
    steady = order[count:]
    start, end = float(arrival[count]), float(arrival[-1])
    if end <= start:  # one steady request, or all at one instant: up to their last finish
        finish = metrics.finish_s[steady]
        end = float(np.nanmax(finish)) if np.isfinite(finish).any() else start
    return Window(steady, start, end, offline=False)


def in_window(metrics: RequestMetrics, window: Window) -> np.ndarray:
    """Requests (warm-up ones included) that finished inside the window."""
    with np.errstate(invalid="ignore"):
        return (metrics.finish_s >= window.start_s) & (metrics.finish_s <= window.end_s)


def saturation(metrics: RequestMetrics, window: Window, floor_s: float = 1.0) -> str:
    """Why an online run is saturated, or "" if it is not (offline runs never are: every
    request is queued at once by construction).

    Saturated when (a) any request never finished (NaN ``finish_s``: the run was cut off),
    (b) the queue keeps growing: split the steady-state requests into quarters by arrival; the
    median queueing delay of the last quarter exceeds both twice that of the second quarter
    and ``floor_s`` (or the median end-to-end latency, if shorter), or (c) fewer requests
    finished inside the window than ``COMPLETED_SHARE`` of those that arrived in it, beyond
    the noise of a stable queue (the number in the system grew by the difference; Little's
    law). (b) and (c) need ``MIN_STEADY`` steady-state requests.
    """
    if window.offline:
        return ""
    unfinished = int(np.count_nonzero(~np.isfinite(metrics.finish_s)))
    if unfinished:
        return f"{unfinished} of {len(metrics)} requests never finished"
    steady, count = window.steady, window.steady.size
    if count < MIN_STEADY or window.seconds <= 0:
        return ""
    queue = metrics.queue_s[steady]
    second = float(np.median(queue[count // 4 : count // 2]))
    last = float(np.median(queue[3 * count // 4 :]))
    # a queueing delay matters once it is a second, or as long as a whole request takes
    floor_s = min(floor_s, _median(metrics.e2e_s[steady]))
    if last > 2 * second and last > floor_s:
        return (f"median queueing delay grew from {second:.3g} s (second quarter) to "
                f"{last:.3g} s (last quarter)")
    arrived = count - 1  # arrivals after the window opens, up to the last one
    finished = int(np.count_nonzero(in_window(metrics, window)))
    with np.errstate(invalid="ignore"):
        in_flight = int(np.count_nonzero((metrics.arrival_s <= window.start_s)
                                         & (metrics.finish_s > window.start_s)))
    # a stable queue holds about Poisson(lambda L) requests (M/G/inf; counted as the window
    # opens, before any backlog), so departures over the window trail arrivals by up to ~2
    # standard deviations of the difference, 3 sqrt(in flight)
    if finished < COMPLETED_SHARE * arrived - 3 * math.sqrt(max(in_flight, 1)):
        return (f"{finished / window.seconds:.3g} requests/s finished over the steady window, "
                f"{finished / arrived:.0%} of the {arrived / window.seconds:.3g} that arrived "
                f"(below {COMPLETED_SHARE:.0%}): the queue grows")
    return ""


#: Most batches of the batch-means bound and the drift test, ...
BATCHES = 8
#: ... each with at least this many values past the percentile, ...
TAIL_PER_BATCH = 2
#: ... and at least this many batches.
MIN_BATCHES = 4
#: One-sided 95 % Student t by degrees of freedom (the batch-means bound: batches - 1; the
#: drift slope: batches - 2).
T95 = {2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895}


def _batches(values: np.ndarray, percentile: float) -> list[np.ndarray]:
    """Consecutive batches with TAIL_PER_BATCH values past the percentile each, at most
    BATCHES of them; none if fewer than MIN_BATCHES fit."""
    count = min(BATCHES, int(values.size * (1.0 - percentile / 100.0) / TAIL_PER_BATCH))
    return np.array_split(values, count) if count >= MIN_BATCHES else []


def upper_confidence(values: np.ndarray, percentile: float) -> float:
    """One-sided upper 95 % confidence bound of the ``percentile`` of what ``values`` (in
    arrival order) sample, the larger of two: the order statistic of rank
    ceil(m q + 1.645 sqrt(m q (1 - q))) of the m finite values (the count below a quantile is
    binomial; its normal approximation, Conover, Practical Nonparametric Statistics, section
    3.2; the largest value if that rank is past them), and batch means: the percentile + t x
    the standard deviation of the percentiles of consecutive batches / sqrt(their count)
    (Law, Simulation Modeling and Analysis, section 9.5.3: requests served together are
    correlated, which the order statistic alone ignores). NaN if there are no values."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return math.nan
    q, m = percentile / 100.0, finite.size
    rank = math.ceil(m * q + 1.645 * math.sqrt(m * q * (1.0 - q)))
    bound = float(np.sort(finite)[min(max(rank, 1), m) - 1])
    parts = _batches(finite, percentile)
    if parts:
        batch = [np.percentile(part, percentile) for part in parts]
        spread = float(np.std(batch, ddof=1)) / math.sqrt(len(parts))
        bound = max(bound, float(np.percentile(finite, percentile)) + T95[len(parts) - 1] * spread)
    return bound


#: A drift counts if this many more windows of the same growth would cross the bound (a run
#: five times as long).
DRIFT_WINDOWS = 4.0
#: The drift of a percentile past this one is read on this one (its batches have the tail).
DRIFT_PERCENTILE = 90.0


def drift(values: np.ndarray, percentile: float, bound_s: float) -> tuple[float, bool]:
    """(growth over the values, in arrival order; whether it drifts): the least-squares slope
    of the percentiles (DRIFT_PERCENTILE at most) of consecutive batches times their count,
    drifting when its t statistic exceeds the one-sided 95 % t and DRIFT_WINDOWS more windows
    of that growth would take the ``percentile`` past ``bound_s`` (a queue filling slowly,
    which no test of a finished run's counts sees yet)."""
    finite = values[np.isfinite(values)]
    parts = _batches(finite, min(percentile, DRIFT_PERCENTILE))
    if not parts:
        return 0.0, False
    batch = np.array([np.percentile(part, min(percentile, DRIFT_PERCENTILE))
                      for part in parts])
    x = np.arange(len(parts)) - (len(parts) - 1) / 2
    slope = float(x @ (batch - batch.mean()) / (x @ x))  # least squares
    residual = batch - batch.mean() - slope * x
    error = math.sqrt(float(residual @ residual) / (len(parts) - 2) / float(x @ x))
    growth = slope * len(parts)
    significant = slope > T95[len(parts) - 2] * error if error > 0 else slope > 0
    projected = float(np.percentile(finite, percentile)) + DRIFT_WINDOWS * growth
    return growth, bool(significant and projected > bound_s)
