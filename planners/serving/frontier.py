"""What the serving search saw, for the pictures: every simulated deployment as a point
(output tokens/s per GPU against tokens/s per user and TTFT), and the chosen deployment's
latency percentiles at a handful of rates around the one it was chosen at.

Both read simulations the search ran anyway (``Runner.runs``) or run a few more of the same
kind (``Runner.run_many``); nothing here changes which plan wins.
"""

from __future__ import annotations

import math

from sysplan.planners.serving.runs import Runner, Task
from sysplan.planners.serving.space import ServeQuestion, describe
from sysplan.planners.serving.types import ServePlan

#: Most points kept (the search of a large cluster simulates a few hundred runs).
MAX_POINTS = 400
#: Rates of the latency curve, as shares of the rate the chosen deployment was checked at.
CURVE_SHARES = (0.25, 0.5, 0.75, 1.0, 1.25)
#: Requests per run of the latency curve, at most: the curve is a picture, not a verdict.
CURVE_REQUESTS = 400


def explored(runner: Runner) -> tuple[dict, ...]:
    """One point per loaded simulation: the deployment it stood for (a unit of one or two
    replicas stands for the whole deployment; tokens/s per GPU are the same), output
    tokens/s per GPU, tokens/s per user (1 / median TPOT), TTFT p90, SLO met."""
    points = []
    for key, summary in runner.runs.items():
        d, _rate, _n, unloaded, _trial = key
        if unloaded or not summary.output_tokens_per_s > 0:
            continue
        task = runner._labels.get(key)
        whole = task.label if task is not None and task.label is not None else d
        tpot = summary.tpot_s.p50
        ttft = summary.ttft_s.p90
        points.append({
            "deployment": describe(whole), "gpus": whole.num_gpus,
            "disaggregated": whole.disaggregated,
            "tp": (whole.decode if whole.disaggregated else whole.replica).tp,
            "output_tokens_per_s_per_gpu": summary.output_tokens_per_s / d.num_gpus,
            "tokens_per_s_per_user": 1.0 / tpot if math.isfinite(tpot) and tpot > 0 else None,
            "ttft_p90_s": ttft if math.isfinite(ttft) else None,
            "meets_slo": summary.meets_slo,
        })
    points.sort(key=lambda p: (p["deployment"], -p["output_tokens_per_s_per_gpu"]))
    return tuple(points[:MAX_POINTS])


def latency_curve(q: ServeQuestion, runner: Runner, plan: ServePlan) -> tuple[dict, ...]:
    """The chosen deployment's TTFT, TPOT and E2E percentiles at CURVE_SHARES of the rate it
    was checked at (empty offline or closed loop, where there is no rate to scale); the runs
    go side by side on the runner's workers."""
    rate = plan.max_rate_rps or plan.rate_rps
    if rate is None or not math.isfinite(rate):
        return ()
    n = min(q.workload.num_requests, CURVE_REQUESTS)
    tasks = [Task(plan.deployment, rate * share, n) for share in CURVE_SHARES]
    return tuple({
        "rate_rps": task.rate,
        **{metric: _percentiles(getattr(summary, f"{metric}_s"))
           for metric in ("ttft", "tpot", "e2e")},
        "saturated": summary.saturated,
    } for task, summary in zip(tasks, runner.run_many(tasks), strict=True))


def _percentiles(value) -> dict[str, float | None]:
    return {k: (v if math.isfinite(v) else None)
            for k, v in (("p50", value.p50), ("p90", value.p90), ("p99", value.p99))}
