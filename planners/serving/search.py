"""Serving planner: which deployment serves a workload within its SLO at the lowest cost.

In stages, so that a full search fits in seconds and every answer printed was checked:

1. layouts (``space``) whose weights and one request fit; proven floors (``bound``) rule out
   those that cannot meet the SLO even unloaded;
2. screen (``screen``): an aggregated layout is judged on a unit of up to two replicas at its
   share of the load, and the proven ceilings prune layouts that cannot beat the best found
   (branch and bound); a few disaggregated pools are simulated whole;
3. tune the engine knobs of the best two with Optuna (``tuning``), keeping the untuned ones;
4. verify: each plan to be printed is simulated whole at the workload's full length and must
   hold the SLO (``ServeSummary.holds_slo``: each percentile's upper confidence bound within
   bound, none drifting up). A miss steps the rate down (without a target rate) or falls back
   to the untuned knobs or one more replica; with a target rate fewer replicas are tried whole
   (least-loaded routing pools them); a plan that still misses is not printed. When none is
   left the question ends in NoPlanFits (exit 1) saying what came closest.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator

from sysplan.core.errors import NoPlanFits
from sysplan.costmodels.serving.cost import ServingCost
from sysplan.costmodels.serving.deployment import Deployment, EngineKnobs, ReplicaLayout
from sysplan.planners.serving.runs import (
    RATE_TOLERANCE,
    Probe,
    Runner,
    Task,
    drive,
    evaluate,
    rate_search,
    worst_ratio,
)
from sysplan.planners.serving.screen import Candidate, Screen, mode_of
from sysplan.planners.serving.space import (
    ServeQuestion,
    _layout_text,
    check_question,
    describe,
    layout_knobs,
    pinned_deployment,
    replica_layouts,
)
from sysplan.planners.serving.types import ServePlan, ServeResult
from sysplan.workloads.serving import ServeWorkload
from sysplan.workloads.slo import ServeSummary

#: Lower rates tried after a miss in the full-length check (without a target rate), ...
STEP_DOWNS = 3
#: ... each this share of the last, at least and at most, aiming at this SLO ratio (near the
#: bound the ratio barely moves with the rate: small steps).
STEP_DOWN_RANGE = (0.6, 0.97)
STEP_DOWN_TARGET = 0.99
#: Candidates verified at full length, at most, per plan printed.
VERIFY_PER_PLAN = 3
#: Replicas screened on a unit and checked whole: higher rates tried at full length (the
#: best candidate; the others one), each at least UPWARD_STEP and at most POOLING_GAIN above.
UPWARD_STEPS = 2
UPWARD_STEP = 0.08
POOLING_GAIN = 1.25
#: With a target rate: whole-deployment checks with fewer replicas than screened, at most.
FEWER_STEPS = 3

__all__ = ["ServeQuestion", "check_question", "describe", "evaluate", "plan_serving"]


def plan_serving(q: ServeQuestion) -> ServeResult:
    """Rank deployments of ``q.model`` on up to ``q.max_gpus`` GPUs for ``q.workload``.

    Raises NoPlanFits (exit 1) when nothing fits or nothing meets the SLO, saying what came
    closest, and InputError for a question that cannot be asked.
    """
    started = time.perf_counter()
    if q.trials:
        import optuna  # noqa: F401 - loaded once, before the workers fork and tune with it
    with Runner(q, ServingCost(q.model, q.cluster, q.efficiency)) as runner:
        layouts = replica_layouts(q, runner.cost)
        if not layouts:
            raise NoPlanFits(_nothing_fits(q, runner.cost))
        pinned = pinned_deployment(q)
        if pinned is not None:
            return _evaluate_pinned(q, runner, pinned.model_copy(update={"routing": q.routing}),
                                    layouts, started)
        screen = Screen(q, runner, layouts)
        if not screen.feasible():
            bounds = [runner.bound(lay, layout_knobs(q, lay)) for lay in layouts]
            best = min(bounds, key=lambda b: b.ttft_s)
            raise NoPlanFits(f"no layout can meet {', '.join(map(str, q.slos))}: even "
                             f"unloaded, the best ({_layout_text(best.layout)}) needs TTFT "
                             f"{best.ttft_s * 1e3:.0f} ms and TPOT {best.tpot_s * 1e3:.1f} ms")
        _enter(q, "screening")
        candidates = screen.run()
        if q.trials:
            from sysplan.planners.serving.tuning import tune_candidates

            candidates = tune_candidates(screen, candidates)
        _enter(q, "verifying")
        plans = _verify(q, runner, screen, candidates)
        if not plans:
            raise NoPlanFits(screen.no_plan_text())
        return _with_pictures(q, runner, ServeResult(
            model=q.model.name, cluster=q.cluster.name, engine=q.engine, max_gpus=q.max_gpus,
            workload=_workload_dict(q.workload), slos=tuple(str(s) for s in q.slos),
            searched=screen.considered, simulated=runner.simulations,
            search_time_s=time.perf_counter() - started,
            deterministic=q.timeout_s is None, plans=plans, notes=_notes(q, plans[0])))


def _enter(q: ServeQuestion, stage: str) -> None:
    """Tell the progress counters (if any) that ``stage`` begins."""
    if q.progress is not None:
        q.progress.enter(stage)


def _with_pictures(q: ServeQuestion, runner: Runner, result: ServeResult) -> ServeResult:
    """``result`` with the points the search simulated, when asked the latency curve of the
    best deployment (``frontier``), and the paragraph saying why it wins (``explain``)."""
    from sysplan.planners.accuracy import serve_accuracy_line
    from sysplan.planners.serving.explain import explain_serving
    from sysplan.planners.serving.frontier import explored, latency_curve

    curve = latency_curve(q, runner, result.plans[0]) if q.latency_curve else ()
    result = result.model_copy(update={"explored": explored(runner), "latency_curve": curve})
    return result.model_copy(update={
        "explanation": explain_serving(q, runner.cost, result),
        "accuracy": serve_accuracy_line(q.cluster.gpu.gpu_class)})


def _verify(q: ServeQuestion, runner: Runner, screen: Screen,
            candidates: list[Candidate]) -> tuple[ServePlan, ...]:
    """The best candidates that pass the full-length check, as ranked plans. The checks of
    the best of each shape (``top`` of them) run side by side, a batch of runs at a time;
    the others, needed when one misses, one after the other."""
    order = sorted(candidates, key=lambda c: (-c.objective, c.deployment.num_gpus, c.ratio,
                                              describe(c.deployment)))
    first: list[Candidate] = []
    for c in order:  # the best of each shape, checked first, side by side
        if len(first) < q.top and not any(_same_shape(c.deployment, f.deployment)
                                          for f in first):
            first.append(c)
    # order[0] is the first tried: it gets the upward steps
    done = dict(zip(map(id, first), drive(runner, [
        (_checking(q, runner, screen, c, UPWARD_STEPS if i == 0 else 1), _as_task)
        for i, c in enumerate(first)]), strict=True))
    kept: list[tuple[Deployment, float | None, ServeSummary]] = []
    tried = 0
    for c in order:
        if len(kept) >= q.top or tried >= VERIFY_PER_PLAN * q.top:
            break
        if any(_same_shape(c.deployment, d) for d, _, _ in kept):
            continue  # one plan per shape: the best knobs found for it
        tried += 1
        found = done[id(c)] if id(c) in done else _check(q, runner, screen, c)
        if found is not None and not any(_same_shape(found[0], d) for d, _, _ in kept):
            kept.append(found)
    plans = [_plan(q, runner, screen, d, rate, summary) for d, rate, summary in kept]
    plans.sort(key=lambda p: (-p.objective_value, p.num_gpus, _tightest(p.summary),
                              describe(p.deployment)))
    return tuple(p.model_copy(update={"rank": rank}) for rank, p in enumerate(plans, start=1))


def check_requests(q: ServeQuestion) -> int:
    """Requests of the full-length check: the workload's own (``evaluate`` runs more when
    they are too few to settle). Not more: a check longer than a rerun of the workload
    would be surer of its percentiles than that rerun, and ship rates it may miss."""
    return q.workload.num_requests


def _same_shape(a: Deployment, b: Deployment) -> bool:
    """Equal but for the engine knobs."""
    return a.model_copy(update={"engine": b.engine}) == b


def _as_task(task: Task) -> Task:
    return task


Checked = tuple[Deployment, float | None, ServeSummary] | None


def _check(q: ServeQuestion, runner: Runner, screen: Screen, c: Candidate, upward: int = 1
           ) -> Checked:
    """``_checking`` run alone."""
    return drive(runner, [(_checking(q, runner, screen, c, upward), _as_task)])[0]


def _summary(d: Deployment, rate: float | None, n: int) -> Generator[Task, Probe, ServeSummary]:
    """One full-length run inside a check (``runs.drive`` runs it)."""
    return (yield Task(d, rate, n)).summary


def _checking(q: ServeQuestion, runner: Runner, screen: Screen, c: Candidate, upward: int = 1
              ) -> Generator[Task, Probe, Checked]:
    """(deployment, rate, full-length summary) of a candidate that meets the SLO whole, after
    stepping its rate down, or adding a replica, if it has to; None if it still misses. A
    generator of the runs it needs, so that several checks run side by side (``drive``)."""
    n, d = check_requests(q), c.deployment
    if screen.mode in ("offline", "closed"):
        summary = yield from _summary(d, None, n)
        return (d, None, summary) if summary.holds_slo or screen.mode == "offline" else None
    if screen.mode == "rate":
        return (yield from _fewest_whole(q, screen, c))
    rate = c.rate
    for attempt in range(1 + STEP_DOWNS):  # without a target rate: the highest that holds
        summary = yield from _summary(d, rate, n)
        if summary.holds_slo:
            if attempt:
                return d, rate, summary
            return (yield from _pooled(q, runner, c, rate, summary, upward))
        # down by what the worst ratio asks for (to STEP_DOWN_TARGET), within STEP_DOWN_RANGE
        low, high = STEP_DOWN_RANGE
        rate *= min(high, max(low, STEP_DOWN_TARGET / worst_ratio(summary)))
    return None


def _pooled(q: ServeQuestion, runner: Runner, c: Candidate, rate: float,
            summary: ServeSummary, steps: int) -> Generator[Task, Probe, Checked]:
    """A deployment screened on a unit of its replicas and checked whole at ``rate``:
    least-loaded routing over all of them usually sustains more, so up to ``steps`` higher
    rates are tried at full length, each as far above as the SLO ratio leaves headroom and
    at least UPWARD_STEP (at most POOLING_GAIN, below the ceiling), while they hold."""
    d, best = c.deployment, (rate, summary)
    if c.unit == d:
        return d, rate, summary
    for _ in range(steps):
        ratio = max(worst_ratio(best[1]), 1e-9)
        higher = min(best[0] * min(POOLING_GAIN, max(1.0 + UPWARD_STEP, 1.0 / ratio)),
                     0.99 * runner.ceiling(d))
        if higher <= best[0] * (1 + RATE_TOLERANCE):
            break
        more = yield from _summary(d, higher, check_requests(q))
        if not more.holds_slo:
            break
        best = (higher, more)
    return d, best[0], best[1]


def _fewest_whole(q: ServeQuestion, screen: Screen, c: Candidate
                  ) -> Generator[Task, Probe, Checked]:
    """With a target rate: the candidate's deployment checked whole at full length, then
    with fewer replicas (down to what the ceiling allows, bisection, FEWER_STEPS at most)
    since least-loaded routing pools them; one more replica if even it misses."""
    rate, n, d = q.workload.rate, check_requests(q), c.deployment
    summary = yield from _summary(d, rate, n)
    if not summary.holds_slo:
        more = screen.one_more_replica(d)
        if more is None:
            return None
        summary = yield from _summary(more, rate, n)
        return (more, rate, summary) if summary.holds_slo else None
    if d.disaggregated:
        return d, rate, summary
    best, failed = (d, summary), c.fewest - 1
    for _ in range(FEWER_STEPS):
        if best[0].replicas - failed <= 1:
            break
        middle = (failed + best[0].replicas) // 2
        fewer = d.model_copy(update={"replicas": middle})
        found = yield from _summary(fewer, rate, n)
        if found.holds_slo:
            best = (fewer, found)
        else:
            failed = middle
    return best[0], rate, best[1]


def _tightest(summary: dict) -> float:
    ratios = [c["observed_s"] / c["slo"]["bound_s"] for c in summary["slo_checks"]
              if c["observed_s"] is not None]
    return max(ratios, default=0.0)


def _plan(q: ServeQuestion, runner: Runner, screen: Screen, d: Deployment, rate: float | None,
          summary: ServeSummary) -> ServePlan:
    cost = runner.cost
    layout = d.decode if d.disaggregated else d.replica
    return ServePlan(
        rank=0, deployment=d, num_gpus=d.num_gpus,
        max_rate_rps=rate if screen.mode == "max-rate" else None,
        rate_rps=rate if rate is not None and math.isfinite(rate) else None,
        summary=summary.to_dict(),
        kv_cache_bytes_per_gpu=cost.kv_cache_bytes_per_gpu(layout, d.engine),
        kv_tokens_per_replica=cost.kv_capacity_tokens(layout, d.engine),
        weight_bytes_per_gpu=cost.weight_bytes_per_gpu(layout),
        objective_value=screen.objective(d, rate, summary),
        cost_per_hour=d.num_gpus * q.gpu_hour_cost if q.gpu_hour_cost else None,
        why=_why(summary))


def _why(summary: ServeSummary) -> str:
    if not summary.slo_checks:
        return ""
    tightest = max(summary.slo_checks, key=lambda c: math.inf if math.isnan(c.observed_s)
                   else c.observed_s / c.slo.bound_s)
    return (f"tightest: {tightest.slo} at {tightest.observed_s * 1e3:.0f} ms "
            f"({tightest.observed_s / tightest.slo.bound_s:.0%} of the bound)")


def _nothing_fits(q: ServeQuestion, cost: ServingCost) -> str:
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


def _notes(q: ServeQuestion, plan: ServePlan) -> tuple[str, ...]:
    knobs: EngineKnobs = plan.deployment.engine
    notes = [(f"engine {q.engine}: max_num_seqs {knobs.max_num_seqs}, max_num_batched_tokens "
              f"{knobs.max_num_batched_tokens} for #1"
              + ("" if not q.trials else " (tuned where it helped)"))]
    if mode_of(q) == "offline" and q.slos:
        notes.append("--rate inf is the offline case: plans are ranked by throughput and the "
                     "SLO is reported, not required")
    if mode_of(q) == "max-rate" and plan.max_rate_rps:
        notes.append("rates are found on a unit of up to two replicas at its share of the "
                     "load, then checked on the whole deployment at the full number of requests")
    if q.timeout_s is not None:
        notes.append("--timeout makes the knob search depend on machine speed: not deterministic")
    if q.model.sliding_window is not None:
        notes.append(f"{q.model.name}: its {q.model.sliding_window_layers} sliding-window layers "
                     "are priced as full attention (KV cache held and read for the whole "
                     "context): capacity and decode time are conservative")
    return tuple(notes)


def _evaluate_pinned(q: ServeQuestion, runner: Runner, d: Deployment,
                     layouts: list[ReplicaLayout], started: float) -> ServeResult:
    """Simulate the one deployment asked about at the given load, SLO met or not."""
    used = [d.prefill, d.decode] if d.disaggregated else [d.replica]
    if any(lay not in layouts for lay in used):
        raise NoPlanFits(f"{describe(d)} does not fit: the weights and one request's KV cache "
                         f"exceed {q.cluster.gpu.name} memory")
    mode, n = mode_of(q), check_requests(q)
    screen = Screen(q, runner, layouts)
    rate = q.workload.rate if mode == "rate" else None
    if mode == "max-rate":
        best = rate_search(runner, d, runner.ceiling(d), floor_ratio=runner.floor_ratio(d))
        found = _check(q, runner, screen, Candidate(d, d, best.rate, best.rate, 0.0, best.ratio)
                       ) if best is not None else None
        if found is not None:
            rate, summary = found[1], found[2]
        else:  # nothing met: show it at the lowest rate the search tried
            rate = min(runner.rates_probed(d), default=runner.ceiling(d) / 2)
            summary = runner.run(d, rate, n)
    else:
        summary = runner.run(d, rate, n)
    plan = _plan(q, runner, screen, d, rate, summary)
    if mode == "max-rate" and not summary.meets_slo:
        plan = plan.model_copy(update={"max_rate_rps": None})
    return _with_pictures(q, runner, ServeResult(
        model=q.model.name, cluster=q.cluster.name, engine=q.engine, max_gpus=q.max_gpus,
        workload=_workload_dict(q.workload), slos=tuple(str(s) for s in q.slos), searched=1,
        simulated=runner.simulations, search_time_s=time.perf_counter() - started,
        deterministic=True, plans=(plan.model_copy(update={"rank": 1}),),
        notes=(*_notes(q, plan), "every dimension pinned: one deployment simulated")))

