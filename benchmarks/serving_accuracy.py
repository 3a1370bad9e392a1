"""Replay every published serving measurement (shared/data/published/serving.csv) through the
simulator and print the error per row and the MAPE of TTFT, ITL and throughput.

Each row's model, GPU, TP, lengths, request count and offered rate are simulated with the
TensorRT-LLM-like scheduler (the rows are TensorRT-LLM's) and the row's published statistic
(the mean) is compared with the simulated mean. Rows whose published throughput is well below
the offered rate are saturated: latency there depends on how long the benchmark ran, so they
are reported separately. A naive baseline is printed beside ours: TTFT = one roofline prefill
at 40 % of peak, ITL = weights / HBM bandwidth. Nothing is fitted to these rows.

    python benchmarks/serving_accuracy.py [--csv PATH] [--fit-on H100|H200]

``--fit-on GPU`` fits the serving factors (GEMM and memory-bound efficiency scales, the
per-iteration and per-request overheads) to the unsaturated rows measured on that GPU by
bounded least squares, and prints the error on the rows of the other GPU before and after:
a calibration judged only on rows it did not see.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from sysplan.costmodels.efficiency import Efficiency
from sysplan.costmodels.serving.cost import ServingCost
from sysplan.costmodels.serving.deployment import Deployment, EngineKnobs, ReplicaLayout
from sysplan.costmodels.serving.simulator import simulate, to_request_metrics
from sysplan.hardware import load_cluster
from sysplan.models import param_counts, resolve_model
from sysplan.profiles.schema import Calibration
from sysplan.workloads.serving import ServeWorkload, make_requests

DEFAULT_CSV = Path(__file__).resolve().parents[2] / "shared/data/published/serving.csv"
SATURATED_SHARE = 0.9  # published throughput below 90 % of the offered rate
#: TensorRT-LLM defaults of the measured release (v0.14 trtllm-bench/Triton: max batch 256?)
KNOBS = EngineKnobs(engine="trtllm", max_num_seqs=256, max_num_batched_tokens=8192)


def _row_setup(r: dict):
    model = resolve_model("8b" if "8B" in r["model"] else "70b")[0]
    cluster = load_cluster("dgx-h200" if "H200" in r["gpu"] else "dgx-h100")[0]
    layout = ReplicaLayout(tp=int(r["tp"]), pp=int(r["pp"] or 1))
    return model, cluster, Deployment(replica=layout, replicas=1, engine=KNOBS)


def evaluate(r: dict, calibration: Calibration | None = None) -> dict:
    model, cluster, deployment = _row_setup(r)
    rate = math.inf if not r["request_rate_qps"] else float(r["request_rate_qps"])
    workload = ServeWorkload(isl=r["input_len"], osl=r["output_len"], rate=rate,
                             num_requests=int(r["num_requests"] or 500))
    requests = make_requests(workload)
    eff = Efficiency.for_cluster(cluster)
    if calibration is not None:
        eff = replace(eff, calibration=calibration)
    cost = ServingCost(model, cluster, eff)
    result = simulate(deployment, cost, requests.arrival_s, requests.input_tokens,
                      requests.output_tokens)
    metrics = to_request_metrics(result).with_request_overhead(
        eff.calibration.serve_request_overhead_s)
    weights = np.repeat(1.0, len(metrics.itl_all_s))
    ours = {"ttft_ms": float(np.nanmean(metrics.ttft_s)) * 1e3,
            "itl_ms": float(np.average(metrics.itl_all_s, weights=weights)) * 1e3
            if len(metrics.itl_all_s) else float("nan"),
            "output_tok_per_s": float(np.nansum(metrics.output_tokens))
            / float(np.nanmax(metrics.finish_s) - metrics.arrival_s[0])}
    layout = deployment.replica
    peak = cluster.gpu.peak("bf16") * layout.tp
    params = param_counts(model).total
    isl, osl = float(r["input_len"]), float(r["output_len"])
    naive = {"ttft_ms": 2 * params * isl / (0.4 * peak) * 1e3,
             "itl_ms": 2 * params / (cluster.gpu.hbm_bandwidth_bytes_per_s * layout.tp) * 1e3,
             "output_tok_per_s": float("nan")}
    offered = rate
    measured_rps = float(r["req_throughput_rps"] or "nan")
    saturated = math.isfinite(offered) and measured_rps < SATURATED_SHARE * offered
    del osl
    return {"id": r["id"], "row": r, "ours": ours, "naive": naive, "saturated": saturated,
            "offline": not math.isfinite(offered)}


def _truth(r: dict, key: str) -> float:
    value = r.get(key, "")
    return float(value) if value.strip() else float("nan")


FACTORS = {"serve_gemm_scale": (0.3, 3.0), "serve_memory_scale": (0.3, 3.0),
           "serve_iteration_overhead_s": (0.0, 0.02), "serve_request_overhead_s": (0.0, 0.05),
           "serve_collective_latency_s": (0.0, 1e-4)}


def _gpu(r: dict) -> str:
    return "H200" if "H200" in r["gpu"] else "H100"


def _usable(x: dict) -> bool:
    return not (x["saturated"] or x["offline"])


def fit(rows: list[dict]) -> Calibration:
    """Factors minimising log errors of mean TTFT and mean ITL over ``rows``."""
    truth = np.array([[_truth(r, "ttft_ms"), _truth(r, "itl_ms")] for r in rows])

    scale = np.array([hi for _, hi in FACTORS.values()])  # fit in units of the upper bound

    def residual(theta):
        calibration = Calibration(**dict(zip(FACTORS, theta * scale, strict=True)))
        ours = np.array([[x["ours"]["ttft_ms"], x["ours"]["itl_ms"]]
                         for x in (evaluate(r, calibration) for r in rows)])
        return np.log(ours / truth).ravel()

    low, high = (np.array(b) / scale for b in zip(*FACTORS.values(), strict=True))
    start = np.array([1.0, 1.0, 1e-3, 0.0, 0.0]) / scale + np.array([0, 0, 0, 0.1, 0.1])
    theta = least_squares(residual, start, bounds=(low, high), diff_step=1e-2,
                          max_nfev=60).x * scale
    return Calibration(**dict(zip(FACTORS, theta, strict=True)))


def held_out(rows: list[dict], fit_on: str) -> int:
    """Fit on one GPU's unsaturated rows, print the error on the other GPU's."""
    train = [r for r in rows if _gpu(r) == fit_on]
    test = [r for r in rows if _gpu(r) != fit_on]
    train = [r for r in train if _usable(evaluate(r))]
    calibration = fit(train)
    print(f"fitted on {len(train)} unsaturated {fit_on} rows: " + ", ".join(
        f"{k}={getattr(calibration, k):.4g}" for k in FACTORS))
    before = [evaluate(r, Calibration()) for r in test]  # uncalibrated
    after = [evaluate(r, calibration) for r in test]
    print(f"{'held-out rows':24} {'metric':8} {'before':>8} {'after':>8} {'rows':>5}")
    for state in ("ok", "saturated"):
        chosen = [(b, a) for b, a in zip(before, after, strict=True)
                  if (state == "ok") == _usable(b) and not b["offline"]]
        for key in ("ttft_ms", "itl_ms", "output_tok_per_s"):
            errs_b = [abs(b["ours"][key] / _truth(b["row"], key) - 1) for b, _ in chosen]
            errs_a = [abs(a["ours"][key] / _truth(a["row"], key) - 1) for _, a in chosen]
            print(f"{state:24} {key[:8]:8} {np.nanmean(errs_b):>8.1%} "
                  f"{np.nanmean(errs_a):>8.1%} {len(chosen):>5}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--fit-on", choices=("H100", "H200"), default=None)
    args = parser.parse_args(argv)
    rows = list(csv.DictReader(args.csv.open()))
    if args.fit_on:
        return held_out(rows, args.fit_on)
    results = [evaluate(r) for r in rows]
    keys = ("ttft_ms", "itl_ms", "output_tok_per_s")
    print(f"{'id':5} {'model':14} {'gpu':5} tp {'isl':>5} {'osl':>4} {'rate':>5}  "
          + "  ".join(f"{k:>24}" for k in keys) + "  state")
    errors: dict[tuple[str, str], list[float]] = {}
    for x in results:
        r = x["row"]
        cells = []
        state = "offline" if x["offline"] else ("saturated" if x["saturated"] else "ok")
        for k in keys:
            truth, ours = _truth(r, k), x["ours"][k]
            err = ours / truth - 1 if not math.isnan(truth) and truth else float("nan")
            cells.append(f"{truth:>8.4g} {ours:>8.4g} {err:>+6.0%}")
            errors.setdefault((state, k), []).append(abs(err))
            naive = x["naive"][k]
            errors.setdefault((state, "naive " + k), []).append(abs(naive / truth - 1)
                                                               if not math.isnan(truth) else math.nan)
        gpu = "H200" if "H200" in r["gpu"] else "H100"
        print(f"{x['id']:5} {r['model'][:14]:14} {gpu:5} {r['tp']:>2} {r['input_len']:>5} "
              f"{r['output_len']:>4} {r['request_rate_qps'] or 'inf':>5}  "
              + "  ".join(cells) + f"  {state}")
    print("\nH100 rows are priced with the bundled serving calibration, which was fitted on "
          "the unsaturated ones\n(in-sample); H200 rows are uncalibrated. --fit-on H100 / "
          "--fit-on H200 judge a calibration on rows it did not see.")
    print("\nMAPE (published mean vs simulated mean)      sysplan    naive   rows")
    for state in ("ok", "saturated", "offline"):
        for k in keys:
            ours = [e for e in errors.get((state, k), []) if not math.isnan(e)]
            naive = [e for e in errors.get((state, "naive " + k), []) if not math.isnan(e)]
            if ours:
                print(f"  {state:10} {k:20} {np.mean(ours):>17.1%} "
                      f"{(np.mean(naive) if naive else float('nan')):>8.1%} {len(ours):>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
