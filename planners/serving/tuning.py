"""Engine-knob tuning of the screen's best deployments with Optuna (TPE, fixed seed,
constraints): ``tune`` runs one study, ``tune_candidates`` tunes the best two (in parallel
without a shared storage) and judges the tuned knobs as the screen judged the untuned.

Each trial picks ``max_num_seqs``, ``max_num_batched_tokens`` and ``gpu_memory_utilization``,
simulates the deployment, and reports a constraint with ``trial.set_constraint`` (feasible when
every SLO percentile is within its bound and the run is unsaturated). The objective at a rate
is the headroom (minus the worst observed percentile / bound), otherwise output tokens/s. With a fixed number of trials, one worker and in-memory or SQLite
storage the result is the same run to run (TPE seeded, trials sequential); a PostgreSQL
storage URL lets several machines share one study, and SQLite resumes an interrupted one.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from sysplan.core.errors import InputError
from sysplan.costmodels.serving.deployment import Deployment
from sysplan.planners.serving.runs import SEARCH_REQUESTS
from sysplan.planners.serving.space import describe

SEED = 0
#: Without a target rate, trials run this much past the rate the untuned knobs sustain.
TUNE_ABOVE = 1.1
BATCHED_TOKENS = (2048, 4096, 8192, 16384)


def storage_for(url: str | None) -> Any:
    """Optuna storage for ``url``: in-memory (None), or an RDB URL (sqlite:///, postgresql://)."""
    import optuna

    if url is None:
        return optuna.storages.InMemoryStorage()
    given = url
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if not url.startswith(("sqlite:///", "postgresql+psycopg://", "mysql")) or \
            url == "sqlite:///":
        raise InputError(f"--storage {given}: expected sqlite:///FILE or "
                         "postgresql://USER:PASS@HOST/DB")
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as error:  # noqa: BLE001 - any driver error is the user's URL or server
        raise InputError(f"--storage {given}: cannot open "
                         f"({str(error).splitlines()[0]})") from None


def study_name(runner, deployment: Deployment, rate: float | None, count: int) -> str:
    """A name that is the same for the same question, so a storage resumes the right study."""
    q = runner.q
    key = "|".join([q.model.name, q.cluster.name, q.engine, str(q.slos), str(rate), str(count),
                    q.workload.model_dump_json(), deployment.model_dump_json()])
    return "sysplan-serve-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def tune(runner, deployment: Deployment, rate: float | None, count: int, trials: int,
         timeout_s: float | None, storage: str | None, feasible_only: bool = True,
         fewest_seqs: int = 8) -> Deployment:
    """``deployment`` with the best knobs after ``trials`` trials, each a run of ``count``
    requests at ``rate`` (``runner.run``); ``deployment`` itself if no trial does better. At
    a rate, the best knobs leave the most headroom (the lowest worst SLO ratio, feasible when
    the SLO holds), which is what lets a higher rate or fewer replicas meet it; offline and
    in closed loop, the most output tokens/s (closed loop: within the SLO). Without
    ``feasible_only`` (knobs tried past the rate the untuned sustain) the best of any trial
    counts: the caller checks the SLO at its own rate. ``max_num_seqs`` is tried from
    ``fewest_seqs`` up."""
    import optuna

    from sysplan.planners.serving.runs import worst_ratio

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=SEED),
        storage=storage_for(storage), study_name=study_name(runner, deployment, rate, count),
        load_if_exists=True)
    offline = rate is None and runner.q.workload.concurrency is None

    def objective(trial) -> float:
        summary = runner.run(_with_knobs(deployment, trial, fewest_seqs), rate, count,
                             trial=rate is not None)
        worst = worst_ratio(summary)
        met = summary.holds_slo or offline
        trial.set_constraint("slo", 0.0 if met else (min(worst, 1e6) - 1.0) or 1.0)
        return -_observed_ratio(summary) if rate is not None else summary.output_tokens_per_s

    study.enqueue_trial(_knobs(deployment), skip_if_exists=True)  # the untuned knobs first
    progress = runner.q.progress
    study.optimize(objective, n_trials=trials, timeout=timeout_s, n_jobs=1,
                   callbacks=[progress.trial_done] if progress is not None else None)
    done = [t for t in study.trials if t.value is not None]
    feasible = [t for t in done if _feasible(t) or not feasible_only]
    if not feasible:
        return deployment
    best = max(feasible, key=lambda t: (t.value, -t.number))
    untuned = [t for t in done if t.params == _knobs(deployment)]
    if untuned and best.value <= untuned[0].value:
        return deployment
    return _with_knobs(deployment, best)


def _observed_ratio(summary) -> float:
    """Largest observed percentile / bound: the headroom a trial is ranked by (the point
    estimate, less noisy between knobs than the upper confidence bound its feasibility
    uses)."""
    return max((c.observed_s / c.slo.bound_s for c in summary.slo_checks), default=0.0)


def _feasible(trial) -> bool:
    """All constraint values <= 0 (Optuna keeps them by name, or as a sequence)."""
    values = trial.constraints or {}
    values = values.values() if isinstance(values, dict) else values
    return all(v <= 0 for v in values)


def _knobs(d: Deployment) -> dict[str, Any]:
    return {"max_num_seqs": d.engine.max_num_seqs,
            "max_num_batched_tokens": d.engine.max_num_batched_tokens,
            "gpu_memory_utilization": d.engine.gpu_memory_utilization}


def _with_knobs(d: Deployment, trial, fewest_seqs: int = 8) -> Deployment:
    """``d`` with the knobs a trial suggests (or holds, for a finished trial)."""
    if hasattr(trial, "suggest_int"):
        # ranges that hold the untuned knobs (an engine's own defaults may lie past ours)
        knobs = d.engine
        memory = round(knobs.gpu_memory_utilization, 3)
        values = {
            "max_num_seqs": trial.suggest_int(
                "max_num_seqs", min(fewest_seqs, knobs.max_num_seqs),
                max(1024, knobs.max_num_seqs, fewest_seqs), log=True),
            "max_num_batched_tokens": trial.suggest_categorical(
                "max_num_batched_tokens",
                tuple(sorted({*BATCHED_TOKENS, knobs.max_num_batched_tokens}))),
            "gpu_memory_utilization": trial.suggest_float(
                "gpu_memory_utilization", min(0.80, memory), max(0.95, memory), step=0.001),
        }
    else:
        values = dict(trial.params)
    return d.model_copy(update={"engine": d.engine.model_copy(update=values)})


def tune_candidates(screen, candidates: list) -> list:
    """Tune the knobs of the screen's best two candidates (side by side, unless a storage is
    shared); the tuned join the untuned, which stay as the fallback if the tuned miss at full
    length."""
    q = screen.q
    ranked = sorted(candidates, key=lambda c: (-c.objective, c.deployment.num_gpus, c.ratio,
                                               describe(c.deployment)))[:2]
    jobs = [(c.unit, _trial_rate(screen, c), _requests(screen, c), q.trials, q.timeout_s,
             q.storage, screen.mode != "max-rate", _fewest_seqs(screen, c)) for c in ranked]
    if q.progress is not None:
        q.progress.enter("tuning", trials_total=q.trials * len(jobs))
    if q.storage is None:
        tuned = screen.runner.call_many(tune, jobs)
    else:  # one study at a time in a shared storage
        tuned = [tune(screen.runner, *job) for job in jobs]
    from sysplan.planners.serving.runs import drive

    judged = [(_retuned(screen, c, unit, _requests(screen, c)), lambda task: task)
              for c, unit in zip(ranked, tuned, strict=True) if unit != c.unit]
    return list(candidates) + [found for found in drive(screen.runner, judged)
                               if found is not None]


def _fewest_seqs(screen, c) -> int:
    """The smallest ``max_num_seqs`` worth a trial: what Little's law needs at the trial
    rate, that rate times the latency of a request served alone over the replicas that
    decode (fewer sequences cannot keep up with it), and at least 8."""
    rate = _trial_rate(screen, c)
    if rate is None:
        return 8
    one = c.unit if c.unit.disaggregated else c.unit.model_copy(update={"replicas": 1})
    latency = screen.runner.unloaded(one).summary.e2e_s.p50
    decoding = c.unit.decode_replicas if c.unit.disaggregated else c.unit.replicas
    if not math.isfinite(latency):
        return 8
    return max(8, math.ceil(rate * latency / decoding))


def _trial_rate(screen, c) -> float | None:
    """Where trials run: the screen's rate, or (no target rate) TUNE_ABOVE past the highest
    the untuned knobs sustain, where what the knobs change shows."""
    if screen.mode == "max-rate":
        return min(c.unit_rate * TUNE_ABOVE, 0.99 * screen.runner.ceiling(c.unit))
    return c.unit_rate


def _requests(screen, c) -> int:
    """Requests of a trial: as the screen ran the candidate."""
    if screen.mode == "offline":
        return math.ceil(screen.q.workload.num_requests / (
            1 if c.unit == c.deployment else c.deployment.replicas))
    if c.unit_rate is None:
        return SEARCH_REQUESTS
    return min(SEARCH_REQUESTS, screen.runner.search_requests(c.unit, _trial_rate(screen, c)))


def _retuned(screen, c, unit: Deployment, count: int):
    """The candidate ``c`` with the tuned knobs of ``unit``, judged as the screen did: the
    highest rate from the untuned one's up (no target rate), one replica fewer or more
    headroom (target rate), output tokens/s (offline, closed loop). A generator of the runs
    it needs (``runs.drive``, several candidates side by side); returns the candidate or
    None."""
    from sysplan.planners.serving.runs import Probe, rate_steps, worst_ratio
    from sysplan.planners.serving.screen import Candidate

    runner, whole = screen.runner, c.deployment.model_copy(update={"engine": unit.engine})
    scale = 1.0 if unit.disaggregated else whole.replicas / unit.replicas
    if screen.mode == "max-rate":
        low = yield runner.task(unit, c.unit_rate, label=whole)
        if not low.meets:
            return None
        search = rate_steps(min(runner.ceiling(unit), 1.5 * c.unit_rate), low=low, steps=3)
        best = yield from _probing(search, lambda rate: runner.task(unit, rate, label=whole))
        return Candidate(whole, unit, best.rate * scale, best.rate,
                         best.rate * screen.osl / unit.num_gpus, best.ratio)
    if screen.mode == "rate":
        rate = screen.q.workload.rate
        probe = yield runner.task(unit, c.unit_rate, count, label=whole)
        if not probe.meets:
            return None
        fewer = whole.replicas - 1 if not whole.disaggregated else 0
        if fewer >= max(1, c.fewest):
            smaller = whole.model_copy(update={"replicas": fewer})
            small = unit.model_copy(update={"replicas": min(unit.replicas, fewer)})
            share = rate * small.replicas / fewer
            less = yield runner.task(small, share, label=smaller)
            if less.meets:
                return Candidate(smaller, small, rate, share, -screen.price(smaller),
                                 less.ratio, c.fewest)
        return Candidate(whole, unit, rate, c.unit_rate, -screen.price(whole), probe.ratio,
                         c.fewest)
    from sysplan.planners.serving.runs import Task

    done: Probe = yield Task(unit, None, count, whole)
    summary = done.summary
    if screen.mode == "closed" and not summary.holds_slo:
        return None
    return Candidate(whole, unit, None, None, summary.output_tokens_per_s / unit.num_gpus,
                     worst_ratio(summary))


def _probing(search, to_task):
    """Run a ``rate_steps`` search inside another generator: yield its tasks, send back
    their probes, return its result."""
    try:
        rate = next(search)
        while True:
            rate = search.send((yield to_task(rate)))
    except StopIteration as stop:
        return stop.value
