"""Serving planner: which deployment serves a workload within its SLO at the lowest cost.

In stages, so a full search fits in seconds:
1. enumerate replica layouts (TP, PP, weight and KV precision) whose weights fit, and
   deployments of them (aggregated replicas, or prefill/decode pools);
2. prune with an analytic bound: a replica's TTFT is at least one prefill, its TPOT at least
   one decode step, and its sustainable rate at most 1 / (prefill + OSL x step(B) / B) with B
   the batch its KV cache holds (serving-formulas 4.2-4.4; Little's law);
3. simulate the survivors (``costmodels.serving.simulator``): with a target rate, the cheapest
   deployment meeting the SLO at that rate; without one, the highest SLO-meeting rate per GPU
   found by bisection on short simulations;
4. tune engine knobs of the best few with Optuna (``planners.serving.tuning``).
"""

from __future__ import annotations

import math
import time

from sysplan.core.errors import NoPlanFits
from sysplan.costmodels.serving.cost import ServingCost
from sysplan.costmodels.serving.deployment import Deployment, EngineKnobs, ReplicaLayout
from sysplan.costmodels.serving.simulator import simulate, to_request_metrics
from sysplan.planners.serving.space import (
    ServeQuestion,
    _layout_text,
    analytic_bound,
    base_knobs,
    candidate_deployments,
    check_question,
    describe,
    mean_lengths,
    passes_bound,
    pinned_deployment,
    replica_layouts,
)
from sysplan.planners.serving.types import ServePlan, ServeResult
from sysplan.workloads.serving import ServeWorkload, make_requests
from sysplan.workloads.slo import ServeSummary, summarize

SEARCH_REQUESTS = 400  # requests per simulation while searching (the final check uses all)
BISECTION_STEPS = 5
MAX_SIMULATIONS = 80
PER_GPU_COUNT = 4  # simulations per GPU count with a target rate
THROUGHPUT_CANDIDATES = 6  # deployments bisected without a target rate

__all__ = ["BISECTION_STEPS", "ServeQuestion", "check_question", "describe", "evaluate", "max_rate",
           "plan_serving"]


def evaluate(q: ServeQuestion, cost: ServingCost, deployment: Deployment, rate: float | None,
             num_requests: int) -> ServeSummary:
    """Simulate ``deployment`` at ``rate`` (None: the workload's own arrivals)."""
    update = {"num_requests": num_requests}
    if rate is not None:
        update["rate"] = rate
    workload = q.workload.model_copy(update=update)
    requests = make_requests(workload)
    horizon = float(requests.arrival_s[-1]) * 1.5 + 120.0
    result = simulate(deployment, cost, requests.arrival_s, requests.input_tokens,
                      requests.output_tokens, concurrency=workload.concurrency,
                      max_time_s=horizon)
    overhead = cost.eff.calibration.serve_request_overhead_s
    return summarize(to_request_metrics(result).with_request_overhead(overhead), q.slos)


def max_rate(q: ServeQuestion, cost: ServingCost, deployment: Deployment, ceiling: float,
             num_requests: int = SEARCH_REQUESTS, floor: float = 0.0,
             steps: int = BISECTION_STEPS) -> float:
    """Highest rate meeting the SLO, by bisection between ``floor`` (known to meet it, or 0)
    and the analytic ceiling."""
    low, high = floor, ceiling
    if evaluate(q, cost, deployment, high, num_requests).meets_slo:
        return high
    for _ in range(steps):
        mid = (low + high) / 2
        if evaluate(q, cost, deployment, mid, num_requests).meets_slo:
            low = mid
        else:
            high = mid
    return low


def plan_serving(q: ServeQuestion) -> ServeResult:
    """Rank deployments of ``q.model`` on up to ``q.max_gpus`` GPUs for ``q.workload``.

    Raises NoPlanFits (exit 1) when nothing fits or nothing meets the SLO, saying what came
    closest, and InputError for a question that cannot be asked.
    """
    started = time.perf_counter()
    cost = ServingCost(q.model, q.cluster)
    knobs = base_knobs(q)
    layouts = replica_layouts(q, cost, knobs)
    if not layouts:
        raise NoPlanFits(_nothing_fits(q, cost, knobs))
    isl, osl = mean_lengths(q.workload)
    bounds = [analytic_bound(cost, layout, knobs, isl, osl) for layout in layouts]
    pinned = pinned_deployment(q, knobs)
    if pinned is not None:
        pinned = pinned.model_copy(update={"routing": q.routing})
        return _evaluate_pinned(q, cost, pinned, {b.layout: b for b in bounds}, started)
    feasible = [b for b in bounds if passes_bound(b, q.slos)]
    if not feasible:
        best = min(bounds, key=lambda b: b.ttft_s)
        raise NoPlanFits(f"no layout can meet {', '.join(map(str, q.slos))}: even unloaded, "
                         f"the best ({_layout_text(best.layout)}) needs TTFT "
                         f"{best.ttft_s * 1e3:.0f} ms and TPOT {best.tpot_s * 1e3:.1f} ms")
    rate = q.workload.rate if q.workload.rate and math.isfinite(q.workload.rate) else None
    candidates = [d.model_copy(update={"routing": q.routing})
                  for d in candidate_deployments(q, feasible, rate, knobs)]
    search = _Search(q, cost, {b.layout: b for b in feasible})
    found = search.at_rate(candidates, rate) if rate is not None else search.best_rate(candidates)
    if not found:
        raise NoPlanFits(search.closest_text())
    if q.trials:
        from sysplan.planners.serving.tuning import tune

        found.sort(key=lambda item: (-item[2], item[0].num_gpus))
        tuned = [tune(search, d, r, q.trials, q.timeout_s, q.storage)[:2] for d, r, _ in found[:2]]
        if rate is None and not q.workload.concurrency and q.workload.rate is None:
            # the tuned knobs may sustain more: bisect again up to half as much again
            tuned = [(d, max_rate(q, cost, d, 1.5 * r, floor=r, steps=3) if r else r)
                     for d, r in tuned]
        found = [(d, r, search.objective(d, r)) for d, r in tuned] + found[2:]
    found.sort(key=lambda item: (-item[2], item[0].num_gpus))
    built = [_plan(search, rank, d, r, value) for rank, (d, r, value)
             in enumerate(found[:q.top], start=1)]
    built.sort(key=lambda p: (not p.summary["meets_slo"], -p.objective_value, p.num_gpus))
    plans = tuple(p.model_copy(update={"rank": rank}) for rank, p in enumerate(built, start=1))
    return ServeResult(
        model=q.model.name, cluster=q.cluster.name, engine=q.engine, max_gpus=q.max_gpus,
        workload=_workload_dict(q.workload), slos=tuple(str(s) for s in q.slos),
        searched=len(candidates), simulated=search.simulations,
        search_time_s=time.perf_counter() - started,
        deterministic=q.timeout_s is None, plans=plans, notes=_notes(q, knobs))


class _Search:
    """Simulations of one question, counted, remembering the closest miss."""

    def __init__(self, q: ServeQuestion, cost: ServingCost, bounds: dict) -> None:
        self.q, self.cost, self.bounds = q, cost, bounds
        self.simulations = 0
        self.closest: tuple[float, Deployment, ServeSummary] | None = None

    def run(self, d: Deployment, rate: float | None, n: int = SEARCH_REQUESTS) -> ServeSummary:
        """Simulate ``d`` at ``rate`` and remember how close it came."""
        self.simulations += 1
        summary = evaluate(self.q, self.cost, d, rate, n)
        score = _worst_ratio(summary)
        if self.closest is None or score < self.closest[0]:
            self.closest = (score, d, summary)
        return summary

    def objective(self, d: Deployment, rate: float | None) -> float:
        """Higher is better: minus the deployment's cost with a target rate, else output
        tokens/s per GPU at the rate it sustains."""
        if self.q.workload.rate is not None and math.isfinite(self.q.workload.rate):
            return -d.num_gpus * (self.q.gpu_hour_cost or 1.0)
        osl = mean_lengths(self.q.workload)[1]
        if rate is None:
            summary = self.run(d, None)
            return summary.output_tokens_per_s / d.num_gpus
        return rate * osl / d.num_gpus

    def at_rate(self, candidates: list[Deployment], rate: float) -> list[tuple]:
        """Cheapest deployments meeting the SLO at ``rate`` (up to ``top`` per GPU count)."""
        kept: list[tuple] = []
        by_gpus: dict[int, list[Deployment]] = {}
        for d in candidates:
            by_gpus.setdefault(d.num_gpus, []).append(d)
        for gpus in sorted(by_gpus):
            if len(kept) >= self.q.top or self.simulations >= MAX_SIMULATIONS:
                break
            # within one GPU count, the most analytic headroom first, a few of them
            group = sorted(by_gpus[gpus], key=lambda d: -self.ceiling(d))[:PER_GPU_COUNT]
            for d in group:
                if self.run(d, rate).meets_slo:
                    kept.append((d, rate, self.objective(d, rate)))
        return kept

    def best_rate(self, candidates: list[Deployment]) -> list[tuple]:
        """Without a target rate: each deployment's highest SLO-meeting rate (bisection), or
        its closed-loop / offline throughput when the workload says so."""
        kept: list[tuple] = []
        offline = self.q.workload.rate is not None and math.isinf(self.q.workload.rate)
        # the most promising by the analytic ceiling per GPU, a few of them
        ranked = sorted(candidates, key=lambda d: (-self.ceiling(d) / d.num_gpus, d.num_gpus))
        for d in ranked[:THROUGHPUT_CANDIDATES]:
            if self.q.workload.concurrency or offline:
                summary = self.run(d, None)
                if summary.meets_slo or offline:
                    kept.append((d, None, summary.output_tokens_per_s / d.num_gpus))
                continue
            ceiling = 1.2 * self.ceiling(d)
            self.simulations += BISECTION_STEPS + 1
            rate = max_rate(self.q, self.cost, d, ceiling)
            if rate > 0:
                kept.append((d, rate, self.objective(d, rate)))
        return kept

    def ceiling(self, d: Deployment) -> float:
        """Analytic rate ceiling of a deployment (sum over replicas, or the slower pool)."""
        if not d.disaggregated:
            return d.replicas * self.bounds[d.replica].rate_rps
        prefill = self.bounds[d.prefill]
        return min(d.prefill_replicas / prefill.ttft_s,
                   d.decode_replicas * self.bounds[d.decode].rate_rps)

    def closest_text(self) -> str:
        if self.closest is None:
            return "no deployment was simulated"
        _, d, summary = self.closest
        checks = "; ".join(f"{c.slo} observed {c.observed_s * 1e3:.0f} ms"
                           for c in summary.slo_checks)
        state = " (saturated)" if summary.saturated else ""
        return (f"no deployment of up to {self.q.max_gpus} GPUs meets the SLO; closest: "
                f"{describe(d)}{state}: {checks}")


def _worst_ratio(summary: ServeSummary) -> float:
    ratios = [c.observed_s / c.slo.bound_s for c in summary.slo_checks]
    ratios = [math.inf if math.isnan(r) else r for r in ratios]  # NaN (unfinished) is a miss
    return max(ratios, default=0.0) + (10.0 if summary.saturated else 0.0)


def _plan(search: _Search, rank: int, d: Deployment, rate: float | None,
          value: float) -> ServePlan:
    """The final, full-length simulation of one chosen deployment."""
    q, cost = search.q, search.cost
    target = q.workload.rate if q.workload.rate is not None else rate
    summary = search.run(d, target, q.workload.num_requests)
    if rate is not None and q.workload.rate is None:
        # the full-length run may miss where the short search runs passed: step down
        for _ in range(4):
            if summary.meets_slo:
                break
            rate = target = 0.93 * target
            summary = search.run(d, target, q.workload.num_requests)
        value = search.objective(d, rate)
    layout = d.decode if d.disaggregated else d.replica
    max_rate_rps = rate if q.workload.rate is None else None
    return ServePlan(
        rank=rank, deployment=d, num_gpus=d.num_gpus, max_rate_rps=max_rate_rps,
        rate_rps=target if target is None or math.isfinite(target) else None,
        summary=summary.to_dict(),
        kv_cache_bytes_per_gpu=cost.kv_cache_bytes_per_gpu(layout, d.engine),
        kv_tokens_per_replica=cost.kv_capacity_tokens(layout, d.engine),
        weight_bytes_per_gpu=cost.weight_bytes_per_gpu(layout), objective_value=value,
        cost_per_hour=d.num_gpus * q.gpu_hour_cost if q.gpu_hour_cost else None,
        why=_why(summary))


def _why(summary: ServeSummary) -> str:
    if not summary.slo_checks:
        return ""
    tightest = max(summary.slo_checks, key=lambda c: math.inf if math.isnan(c.observed_s)
                   else c.observed_s / c.slo.bound_s)
    return (f"tightest: {tightest.slo} at {tightest.observed_s * 1e3:.0f} ms "
            f"({tightest.observed_s / tightest.slo.bound_s:.0%} of the bound)")


def _nothing_fits(q: ServeQuestion, cost: ServingCost, knobs: EngineKnobs) -> str:
    tp = min(q.cluster.gpus_per_node, q.max_gpus)
    layout = ReplicaLayout(tp=tp, weights_precision="fp8" if "fp8" in q.cluster.gpu.peak_flops
                           else "bf16")
    weights = cost.weight_bytes_per_gpu(layout) / 2**30
    return (f"{q.model.name} does not fit on up to {q.max_gpus} {q.cluster.gpu.name}: even at "
            f"{_layout_text(layout)} its weights take {weights:.1f} GiB per GPU of "
            f"{q.cluster.gpu.memory_bytes / 2**30:.0f} GiB and one request's KV cache no longer "
            "fits; add GPUs (--gpus) or allow pipeline parallelism (--pp)")


def _workload_dict(workload: ServeWorkload) -> dict:
    data = workload.model_dump(mode="json")
    data["isl"], data["osl"] = str(workload.isl), str(workload.osl)
    return data


def _notes(q: ServeQuestion, knobs: EngineKnobs) -> tuple[str, ...]:
    notes = [(f"engine {q.engine}: max_num_seqs {knobs.max_num_seqs}, max_num_batched_tokens "
             f"{knobs.max_num_batched_tokens} unless tuned")]
    if q.workload.rate is not None and math.isinf(q.workload.rate) and q.slos:
        notes.append("--rate inf is the offline case: plans are ranked by throughput and the "
                     "SLO is reported, not required")
    if q.timeout_s is not None:
        notes.append("--timeout makes the knob search depend on machine speed: not deterministic")
    return tuple(notes)


def _evaluate_pinned(q: ServeQuestion, cost: ServingCost, d: Deployment, bounds: dict,
                     started: float) -> ServeResult:
    """Simulate the one deployment asked about at the given load, SLO met or not."""
    search = _Search(q, cost, bounds)
    rate = q.workload.rate if q.workload.rate is not None and math.isfinite(q.workload.rate) \
        else None
    layouts = [d.prefill, d.decode] if d.disaggregated else [d.replica]
    if any(lay not in bounds for lay in layouts):
        raise NoPlanFits(f"{describe(d)} does not fit: the weights and one request's KV cache "
                         f"exceed {q.cluster.gpu.name} memory")
    if rate is None and q.workload.rate is None and not q.workload.concurrency:
        rate = max_rate(q, cost, d, 1.2 * search.ceiling(d))
    plan = _plan(search, 1, d, rate, search.objective(d, rate))
    return ServeResult(
        model=q.model.name, cluster=q.cluster.name, engine=q.engine, max_gpus=q.max_gpus,
        workload=_workload_dict(q.workload), slos=tuple(str(s) for s in q.slos), searched=1,
        simulated=search.simulations, search_time_s=time.perf_counter() - started,
        deterministic=True, plans=(plan,),
        notes=(*_notes(q, d.engine), "every dimension pinned: one deployment simulated"))

