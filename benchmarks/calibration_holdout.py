"""Calibrate on some published sources, judge on the others (never on the rows fitted).

Each published row (shared/data/published/training.csv) becomes a measured run: its stated
layout, completed by the planner as in training_accuracy.py, and its step time (derived from
the row's own metric). ``sysplan.planners.calibrate.fit_calibration`` fits the factors on the
rows of the training sources; the table reports the error on the held-out sources before and
after, with the fair naive baseline beside them (training_accuracy.baseline_step: 6 N + attention
FLOPs at 40 % of the bf16 peak, x 8/6 with full recompute).

    python benchmarks/calibration_holdout.py [--csv PATH ...] [--ids T001,T012,...]
        [--factors gemm_scale,attention_scale] [--base raw|bundled]

The bundled H100 profile's calibration comes from
``--factors gemm_scale,attention_scale``: the Megatron-LM README line (fit on its rows).
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import training_accuracy as acc

from sysplan.core.errors import NoPlanFits, SysplanError
from sysplan.costmodels.efficiency import Efficiency
from sysplan.planners.calibrate import MeasuredRun, fit_calibration, predict
from sysplan.planners.training import plan_training
from sysplan.profiles.loader import bundled_for_gpu

#: (fit on these sources, judge on these), same GPU family within an experiment.
EXPERIMENTS = [
    (("Narayanan et al. 2021",), ("Korthikanti et al. 2022",)),
    (("Korthikanti et al. 2022",), ("Narayanan et al. 2021",)),
    (("NVIDIA Megatron-LM README",), ("NVIDIA NeMo long-sequence pe",)),
    (("NVIDIA NeMo long-sequence pe",), ("NVIDIA Megatron-LM README",)),
]


def measured_run(r: dict) -> tuple[MeasuredRun, float, object] | None:
    """The row as a run (layout completed by the planner), its naive step, and its cluster."""
    metric = acc.measured_metric(r)
    if metric is None or r["quality"] not in "AB":
        return None
    model, cluster, job = acc.model_from_row(r), acc.cluster_for(r), acc.job_for(r)
    pins = acc.pins_for(r, model)
    gpus = int(r["num_gpus"])
    try:
        result = plan_training(model, cluster, job, num_gpus=gpus, pins=pins, top=1,
                               memory_headroom_bytes=-(2**40))
    except (NoPlanFits, SysplanError):
        return None
    plan = result.plans[0]
    key, truth = metric
    # the step time the row's own metric implies (inverting training_accuracy.predicted)
    unit = acc.predicted(key, r, model, 1.0, gpus, cluster.gpu.peak("bf16"))
    step = unit / truth if key != "step_time_s" else truth
    run = MeasuredRun(r["id"], model, result.job, plan.parallel, step)
    naive = acc.baseline_step(r, model, cluster)
    return run, naive, cluster


def mape(predicted: np.ndarray, measured: np.ndarray) -> float:
    return float(np.mean(np.abs(predicted / measured - 1.0)))


def _experiment(fit_on: tuple[str, ...], judge_on: tuple[str, ...], train: list,
                test: list, factors: list[str] | None, calibrated: bool) -> None:
    """Fit on ``train`` (one cluster), print the error on ``test`` before and after."""
    cluster = train[0][2]
    profile = bundled_for_gpu(cluster.gpu.name)
    if profile is not None and not calibrated:  # the measured tables alone
        profile = profile.model_copy(update={"calibration": None})
    eff = Efficiency.from_profile(profile, cluster) if profile else Efficiency.default(cluster)
    try:
        fit = fit_calibration([x[0] for x in train], cluster, eff, fitted_on=", ".join(fit_on),
                              factors=factors)
    except SysplanError as error:  # too few rows to fit every factor
        print(f"{', '.join(fit_on)[:32]:32} {', '.join(judge_on)[:32]:32} {len(test):>4}  "
              f"not fitted: {error}")
        return
    fitted = replace(eff, calibration=fit.calibration)
    measured = np.array([x[0].step_time_s for x in test])
    before = predict([x[0] for x in test], cluster, eff)
    after = predict([x[0] for x in test], cluster, fitted)
    naive = np.array([x[1] for x in test])
    factors = " ".join(f"{k}={v:.2f}" for k, v in fit.calibration.model_dump().items()
                       if isinstance(v, float) and k != "allocator_reserve"
                       and not k.startswith("serve_"))
    print(f"{', '.join(fit_on)[:32]:32} {', '.join(judge_on)[:32]:32} {len(test):>4} "
          f"{mape(before, measured):>8.1%} {mape(after, measured):>8.1%} "
          f"{mape(naive, measured):>8.1%}  {factors} ({cluster.gpu.name})")
    print(f"{'':32} {'(fit rows: in-sample / leave-one-out)':32} {len(train):>4} "
          f"{fit.mape('before_s'):>8.1%} {fit.mape('after_s'):>8.1%} "
          f"{'':>8}  LOO {fit.mape('left_out_s'):.1%}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, nargs="+", default=list(acc.DEFAULT_CSVS))
    parser.add_argument("--ids", help="comma-separated row ids to use (default: all)")
    parser.add_argument("--factors", help="comma-separated factors to fit (default: all of "
                        "planners.calibrate.FACTORS)")
    parser.add_argument("--base", choices=("raw", "bundled"), default="raw",
                        help="start from the bundled profile's tables without its calibration "
                        "(raw, default) or with it")
    args = parser.parse_args(argv)
    factors = args.factors.split(",") if args.factors else None
    rows = [r for path in args.csv for r in csv.DictReader(path.open())]
    if args.ids:
        wanted = set(args.ids.split(","))
        rows = [r for r in rows if r["id"] in wanted]
    by_source: dict[str, list] = {}
    for r in rows:
        item = measured_run(r)
        if item is not None:
            by_source.setdefault(acc._short_source(r), []).append(item)
    print(f"{'fit on':32} {'judged on':32} {'rows':>4} {'before':>8} {'after':>8} "
          f"{'naive':>8}  factors")
    for fit_on, judge_on in EXPERIMENTS:
        fitted_rows = [x for src in fit_on for x in by_source.get(src, [])]
        judged_rows = [x for src in judge_on for x in by_source.get(src, [])]
        # one GPU type per experiment: a source's rows on other GPUs are left out
        for name in sorted({x[2].name for x in fitted_rows} & {x[2].name for x in judged_rows}):
            train = [x for x in fitted_rows if x[2].name == name]
            test = [x for x in judged_rows if x[2].name == name]
            _experiment(fit_on, judge_on, train, test, factors, args.base == "bundled")
    return 0


if __name__ == "__main__":
    sys.exit(main())
