"""Calibrate on some published sources, judge on the others (never on the rows fitted).

Each published row (shared/data/published/training.csv) becomes a measured run: its stated
layout, completed by the planner as in training_accuracy.py, and its step time (derived from
the row's own metric). ``sysplan.planners.calibrate.fit_calibration`` fits the factors on the
rows of the training sources; the table reports the error on the held-out sources before and
after, with the naive baseline (6 N tokens at 40 % of peak) beside them.

    python benchmarks/calibration_holdout.py [--csv PATH]
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
    model, cluster, job, pins = (acc.model_from_row(r), acc.cluster_for(r), acc.job_for(r),
                                 acc.pins_for(r))
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
    naive = acc.naive_step(r, model, cluster, job.precision)
    return run, naive, cluster


def mape(predicted: np.ndarray, measured: np.ndarray) -> float:
    return float(np.mean(np.abs(predicted / measured - 1.0)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=acc.DEFAULT_CSV)
    args = parser.parse_args(argv)
    rows = list(csv.DictReader(args.csv.open()))
    by_source: dict[str, list] = {}
    for r in rows:
        item = measured_run(r)
        if item is not None:
            by_source.setdefault(acc._short_source(r), []).append(item)
    print(f"{'fit on':32} {'judged on':32} {'rows':>4} {'before':>8} {'after':>8} "
          f"{'naive':>8}  factors")
    for fit_on, judge_on in EXPERIMENTS:
        train = [x for s in fit_on for x in by_source.get(s, [])]
        if not train:
            continue
        cluster = train[0][2]  # one GPU type per experiment: rows on others are left out
        train = [x for x in train if x[2].name == cluster.name]
        test = [x for s in judge_on for x in by_source.get(s, []) if x[2].name == cluster.name]
        if not test:
            continue
        profile = bundled_for_gpu(cluster.gpu.name)
        eff = Efficiency.from_profile(profile, cluster) if profile else Efficiency.default(cluster)
        fit = fit_calibration([x[0] for x in train], cluster, eff, fitted_on=", ".join(fit_on))
        fitted = replace(eff, calibration=fit.calibration)
        measured = np.array([x[0].step_time_s for x in test])
        before = predict([x[0] for x in test], cluster, eff)
        after = predict([x[0] for x in test], cluster, fitted)
        naive = np.array([x[1] for x in test])
        factors = " ".join(f"{k}={v:.2f}" for k, v in fit.calibration.model_dump().items()
                           if isinstance(v, float) and k != "allocator_reserve")
        print(f"{', '.join(fit_on)[:32]:32} {', '.join(judge_on)[:32]:32} {len(test):>4} "
              f"{mape(before, measured):>8.1%} {mape(after, measured):>8.1%} "
              f"{mape(naive, measured):>8.1%}  {factors}")
        print(f"{'':32} {'(fit rows: in-sample / leave-one-out)':32} {len(train):>4} "
              f"{fit.mape('before_s'):>8.1%} {fit.mape('after_s'):>8.1%} "
              f"{'':>8}  LOO {fit.mape('left_out_s'):.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
