"""Rewrite serving_runs.csv's measured columns from sysplan's own simulator at known factors.

The example's "measurements" are synthetic so that `sysplan calibrate --serving` has factors
to recover (tests/test_calibrate_serving.py checks it does). When the serving model changes,
the old numbers no longer come from these factors: run this again.

    python examples/calibration/make_serving_runs.py
"""

from __future__ import annotations

import csv
from pathlib import Path

from sysplan.hardware import load_cluster
from sysplan.models import resolve_model
from sysplan.planners.calibrate_serving import predict, read_serving_csv
from sysplan.profiles.schema import Calibration

KNOWN = Calibration(serve_gemm_scale=0.8, serve_memory_scale=0.85,
                    serve_iteration_overhead_s=0.002, serve_collective_latency_s=2e-5,
                    serve_request_overhead_s=0.01, serve_fitted_on="known factors")
PATH = Path(__file__).with_name("serving_runs.csv")


def main() -> None:
    rows = list(csv.DictReader(PATH.open()))
    runs = read_serving_csv(PATH, load_cluster("dgx-h100")[0], resolve_model)
    for row, run in zip(rows, runs, strict=True):
        ours = predict(run, KNOWN)
        if row["output_throughput"]:
            row["output_throughput"] = f"{ours['output_tok_per_s']:.2f}"
        else:
            row["mean_ttft_ms"] = f"{ours['ttft_s'] * 1e3:.3f}"
            row["mean_itl_ms"] = f"{ours['itl_s'] * 1e3:.3f}"
    with PATH.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
