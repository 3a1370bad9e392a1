"""Simulations of one serving question: how long each run is, what it is judged on, and the
search for the highest rate a deployment sustains within the SLO.

A run is a ``costmodels.serving.simulator`` replay of the workload's requests summarised by
``workloads.slo.summarize``. Offline (``--rate inf``) and closed-loop runs go to completion;
open-loop runs stop at a generous horizon so that a saturated deployment still ends (and is
called saturated, its unfinished requests counted). An open-loop run whose arrivals span
fewer than ``STEADY_LATENCIES`` median latencies never reaches steady state (the batch is
still filling when the arrivals stop), so, unless a percentile misses already (it would
only miss by more), it is run again with proportionally more requests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from typing import Any, Self

import numpy as np

from sysplan.costmodels.serving.cost import ServingCost
from sysplan.costmodels.serving.deployment import Deployment, EngineKnobs, ReplicaLayout
from sysplan.costmodels.serving.simulator import simulate, to_request_metrics
from sysplan.planners.serving.bound import Bound, Lengths, analytic_bound
from sysplan.planners.serving.parallel import Workers
from sysplan.planners.serving.space import ServeQuestion, describe, workload_sample
from sysplan.workloads.serving import make_requests
from sysplan.workloads.slo import ServeSummary, summarize

SEARCH_REQUESTS = 400  # requests of a search run without a rate (closed loop, a rate's check)
#: Most requests of a search run at a rate (``Runner.search_requests``).
MAX_SEARCH_REQUESTS = 2000
#: An open-loop run is steady when its arrivals span this many median end-to-end latencies
#: (1.5 are warm-up: ``workloads.slo.steady_window``), else it is rerun longer, ...
STEADY_LATENCIES = 6.0
#: ... with at most this many times the requests.
MAX_EXTENSION = 8
#: The rate search stops when its bracket is this tight (relative) ...
RATE_TOLERANCE = 0.04
#: ... or after this many runs.
RATE_STEPS = 5
#: Worst SLO ratio a saturated run counts as in the rate search's interpolation.
SATURATED_RATIO = 4.0
#: Requests of the unloaded run (each served alone: the SLO ratio at rate zero), or when
#: every request has the same lengths.
UNLOADED_REQUESTS = 16
UNLOADED_ALIKE = 3
#: A search run is sized to span this many end-to-end latencies (a little over
#: STEADY_LATENCIES, so that ``evaluate`` rarely has to run it again longer) ...
SEARCH_LATENCIES = 1.25 * STEADY_LATENCIES
#: ... with at least this many requests above the highest SLO percentile.
TAIL_REQUESTS = 12


def worst_ratio(summary: ServeSummary) -> float:
    """Largest upper confidence bound / SLO bound over the SLOs (NaN: unfinished, a miss), at
    least SATURATED_RATIO when saturated: <= 1 is ``holds_slo``, the planner's verdict."""
    ratios = [c.upper_s / c.slo.bound_s for c in summary.slo_checks]
    worst = max((math.inf if math.isnan(r) else r for r in ratios), default=0.0)
    if summary.saturated or summary.num_finished < summary.num_requests:
        worst = max(worst, SATURATED_RATIO)
    return worst


def is_online(q: ServeQuestion) -> bool:
    """Open-loop arrivals at a finite rate (or a trace's own times)."""
    w = q.workload
    return w.concurrency is None and not (w.rate is not None and math.isinf(w.rate))


def _layouts(d: Deployment) -> list[ReplicaLayout]:
    return [d.prefill, d.decode] if d.disaggregated else [d.replica]


def _horizon_s(q: ServeQuestion, cost: ServingCost, d: Deployment, last_arrival_s: float,
               lengths: Lengths) -> float:
    """Where an open-loop run stops: twice the arrival span, two minutes, and ten times the
    longest request served alone on the slowest layout (a stable deployment finishes within
    a few latencies of the last arrival; one that has not by then is saturated)."""
    alone = max(_alone_s(cost, lay, lengths) for lay in _layouts(d))
    return 2.0 * last_arrival_s + 120.0 + 10.0 * alone


def _alone_s(cost: ServingCost, layout: ReplicaLayout, lengths: Lengths) -> float:
    """More than the longest request takes served alone: its whole prompt and output as one
    prefill, then as many decode steps at that context."""
    longest = lengths.max_total
    return (cost.prefill_seconds(layout, longest)
            + longest * cost.decode_step_seconds(layout, 1, longest))


def evaluate(q: ServeQuestion, cost: ServingCost, d: Deployment, rate: float | None,
             num_requests: int, extend: bool = True) -> ServeSummary:
    """Simulate ``d`` at ``rate`` (None: the workload's own arrivals or closed loop) with
    ``num_requests`` requests, or (``extend``) more when that is too short to reach steady
    state."""
    summary, latency_s, span_s = _run(q, cost, d, rate, num_requests)
    # a percentile missed already would only be missed by more once the batch has filled (a
    # saturation verdict of so short a run may be its filling, not its load)
    cut_off = summary.saturation_reason.endswith("never finished")
    percentiles_met = all(c.met for c in summary.slo_checks)
    if (extend and is_online(q) and percentiles_met and not cut_off
            and span_s < STEADY_LATENCIES * latency_s):
        wanted = math.ceil(num_requests * 1.25 * STEADY_LATENCIES * latency_s
                           / max(span_s, 1e-9))
        longer = min(wanted, MAX_EXTENSION * num_requests)
        summary, _, _ = _run(q, cost, d, rate, longer)
    return summary


def _run(q: ServeQuestion, cost: ServingCost, d: Deployment, rate: float | None,
         num_requests: int) -> tuple[ServeSummary, float, float]:
    """(summary, median end-to-end latency, arrival span) of one simulation."""
    update: dict = {"num_requests": num_requests}
    if rate is not None:
        update["rate"] = rate
    workload = q.workload.model_copy(update=update)
    requests = make_requests(workload)
    horizon = None
    if is_online(q):
        lengths = Lengths.of(requests.input_tokens, requests.output_tokens)
        horizon = _horizon_s(q, cost, d, float(requests.arrival_s[-1]), lengths)
    result = simulate(d, cost, requests.arrival_s, requests.input_tokens,
                      requests.output_tokens, concurrency=workload.concurrency,
                      max_time_s=horizon)
    overhead = cost.eff.calibration.serve_request_overhead_s
    metrics = to_request_metrics(result).with_request_overhead(overhead)
    finite = metrics.e2e_s[np.isfinite(metrics.e2e_s)]
    latency = float(np.median(finite)) if finite.size else math.inf
    span = float(requests.arrival_s[-1] - requests.arrival_s[0])
    return summarize(metrics, q.slos), latency, span


@dataclass(frozen=True)
class Probe:
    """One simulated rate: whether it met the SLO, how close, and its summary."""

    rate: float
    meets: bool
    ratio: float
    summary: ServeSummary


@dataclass(frozen=True)
class Task:
    """One run a search asks for; ``label``: the whole deployment a one-replica run stands
    for, as the closest miss names it; ``unloaded``: requests served one at a time."""

    d: Deployment
    rate: float | None
    n: int
    label: Deployment | None = None
    unloaded: bool = False
    trial: bool = False  # a tuning trial: ranks knobs, never extended (``evaluate``)

    @property
    def key(self) -> tuple:
        return (self.d, self.rate, self.n, self.unloaded, self.trial)


def _evaluate_task(runner: Runner, task: Task) -> ServeSummary:
    q = runner.q
    if task.unloaded:
        workload = q.workload.model_copy(update={"arrival": "constant", "cv": None,
                                                 "concurrency": None})
        q = replace(q, workload=workload)
    return evaluate(q, runner.cost, task.d, task.rate, task.n, extend=not task.trial)


def _call_recording(runner: Runner, function: Callable, args: tuple) -> tuple:
    """In a worker: ``function(runner, *args)`` and the runs it added."""
    before = set(runner.runs)
    value = function(runner, *args)
    added = [(key, summary) for key, summary in runner.runs.items() if key not in before]
    return value, added, runner.simulations


class Runner:
    """The simulations of one question: counted, memoised, run a batch at a time on the
    machine's cores (``parallel``), remembering the closest miss."""

    def __init__(self, q: ServeQuestion, cost: ServingCost) -> None:
        self.q, self.cost = q, cost
        self.simulations = 0
        self.closest: tuple[float, Deployment, ServeSummary, str] | None = None
        self._bounds: dict[tuple[ReplicaLayout, EngineKnobs], Bound] = {}
        self.runs: dict[tuple, ServeSummary] = {}
        self._labels: dict[tuple, Task] = {}
        self._latency: dict[Deployment, dict[float, float]] = {}  # rate -> median E2E
        requests = workload_sample(q.workload)
        self.lengths = Lengths.of(requests.input_tokens, requests.output_tokens)
        self.workers = Workers(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_) -> None:
        self.workers.close()

    # -- analytic ----------------------------------------------------------------------
    def bound(self, layout: ReplicaLayout, knobs: EngineKnobs) -> Bound:
        key = (layout, knobs)
        if key not in self._bounds:
            overhead = self.cost.eff.calibration.serve_request_overhead_s
            self._bounds[key] = analytic_bound(self.cost, layout, knobs, self.lengths,
                                               overhead)
        return self._bounds[key]

    def ceiling(self, d: Deployment) -> float:
        """Proven ceiling on the requests/s ``d`` sustains: the sum over its replicas, or
        the slower of its two pools."""
        if not d.disaggregated:
            return d.replicas * self.bound(d.replica, d.engine).rate_rps
        return min(d.prefill_replicas * self.bound(d.prefill, d.engine).prefill_rate_rps,
                   d.decode_replicas * self.bound(d.decode, d.engine).decode_rate_rps)

    def floor_ratio(self, d: Deployment) -> float:
        """The SLO ratio ``d`` cannot go below (its floors over the bounds)."""
        bounds = [self.bound(lay, d.engine) for lay in _layouts(d)]
        floors = {"ttft": max(b.ttft_s for b in bounds), "tpot": max(b.tpot_s for b in bounds),
                  "itl": max(b.tpot_s for b in bounds), "e2e": max(b.e2e_s for b in bounds)}
        return max((floors[s.metric] / s.bound_s for s in self.q.slos), default=0.0)

    # -- runs --------------------------------------------------------------------------
    def run_many(self, tasks: list[Task]) -> list[ServeSummary]:
        """Every task's summary (each simulated once; new ones a batch at a time)."""
        fresh = list({t.key: t for t in tasks if t.key not in self.runs}.values())
        for task, summary in zip(fresh, self.workers.map(_evaluate_task, [(t,) for t in fresh]),
                                 strict=True):
            self._record(task.key, summary, task)
        return [self.runs[t.key] for t in tasks]

    def run(self, d: Deployment, rate: float | None, n: int = SEARCH_REQUESTS, *,
            label: Deployment | None = None, trial: bool = False) -> ServeSummary:
        """Simulate ``d`` at ``rate`` with ``n`` requests (once; repeats are remembered)."""
        return self.run_many([Task(d, rate, n, label, trial=trial)])[0]

    def call_many(self, function: Callable, jobs: list[tuple]) -> list:
        """``function(runner, *args)`` for each job, a batch at a time; the runs they made
        join this runner's (in job order)."""
        results = []
        for value, added, _ in self.workers.map(_call_recording, [(function, args)
                                                                 for args in jobs]):
            for key, summary in added:
                if key not in self.runs:
                    self._record(key, summary, self._labels.get(key))
            results.append(value)
        return results

    def _record(self, key: tuple, summary: ServeSummary, task: Task | None) -> None:
        self.runs[key] = summary
        self.simulations += 1
        if self.q.progress is not None:
            self.q.progress.simulated()
        latency, rate = summary.e2e_s.p50, key[1]
        if not key[3] and rate is not None and not summary.saturated and math.isfinite(latency):
            self._latency.setdefault(key[0], {})[rate] = latency
        if task is not None:
            self._labels[key] = task
        d, rate, _, unloaded, _ = key
        score = worst_ratio(summary)
        label = task.label if task is not None and task.label is not None else d
        within = label.num_gpus <= self.q.max_gpus  # runs past the budget only advise
        if within and not unloaded and (self.closest is None or score < self.closest[0]):
            note = ""
            if label != d:
                note = (f" (one replica at {rate:.3g} requests/s simulated)" if rate else
                        " (one replica's share simulated)")
            self.closest = (score, label, summary, note)

    def task(self, d: Deployment, rate: float, n: int | None = None,
             label: Deployment | None = None) -> Task:
        """A search run of ``d`` at ``rate`` (``n`` requests, else ``search_requests``)."""
        return Task(d, rate, self.search_requests(d, rate) if n is None else n, label)

    def probes(self, tasks: list[Task]) -> list[Probe]:
        return [Probe(t.rate or 0.0, s.holds_slo, worst_ratio(s), s)
                for t, s in zip(tasks, self.run_many(tasks), strict=True)]

    def probe(self, d: Deployment, rate: float, n: int | None = None, *,
              label: Deployment | None = None) -> Probe:
        return self.probes([self.task(d, rate, n, label)])[0]

    def unloaded_task(self, d: Deployment) -> Task:
        """``d`` serving the workload's first requests one at a time (constant arrivals, each
        long after the last ended): its SLO ratio at rate zero. Requests of one length are
        all served alike: a few of them tell as much as UNLOADED_REQUESTS."""
        alone = max(_alone_s(self.cost, lay, self.lengths) for lay in _layouts(d))
        lengths = self.lengths
        alike = np.ptp(lengths.inputs) == 0 and np.ptp(lengths.outputs) == 0
        count = UNLOADED_ALIKE if alike else UNLOADED_REQUESTS
        return Task(d, 1.0 / (2.0 * alone), count, unloaded=True)

    def unloaded(self, d: Deployment) -> Probe:
        return self.unloaded_many([d])[0]

    def unloaded_many(self, ds: list[Deployment]) -> list[Probe]:
        tasks = [self.unloaded_task(d) for d in ds]
        return [Probe(0.0, s.holds_slo, worst_ratio(s), s) for s in self.run_many(tasks)]

    def search_requests(self, d: Deployment, rate: float) -> int:
        """Requests of a search run of ``d`` at ``rate``: enough to span SEARCH_LATENCIES
        end-to-end latencies and to put TAIL_REQUESTS past the highest SLO percentile, at most
        MAX_SEARCH_REQUESTS. The latency is the median ``d`` had in its unsaturated run at the
        highest rate up to this one, else served alone (it or one replica of it), else its
        floor (latency grows with the rate)."""
        known = {r: v for r, v in self._latency.get(d, {}).items() if r <= rate}
        latency = known[max(known)] if known else math.nan
        if not math.isfinite(latency):
            one = d if d.disaggregated else d.model_copy(update={"replicas": 1})
            alone = [self.runs.get(self.unloaded_task(x).key) for x in (d, one)]
            known = [s.e2e_s.p50 for s in alone if s is not None and math.isfinite(s.e2e_s.p50)]
            latency = known[0] if known else max(self.bound(lay, d.engine).e2e_s
                                                 for lay in _layouts(d))
        percentile = max((s.percentile for s in self.q.slos), default=90.0)
        tail = math.ceil(TAIL_REQUESTS / max(1.0 - percentile / 100.0, 1e-3))
        spanned = math.ceil(SEARCH_LATENCIES * rate * latency)
        return min(MAX_SEARCH_REQUESTS, max(tail, spanned))

    @staticmethod
    def ratio(summary: ServeSummary) -> float:
        return worst_ratio(summary)

    def rates_probed(self, d: Deployment) -> list[float]:
        """Rates ``d`` was simulated at so far (not counting its unloaded run)."""
        return [rate for (run, rate, _, unloaded, _) in self.runs
                if run == d and rate is not None and not unloaded]

    def closest_text(self) -> str:
        if self.closest is None:
            return (f"no deployment of up to {self.q.max_gpus} GPUs can be simulated for this "
                    "workload")
        _, d, summary, note = self.closest
        checks = "; ".join(f"{c.slo} observed {c.observed_s * 1e3:,.0f} ms"
                           + (f" (95 % bound {c.upper_s * 1e3:,.0f} ms)"
                              if c.upper_s > c.slo.bound_s >= c.observed_s else "")
                           + (" and growing" if c.drifting else "")
                           for c in summary.slo_checks)
        state = f" (saturated: {summary.saturation_reason})" if summary.saturated else ""
        return (f"no deployment of up to {self.q.max_gpus} GPUs meets the SLO; closest: "
                f"{describe(d)}{note}{state}: {checks or 'no SLO stated'}")


RateSearch = Generator[float, Probe, "Probe | None"]


def rate_steps(top: float, low: Probe | None = None, floor_ratio: float = 0.0,
               steps: int = RATE_STEPS, tolerance: float = RATE_TOLERANCE,
               must_reach: float = 0.0) -> RateSearch:
    """The highest probed rate below ``top`` (a proven ceiling: never sustainable) that
    meets the SLO, or None: a generator that yields each rate to probe and is sent its
    Probe (``drive``). ``low`` is a probe known to meet (else rate 0, whose SLO ratio is
    taken as ``floor_ratio``). With ``must_reach``, only a higher rate is of use: no probe
    goes below it, and a miss at or below it ends the search (None).

    Regula falsi on the worst SLO ratio, which grows with the rate: the next rate is where
    the chord between the highest meeting and the lowest missing probe crosses 1, kept within
    the middle 60 % of the bracket so that it shrinks every step (Illinois-like safeguard);
    it stops when the bracket is within ``tolerance`` or after ``steps`` probes.
    """
    best = low
    lo, lo_ratio = (low.rate, low.ratio) if low is not None else (0.0, floor_ratio)
    hi, hi_ratio = top, SATURATED_RATIO
    for _ in range(steps):
        if hi <= must_reach:
            return None  # whatever it sustains is of no use
        if lo > 0 and hi <= lo * (1 + tolerance):
            break
        share = (1.0 - lo_ratio) / max(hi_ratio - lo_ratio, 1e-9)
        rate = max(lo + (hi - lo) * min(max(share, 0.2), 0.8), must_reach)
        found = yield rate
        if found.meets:
            best, lo, lo_ratio = found, rate, min(found.ratio, 1.0)
            must_reach = 0.0
        else:
            hi, hi_ratio = rate, max(min(found.ratio, SATURATED_RATIO), 1.0 + 1e-6)
    return best if best is None or best.rate >= must_reach else None


def drive(runner: Runner, searches: list[tuple[Generator, Callable[[Any], Task]]]) -> list:
    """Run generator searches side by side: each yields what to probe next, ``to_task``
    turns that into a Task, and all pending probes run as one batch; returns each search's
    result, in order."""
    results: list = [None] * len(searches)
    pending: dict[int, Any] = {}
    for i, (search, _) in enumerate(searches):
        try:
            pending[i] = next(search)
        except StopIteration as stop:
            results[i] = stop.value
    while pending:
        order = sorted(pending)
        tasks = [searches[i][1](pending[i]) for i in order]
        for i, probe in zip(order, runner.probes(tasks), strict=True):
            try:
                pending[i] = searches[i][0].send(probe)
            except StopIteration as stop:
                results[i] = stop.value
                del pending[i]
    return results


def rate_search(runner: Runner, d: Deployment, top: float, **options) -> Probe | None:
    """``rate_steps`` on ``d`` alone."""
    return drive(runner, [(rate_steps(top, **options), lambda rate: runner.task(d, rate))])[0]
