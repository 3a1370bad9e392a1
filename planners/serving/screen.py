"""Stage 2 of the serving search: which deployments are worth checking whole.

An aggregated deployment of ``R`` replicas is judged on a unit of at most ``UNIT_REPLICAS`` of
them behind least-loaded routing at their share of the load: a random split of Poisson
arrivals is Poisson again (Kleinrock, Queueing Systems I, section 2.3), and least-loaded
routing over all ``R`` waits no longer than over separate units, so what the unit sustains,
``R`` sustain at least in proportion (two replicas already pool most of what routing gains
over one: a request rarely finds both busy); the whole deployment is then checked at full
length (``search``). This prices a layout with one search whatever ``R``, and keeps each run
long enough for its queue to settle. Layouts are taken most promising first, a batch at a
time (``parallel.BATCH``), and a layout is skipped when its proven ceiling cannot beat the
``top``-th found (branch and bound) or it misses the SLO even serving requests one at a time.
Disaggregated pools are simulated whole, a few of them.

Modes: ``max-rate`` (no target rate: the highest SLO-meeting rate per GPU on the budget),
``rate`` (the fewest GPUs, or dollars, meeting the SLO at the target rate), ``offline``
(``--rate inf``: output tokens/s per GPU; the SLO is reported, not required) and ``closed``
(``--concurrency``: output tokens/s per GPU meeting the SLO).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Generator
from dataclasses import dataclass

from sysplan.costmodels.serving.deployment import Deployment, ReplicaLayout
from sysplan.planners.serving.bound import Bound
from sysplan.planners.serving.parallel import BATCH
from sysplan.planners.serving.runs import (
    SEARCH_REQUESTS,
    Runner,
    Task,
    drive,
    rate_steps,
)
from sysplan.planners.serving.space import (
    MAX_REPLICAS,
    ServeQuestion,
    _layout_text,
    aggregated,
    describe,
    disaggregated_candidates,
    is_offline,
    layout_knobs,
    mean_lengths,
)

#: Replicas in the unit an aggregated layout is screened on (module docstring).
UNIT_REPLICAS = 2
#: Disaggregated deployments simulated per question, at most.
DISAGG_CANDIDATES = 2
#: Closed-loop deployments simulated whole per question, at most.
CLOSED_CANDIDATES = 6
#: Layouts searched past the GPU budget to say how many GPUs a rate would need.
BEYOND_BUDGET_LAYOUTS = 2
#: With a target rate, a layout whose one replica misses at its share of the whole budget by
#: at most this SLO ratio is still checked whole (least-loaded routing pools the replicas).
POOLING_REACH = 1.5


def mode_of(q: ServeQuestion) -> str:
    """offline, closed, rate or max-rate (module docstring)."""
    w = q.workload
    if w.concurrency is not None:
        return "closed"
    if is_offline(w):
        return "offline"
    return "rate" if w.rate is not None else "max-rate"


@dataclass(frozen=True)
class Candidate:
    """A deployment the screen found worth checking whole."""

    deployment: Deployment  # the whole deployment
    unit: Deployment  # what the screen simulated: one replica of it, or all of it
    rate: float | None  # the whole deployment's rate to check (None: offline, closed loop)
    unit_rate: float | None  # the unit's rate in the screen
    objective: float  # higher is better (the screen's estimate)
    ratio: float  # worst SLO ratio in the screen (lower: more headroom)
    fewest: int = 1  # with a target rate: replicas the proven ceiling needs at least


def _floors_ok(bound: Bound, q: ServeQuestion, metrics: tuple[str, ...]) -> bool:
    floors = {"ttft": bound.ttft_s, "e2e": bound.e2e_s, "tpot": bound.tpot_s,
              "itl": bound.tpot_s}
    return all(floors[s.metric] <= s.bound_s for s in q.slos if s.metric in metrics)


def _alone_ok(probe, metrics: tuple[str, ...]) -> bool:
    """Whether an unloaded run holds the SLOs on ``metrics``."""
    return all(c.upper_s <= c.slo.bound_s for c in probe.summary.slo_checks
               if c.slo.metric in metrics)


def _batches(items: list, size: int = BATCH) -> Generator[list, None, None]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class Screen:
    """The screening of one question (see the module docstring)."""

    def __init__(self, q: ServeQuestion, runner: Runner, layouts: list[ReplicaLayout]) -> None:
        self.q, self.runner, self.mode = q, runner, mode_of(q)
        self.osl = mean_lengths(q.workload)[1]
        self.knobs = {lay: layout_knobs(q, lay) for lay in layouts}
        needed = self.mode != "offline"
        bounds = {lay: runner.bound(lay, self.knobs[lay]) for lay in layouts}
        self.prefill_layouts = [lay for lay in layouts if not needed
                                or _floors_ok(bounds[lay], q, ("ttft", "e2e"))]
        self.decode_layouts = [lay for lay in layouts if not needed
                               or _floors_ok(bounds[lay], q, ("tpot", "itl", "e2e"))]
        # aggregated replicas need both floors; none when --disagg is pinned
        self.layouts = [lay for lay in self.prefill_layouts if lay in self.decode_layouts
                        and q.pins.disagg is not True]
        self.considered = 0
        self.beyond: list[tuple[Deployment, float]] = []  # meets only past the budget

    # -- helpers ------------------------------------------------------------------------
    def feasible(self) -> bool:
        """Whether any deployment can still meet the SLO (aggregated or disaggregated)."""
        disagg = self.q.pins.disagg is not False and self.q.max_gpus >= 2
        return bool(self.layouts or (disagg and self.prefill_layouts and self.decode_layouts))

    def unit(self, layout: ReplicaLayout) -> Deployment:
        """One replica (served alone, its ceiling per GPU)."""
        return self.whole(layout, 1)

    def pair(self, layout: ReplicaLayout, replicas: int) -> Deployment:
        """The unit the screen simulates for ``replicas`` replicas (UNIT_REPLICAS at most)."""
        return self.whole(layout, min(UNIT_REPLICAS, replicas))

    def whole(self, layout: ReplicaLayout, replicas: int) -> Deployment:
        return aggregated(layout, replicas, self.knobs[layout]).model_copy(
            update={"routing": self.q.routing})

    def budget_replicas(self, layout: ReplicaLayout) -> int:
        pinned = self.q.pins.replicas
        if pinned:
            return pinned if pinned * layout.gpus <= self.q.max_gpus else 0
        return self.q.max_gpus // layout.gpus

    def price(self, d: Deployment) -> float:
        return d.num_gpus * (self.q.gpu_hour_cost or 1.0)

    def objective(self, d: Deployment, rate: float | None, summary) -> float:
        """Higher is better: minus the price with a target rate; the rate's output tokens/s
        per GPU without one; measured output tokens/s per GPU offline and in closed loop."""
        if self.mode == "rate":
            return -self.price(d)
        if self.mode == "max-rate":
            return (rate or 0.0) * self.osl / d.num_gpus
        return summary.output_tokens_per_s / d.num_gpus

    def _beaten(self, found: list[Candidate], best_possible: float) -> bool:
        """Whether ``top`` candidates already reach ``best_possible`` (branch and bound)."""
        values = sorted((c.objective for c in found), reverse=True)
        return len(values) >= self.q.top and best_possible <= values[self.q.top - 1]

    def _disaggregated(self, rate: float | None) -> list[Deployment]:
        """Pools whose prefill layout meets the TTFT bounds, and decode layout the token-gap
        bounds, serving requests one at a time (one batch of unloaded runs)."""
        if not (self.prefill_layouts and self.decode_layouts):
            return []
        prefills, decodes = self.prefill_layouts, self.decode_layouts
        if self.mode != "offline" and self.q.slos:
            every = list(dict.fromkeys(prefills + decodes))
            alone = dict(zip(every, self.runner.unloaded_many([self.unit(lay) for lay in every]),
                             strict=True))
            prefills = [lay for lay in prefills if _alone_ok(alone[lay], ("ttft", "e2e"))]
            decodes = [lay for lay in decodes if _alone_ok(alone[lay], ("tpot", "itl"))]
        if not (prefills and decodes):
            return []
        found = disaggregated_candidates(self.q, prefills, decodes, rate,
                                         self.knobs[decodes[0]], self.runner.ceiling)
        return [d.model_copy(update={"routing": self.q.routing}) for d in found]

    def _usable(self, ds: list[Deployment]) -> list[bool]:
        """Whether each meets the SLO serving requests one at a time (offline: always)."""
        if self.mode == "offline":
            return [True] * len(ds)
        return [probe.meets for probe in self.runner.unloaded_many(ds)]

    # -- the modes ------------------------------------------------------------------------
    def run(self) -> list[Candidate]:
        return {"max-rate": self._max_rate, "rate": self._at_rate,
                "offline": self._throughput, "closed": self._throughput}[self.mode]()

    def _promising(self, layouts: list[ReplicaLayout]) -> list[ReplicaLayout]:
        """Layouts by a guess of their SLO-meeting rate per GPU: the proven ceiling times the
        headroom left unloaded (1 - the SLO ratio of requests served alone), so that the
        first found prune the rest. A guess: it orders, the ceiling alone prunes (``_max_rate``
        orders the same way)."""
        ceilings = {lay: self.runner.ceiling(self.unit(lay)) for lay in layouts}
        alone = dict(zip(layouts, self.runner.unloaded_many([self.unit(lay) for lay in layouts]),
                         strict=True)) if self.q.slos else {}

        def guess(lay: ReplicaLayout) -> float:
            headroom = max(0.0, 1.0 - alone[lay].ratio) if self.q.slos else 1.0
            return ceilings[lay] * headroom / lay.gpus

        return sorted(layouts, key=lambda lay: (-guess(lay), -ceilings[lay] / lay.gpus,
                                                lay.gpus, describe(self.unit(lay))))

    def _rate_search(self, unit: Deployment, whole: Deployment,
                     found: list[Candidate]) -> tuple[Generator, object]:
        """A rate search of ``unit`` (its unloaded replica as the start) that must beat the
        ``top``-th candidate ``found`` so far; runs label it as ``whole``."""
        values = sorted((c.objective for c in found), reverse=True)
        need = 0.0  # the unit rate that ties the top-th candidate's tokens/s per GPU
        if len(values) >= self.q.top:
            need = values[self.q.top - 1] * unit.num_gpus / self.osl
        first = unit.prefill if unit.disaggregated else unit.replica
        alone = self.runner.unloaded(unit if unit.disaggregated else self.unit(first))
        search = rate_steps(self.runner.ceiling(unit), floor_ratio=alone.ratio, must_reach=need)
        return search, (lambda rate: self.runner.task(unit, rate, label=whole))

    def _max_rate(self) -> list[Candidate]:
        """Aggregated layouts and a few pools in one queue, most promising first (the proven
        ceiling per GPU times the headroom left serving requests alone), a batch at a time;
        an entry is skipped when its ceiling cannot beat the ``top``-th found."""
        entries = []  # (guess, ceiling per GPU, order, unit, whole)
        for lay in self.layouts:
            replicas = self.budget_replicas(lay)
            if replicas:
                whole = self.whole(lay, replicas)
                entries.append((self.unit(lay), self.pair(lay, replicas), whole))
        pools = self._disaggregated(None)[:DISAGG_CANDIDATES]
        entries += [(d, d, d) for d in pools]
        alone = self.runner.unloaded_many([first for first, _, _ in entries]) if self.q.slos \
            else [None] * len(entries)
        ranked = []
        for (first, unit, whole), probe in zip(entries, alone, strict=True):
            if probe is not None and not probe.meets:
                continue  # misses serving requests one at a time
            per_gpu = self.runner.ceiling(first) / first.num_gpus
            headroom = max(0.0, 1.0 - probe.ratio) if probe is not None else 1.0
            ranked.append((-per_gpu * headroom, -per_gpu, describe(whole), unit, whole))
        ranked.sort(key=lambda r: r[:3])
        # the best batch of each kind (aggregated layouts, pools), then the rest in turn:
        # what either finds prunes the other kind too, and a batch runs alike searches
        kinds = [[r for r in ranked if r[4].disaggregated == pooled] for pooled in (False, True)]
        ranked = kinds[0][:BATCH] + kinds[1][:BATCH] + [
            r for pair in itertools.zip_longest(kinds[0][BATCH:], kinds[1][BATCH:])
            for r in pair if r is not None]
        queue = [(unit, whole) for *_, unit, whole in ranked]
        found: list[Candidate] = []
        while queue:
            batch = []
            while queue and len(batch) < BATCH:
                unit, whole = queue.pop(0)
                per_gpu = self.runner.ceiling(unit) / unit.num_gpus
                if not self._beaten(found, per_gpu * self.osl):
                    batch.append((unit, whole))
            self.considered += len(batch)
            searches = [self._rate_search(unit, whole, found) for unit, whole in batch]
            for (unit, whole), best in zip(batch, drive(self.runner, searches), strict=True):
                if best is not None:
                    scale = 1.0 if whole.disaggregated else whole.replicas / unit.replicas
                    found.append(Candidate(whole, unit, best.rate * scale, best.rate,
                                           best.rate * self.osl / unit.num_gpus, best.ratio))
        return found

    def _fewest_replicas(self, lay: ReplicaLayout, low: int, high: int) -> Generator:
        """The fewest replicas R in [low, high] whose unit meets the SLO at its share of the
        rate (galloping, then bisection: more replicas never make one of them busier), as a
        generator of replica counts to probe (``drive``); returns (R, its probe), or (None,
        the probe at ``high``) when even ``high`` misses."""
        failed, count, ok = low - 1, low, None
        while count <= high:
            found = yield count
            if found.meets:
                ok = (count, found)
                break
            failed = count
            if count == high:
                return None, found
            count = min(high, 2 * count)
        while ok[0] - failed > 1:
            middle = (failed + ok[0]) // 2
            found = yield middle
            if found.meets:
                ok = (middle, found)
            else:
                failed = middle
        return ok

    def _replica_task(self, lay: ReplicaLayout):
        """The screen's run for ``count`` replicas: their unit at its share of the rate."""
        rate = self.q.workload.rate

        def task(count: int) -> Task:
            unit = self.pair(lay, count)
            return self.runner.task(unit, rate * unit.replicas / count,
                                    label=self.whole(lay, count))
        return task

    def _least_replicas(self, lay: ReplicaLayout) -> int:
        """Replicas the proven ceiling needs at least for the target rate."""
        return max(1, math.ceil(self.q.workload.rate / self.runner.ceiling(self.unit(lay))),
                   self.q.pins.replicas or 1)

    def _at_rate(self) -> list[Candidate]:
        found: list[Candidate] = []
        rate = self.q.workload.rate
        least = {lay: self._least_replicas(lay) for lay in self.layouts}
        order = sorted(self.layouts, key=lambda lay: (
            least[lay] * lay.gpus, -self.runner.ceiling(self.unit(lay)) / lay.gpus,
            describe(self.unit(lay))))
        queue = [lay for lay in order if least[lay] <= self.budget_replicas(lay)]
        self._usable([self.unit(lay) for lay in queue])  # served alone, a batch at a time
        while queue:
            batch = []
            while queue and len(batch) < BATCH:
                lay = queue.pop(0)
                if not self._beaten(found, -self.price(self.whole(lay, least[lay]))) and \
                        self.runner.unloaded(self.unit(lay)).meets:
                    batch.append(lay)
            self.considered += len(batch)
            searches = [(self._fewest_replicas(lay, least[lay], self.budget_replicas(lay)),
                         self._replica_task(lay)) for lay in batch]
            for lay, (count, probe) in zip(batch, drive(self.runner, searches), strict=True):
                if count is None and probe.ratio <= POOLING_REACH:
                    count = self.budget_replicas(lay)  # the unit misses: pooled, maybe not
                if count is not None:
                    whole, unit = self.whole(lay, count), self.pair(lay, count)
                    found.append(Candidate(whole, unit, rate, rate * unit.replicas / count,
                                           -self.price(whole), probe.ratio, least[lay]))
        pools = [d for d in self._disaggregated(rate)
                 if not self._beaten(found, -self.price(d))][:DISAGG_CANDIDATES]
        pools = [d for d, ok in zip(pools, self._usable(pools), strict=True) if ok]
        self.considered += len(pools)
        for d, probe in zip(pools, self.runner.probes([self.runner.task(d, rate)
                                                        for d in pools]), strict=True):
            if probe.meets:
                found.append(Candidate(d, d, rate, rate, -self.price(d), probe.ratio))
        if not found:
            self._past_budget(self._promising(order), least)
        return found

    def _past_budget(self, order: list[ReplicaLayout], least: dict) -> None:
        """Nothing meets the rate within the budget: a whole run at the budget of the most
        promising layouts (for 'closest'), and the fewest replicas they would need past it:
        one replica at its share bounds it from above, whole deployments then search down
        (for the NoPlanFits message)."""
        layouts, rate = order[:BEYOND_BUDGET_LAYOUTS], self.q.workload.rate
        self.runner.run_many([Task(self.whole(lay, self.budget_replicas(lay)), rate,
                                   SEARCH_REQUESTS) for lay in layouts
                              if self.budget_replicas(lay) >= 1])
        if self.q.pins.replicas:
            return
        low = {lay: max(least[lay], self.budget_replicas(lay) + 1) for lay in layouts}
        searches = [(self._fewest_replicas(lay, low[lay], MAX_REPLICAS), self._replica_task(lay))
                    for lay in layouts]
        above = [(lay, count) for lay, (count, _) in zip(layouts, drive(self.runner, searches),
                                                         strict=True) if count is not None]
        searches = [(self._fewest_replicas(lay, low[lay], count),
                     lambda n, lay=lay: self.runner.task(self.whole(lay, n), rate))
                    for lay, count in above]
        for (lay, count), (whole, probe) in zip(above, drive(self.runner, searches),
                                                strict=True):
            self.beyond.append((self.whole(lay, whole or count),
                                probe.ratio if whole else math.inf))

    def _throughput(self) -> list[Candidate]:
        """Offline and closed loop: output tokens/s per GPU of each layout on the budget."""
        found: list[Candidate] = []
        n, closed = self.q.workload.num_requests, self.mode == "closed"
        mean_output = float(self.runner.lengths.outputs.mean())
        ceilings = {lay: self.runner.ceiling(self.unit(lay)) for lay in self.layouts}
        queue = sorted((lay for lay in self.layouts if self.budget_replicas(lay)),
                       key=lambda lay: (-ceilings[lay] / lay.gpus, lay.gpus,
                                        describe(self.unit(lay))))
        if closed:
            queue = queue[:CLOSED_CANDIDATES]
        while queue:
            batch = []
            while queue and len(batch) < BATCH:
                lay = queue.pop(0)
                if not self._beaten(found, ceilings[lay] * mean_output / lay.gpus):
                    batch.append(lay)
            self.considered += len(batch)
            wholes = [self.whole(lay, self.budget_replicas(lay)) for lay in batch]
            # offline: one replica's share of the requests (least-loaded deals them round
            # robin when all arrive at once); closed loop: the whole deployment
            tasks = [Task(w, None, SEARCH_REQUESTS) if closed else
                     Task(self.unit(w.replica), None, math.ceil(n / w.replicas), label=w)
                     for w in wholes]
            for whole, task, summary in zip(wholes, tasks, self.runner.run_many(tasks),
                                            strict=True):
                if summary.holds_slo or not closed:
                    found.append(Candidate(whole, task.d, None, None,
                                           summary.output_tokens_per_s / task.d.num_gpus,
                                           self.runner.ratio(summary)))
        pools = self._disaggregated(None)[:DISAGG_CANDIDATES]
        self.considered += len(pools)
        tasks = [Task(d, None, SEARCH_REQUESTS if closed else n) for d in pools]
        for d, summary in zip(pools, self.runner.run_many(tasks), strict=True):
            if summary.holds_slo or not closed:
                found.append(Candidate(d, d, None, None, summary.output_tokens_per_s
                                       / d.num_gpus, self.runner.ratio(summary)))
        return found

    # -- after the screen -----------------------------------------------------------------
    def one_more_replica(self, d: Deployment) -> Deployment | None:
        """The aggregated ``d`` with one more replica, if the budget and pins allow."""
        if d.disaggregated or self.q.pins.replicas or (d.replicas + 1) * d.replica.gpus \
                > self.q.max_gpus:
            return None
        return d.model_copy(update={"replicas": d.replicas + 1})

    def no_plan_text(self) -> str:
        """Why nothing is printed: what came closest, and what would meet it past the budget."""
        text = self.runner.closest_text()
        if self.beyond:
            d, _ = min(self.beyond, key=lambda item: (self.price(item[0]), item[1]))
            text += (f"; past the budget {describe(d)} ({d.num_gpus} GPUs) meets it in a "
                     f"search run: try --gpus {d.num_gpus}")
        elif self.mode == "rate" and self.layouts:
            lay = min(self.layouts, key=lambda lay: self._least_replicas(lay) * lay.gpus)
            need = self._least_replicas(lay) * lay.gpus
            if need > self.q.max_gpus:
                text += (f"; {self.q.workload.rate:g} requests/s needs at least {need} GPUs "
                         f"({_layout_text(lay)}: its proven ceiling)")
        return text
