"""Replay every published serving measurement through the simulator; print the error per row,
the MAPE per GPU, engine and precision, and a fair naive baseline beside ours.

Two files, both copied from ``shared/data/published`` into ``benchmarks/data`` so this runs
from a clone:

* ``serving_offline.csv``: 82 offline max-throughput runs of ``trtllm-bench`` (TensorRT-LLM
  v0.17; Llama 3.1 8B/70B/405B, Mixtral 8x7B/8x22B on H100, H200, GH200, A100, L40S). Each is
  simulated as TensorRT-LLM runs it: the engine ``trtllm-bench build`` derives from the
  dataset (``costmodels.serving.engines.trtllm_bench_settings``), every request queued at once,
  run to completion; output tokens / makespan against the published token throughput.
* ``serving.csv``: 72 online runs (TensorRT-LLM v0.14 via Triton; Llama 3.1 8B/70B BF16 on
  H100 and H200, Poisson arrivals at fixed rates). Mean TTFT and mean ITL against the
  published means; rows whose published throughput (printed in whole requests/s) is below
  90 % of the offered rate even rounded up are saturated (their latency depends on how long
  the benchmark ran) and reported apart. The table's twelve max-load rows (rate inf, 500
  requests) are compared on output tokens/s; the Triton server's own per-request costs
  (streaming, detokenisation in its Python backend) are not modelled and show there.

The naive baseline is a roofline that reads weights and KV cache and pays the TP all-reduces:
a decode step of B sequences = (weights + B x mean context x KV bytes) / HBM bandwidth + 2L
ring all-reduces of B x h activations, a prefill = 2 x params x ISL FLOPs at 40 % of the bf16
peak + its all-reduces; offline throughput B x OSL / (B prefills + OSL steps) with B the
sequences 90 % of memory holds (at most the engine's batch); online TTFT one prefill, ITL one
decode step at the published concurrency.

In-sample: the serving factors (``profiles/bundled/serving-default.yaml``: GEMM and
memory-bound scales, per-iteration, per-all-reduce and per-request overheads) were fitted by
``--fit-on H100`` on the H100 rows of both files (offline rows, and unsaturated online rows);
every other GPU's rows are out of sample. ``--fit-on GPU`` refits on one GPU's rows and prints
the error on all other rows before (no factors) and after: a calibration judged only on rows
it did not see. No factor is per row, per model or per GPU.

    python benchmarks/serving_accuracy.py [--fit-on H100|H200|A100|GH200|L40S] [--ids S075,S001]
    python benchmarks/serving_accuracy.py --planner   # every row asked through `sysplan serve`
    python benchmarks/serving_accuracy.py --write-bands planners/serving/accuracy_bands.json

``--write-bands`` stores the out-of-sample MAPE of output tokens/s, TTFT and ITL that every
`sysplan serve` prediction then shows as its error band (``planners/accuracy.py``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from sysplan.costmodels import collectives
from sysplan.costmodels.serving.deployment import EngineKnobs, ReplicaLayout
from sysplan.costmodels.serving.engines import trtllm_bench_settings
from sysplan.hardware import load_cluster
from sysplan.models import param_counts, resolve_model
from sysplan.planners.calibrate_serving import FACTORS, ServingRun, fit_serving, predict
from sysplan.profiles.schema import Calibration

DATA = Path(__file__).resolve().parent / "data"
SATURATED_SHARE = 0.9  # published throughput below 90 % of the offered rate
#: TensorRT-LLM v0.14 Triton backend of the online rows: the perf-overview does not print its
#: engine build; trtllm-build's defaults (max_batch_size 256 in 0.14, max_num_tokens 8192).
ONLINE_KNOBS = EngineKnobs(engine="trtllm", max_num_seqs=256, max_num_batched_tokens=8192,
                           chunked_prefill=False, gpu_memory_utilization=0.9)
MODELS = {"8B": "llama-3.1-8b", "70B": "llama-3.1-70b", "405B": "llama-3.1-405b",
          "8x7B": "mixtral-8x7b", "8x22B": "mixtral-8x22b"}
GPUS = {"GH200": "gh200", "H200": "dgx-h200", "H100": "dgx-h100", "A100": "dgx-a100",
        "L40S": "l40s"}

def gpu_of(r: dict) -> str:
    return next(short for short in GPUS if short in r["gpu"])


def _setup(r: dict):
    model = resolve_model(next(v for k, v in MODELS.items() if r["model"].endswith(k)))[0]
    cluster = load_cluster(GPUS[gpu_of(r)])[0]
    precision = "fp8" if "FP8" in r["weights_precision"] else "bf16"
    layout = ReplicaLayout(tp=int(r["tp"]), pp=int(r["pp"] or 1), weights_precision=precision,
                           kv_precision=precision)
    return model, cluster, layout


def _num(r: dict, key: str) -> float:
    value = r.get(key, "").strip()
    return float(value) if value else math.nan


def to_run(r: dict) -> ServingRun:
    """A published row as a measured run: offline rows of v0.17 with the engine trtllm-bench
    derives, the online table's rows (max-load ones included) with its Triton engine."""
    model, cluster, layout = _setup(r)
    isl, osl, n = int(r["input_len"]), int(r["output_len"]), int(r["num_requests"] or 500)
    rate = math.inf if r["request_rate_qps"] in ("", "inf") else float(r["request_rate_qps"])
    if math.isinf(rate) and r["engine_version"].startswith("0.17"):
        knobs = trtllm_bench_settings(model, cluster.gpu, layout.tp, layout.pp,
                                      layout.weights_precision, layout.kv_precision, isl, osl)
    else:
        knobs = ONLINE_KNOBS
    if math.isinf(rate):
        measured = {"output_tok_per_s": _num(r, "output_tok_per_s")}
    else:
        measured = {"ttft_s": _num(r, "ttft_ms") / 1e3, "itl_s": _num(r, "itl_ms") / 1e3}
    return ServingRun(label=r["id"], model=model, cluster=cluster, layout=layout, knobs=knobs,
                      isl=isl, osl=osl, num_requests=n, rate=rate, measured=measured)


def evaluate(r: dict, calibration: Calibration | None = None) -> dict:
    """Our prediction and the naive one for one row (offline or online)."""
    run = to_run(r)
    started = time.perf_counter()
    ours = predict(run, calibration)
    seconds = time.perf_counter() - started
    # the table prints whole requests/s: saturated only if even the rounded-up value is short
    saturated = not run.offline and _num(r, "req_throughput_rps") + 0.5 < SATURATED_SHARE * \
        run.rate
    return {"id": r["id"], "row": r, "run": run, "ours": ours, "naive": naive(r, run.knobs),
            "offline": run.offline, "saturated": saturated, "seconds": seconds,
            "gpu": gpu_of(r), "precision": run.layout.weights_precision,
            "gpu_class": run.cluster.gpu.gpu_class}


def naive(r: dict, knobs: EngineKnobs) -> dict:
    """The fair roofline baseline of the module docstring."""
    model, cluster, layout = _setup(r)
    gpu, tp = cluster.gpu, layout.tp
    w_bytes = 1 if layout.weights_precision == "fp8" else 2
    kv_bytes = (1 if layout.kv_precision == "fp8" else 2) * 2 * model.num_layers * \
        model.num_kv_heads * model.head_dim  # serving-formulas 4.1, whole model
    params = param_counts(model).total
    isl, osl = float(r["input_len"]), float(r["output_len"])
    bandwidth = gpu.hbm_bandwidth_bytes_per_s * tp

    def all_reduces(tokens: float) -> float:  # 2 per layer (Megatron TP), ring, serving 4.3
        if tp == 1:
            return 0.0
        message = np.asarray(tokens * model.hidden_size * 2.0)
        return 2 * model.num_layers * float(collectives.all_reduce_time(cluster, message, tp, 1))

    def step(batch: float, context: float) -> float:  # serving-formulas 4.3 roofline
        return (params * w_bytes + batch * context * kv_bytes) / bandwidth + all_reduces(batch)

    def prefill(tokens: float) -> float:  # serving-formulas 4.2 at 40 % of the bf16 peak
        return 2 * params * tokens / (0.4 * gpu.peak("bf16") * tp) + all_reduces(tokens)

    if r["request_rate_qps"] in ("", "inf"):
        free = 0.9 * gpu.memory_bytes * tp - params * w_bytes
        batch = max(1.0, min(knobs.max_num_seqs, free / (kv_bytes * (isl + osl))))
        total = batch * prefill(isl) + osl * step(batch, isl + osl / 2)
        return {"output_tok_per_s": batch * osl / total, "ttft_s": math.nan,
                "itl_s": math.nan}
    concurrency = max(_num(r, "concurrency"), _num(r, "request_rate_qps") * (
        _num(r, "e2e_latency_ms") / 1e3 if r.get("e2e_latency_ms") else 0.0), 1.0)
    if math.isnan(concurrency):
        concurrency = 1.0
    return {"output_tok_per_s": math.nan, "ttft_s": prefill(isl),
            "itl_s": step(concurrency, isl + osl / 2)}


def _error(x: dict, key: str, which: str = "ours") -> float:
    truth = x["run"].measured.get(key, math.nan)
    if math.isnan(truth) or not truth:
        return math.nan
    return x[which][key] / truth - 1


def _metrics(x: dict) -> tuple[str, ...]:
    return tuple(x["run"].measured)


def usable(x: dict) -> bool:
    """Rows a fit may use and a MAPE counts: offline, or online and unsaturated."""
    return x["offline"] or not x["saturated"]


def table(results: list[dict], title: str, in_sample: set[str]) -> None:
    """MAPE by GPU, engine version and precision, ours beside naive."""
    print(f"\n{title}")
    print(f"  {'group':40} {'metric':17} {'sysplan':>8} {'naive':>8} {'rows':>5}  sample")
    groups: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for x in results:
        if not usable(x):
            continue
        version = x["row"]["engine_version"][:4]
        kind = {(True, "0.17"): "offline trtllm-bench v0.17",
                (True, "0.14"): "max-load Triton v0.14"}.get((x["offline"], version),
                                                            f"online Triton v{version}")
        sample = "in" if x["gpu"] in in_sample else "out"
        for key in _metrics(x):
            for group in (f"{kind} {x['gpu']} {x['precision']}", f"{kind} all"):
                groups.setdefault((group, key, sample), []).append(
                    (abs(_error(x, key)), abs(_error(x, key, "naive"))))
    for (group, key, sample), errs in sorted(groups.items()):
        ours, base = np.array(errs).T
        print(f"  {group:40} {key:17} {np.nanmean(ours):>8.1%} {np.nanmean(base):>8.1%} "
              f"{len(errs):>5}  {sample}")


def held_out(rows: list[dict], fit_on: str) -> int:
    """Fit on one GPU's usable rows, print the error on every other row before and after."""
    train = [x["run"] for x in map(evaluate, (r for r in rows if gpu_of(r) == fit_on))
             if usable(x)]
    started = time.perf_counter()
    calibration = fit_serving(train, f"benchmarks/serving_accuracy.py --fit-on {fit_on}",
                              max_evaluations=12, workers=2)
    print(f"fitted on {len(train)} {fit_on} rows in {time.perf_counter() - started:.0f} s: "
          + ", ".join(f"{k}={getattr(calibration, k):.4g}" for k in FACTORS))
    test = [r for r in rows if gpu_of(r) != fit_on]
    uncalibrated = Calibration(serve_fitted_on="none")
    table([evaluate(r, uncalibrated) for r in test], "held out, no serving factors", set())
    table([evaluate(r, calibration) for r in test], f"held out, factors fitted on {fit_on}",
          set())
    table([evaluate(r, calibration) for r in rows if gpu_of(r) == fit_on],
          f"in sample, factors fitted on {fit_on}", {fit_on})
    return 0


def through_planner(rows: list[dict]) -> int:
    """Ask ``sysplan serve``'s planner every row as a user would (deployment, precisions,
    engine, lengths, request count and rate pinned; no tuning) and count the answers: a crash,
    a "does not fit" or a saturated verdict on an offline question is a failure."""
    from sysplan.planners.serving.search import ServeQuestion, plan_serving
    from sysplan.planners.serving.types import ServePins
    from sysplan.workloads.serving import ServeWorkload

    failures, errors = 0, []
    for r in rows:
        run = to_run(r)
        pins = ServePins(tp=run.layout.tp, pp=run.layout.pp, replicas=1, disagg=False,
                         weights_precision=run.layout.weights_precision,
                         kv_precision=run.layout.kv_precision)
        workload = ServeWorkload(isl=str(run.isl), osl=str(run.osl), rate=run.rate,
                                 num_requests=run.num_requests)
        question = ServeQuestion(model=run.model, cluster=run.cluster, workload=workload,
                                 slos=(), max_gpus=run.layout.gpus, engine="trtllm", pins=pins)
        try:
            plan = plan_serving(question).plans[0]
        except Exception as error:  # noqa: BLE001 - every failure (NoPlanFits too) is counted
            failures += 1
            print(f"{r['id']}: {type(error).__name__}: {error}")
            continue
        saturated = plan.summary["saturated"] and run.offline
        failures += bool(saturated)
        if run.offline:
            ours = plan.summary["output_tokens_per_s"]
            errors.append(abs(ours / run.measured["output_tok_per_s"] - 1))
        print(f"{r['id']}: {'SATURATED ' if saturated else ''}"
              f"{plan.summary['output_tokens_per_s']:.0f} output tokens/s")
    print(f"\n{len(rows) - failures} of {len(rows)} rows answered by the planner; offline "
          f"output tokens/s MAPE through it {np.mean(errors):.1%} ({len(errors)} rows)")
    return 0 if not failures else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offline-csv", type=Path, default=DATA / "serving_offline.csv")
    parser.add_argument("--online-csv", type=Path, default=DATA / "serving.csv")
    parser.add_argument("--fit-on", choices=sorted(GPUS), default=None)
    parser.add_argument("--ids", default="", help="only these row ids (comma-separated)")
    parser.add_argument("--planner", action="store_true",
                        help="ask every row through sysplan serve's planner instead")
    parser.add_argument("--write-bands", type=Path, metavar="JSON",
                        help="write the out-of-sample MAPE per metric "
                             "(planners/serving/accuracy_bands.json)")
    args = parser.parse_args(argv)
    rows = [*csv.DictReader(args.offline_csv.open()), *csv.DictReader(args.online_csv.open())]
    if args.ids:
        wanted = set(args.ids.split(","))
        rows = [r for r in rows if r["id"] in wanted]
    if args.fit_on:
        return held_out(rows, args.fit_on)
    if args.planner:
        return through_planner(rows)
    results = [evaluate(r) for r in rows]
    print(f"{'id':5} {'model':14} {'gpu':5} {'prec':4} tp {'isl':>5} {'osl':>4} {'rate':>5}  "
          f"{'metric':16} {'published':>9} {'sysplan':>9} {'err':>6} {'naive':>6}  state")
    for x in results:
        r = x["row"]
        state = "offline" if x["offline"] else "saturated" if x["saturated"] else "ok"
        for key in _metrics(x):
            print(f"{x['id']:5} {r['model'][-14:]:14} {x['gpu']:5} {x['precision']:4} "
                  f"{r['tp']:>2} {r['input_len']:>5} {r['output_len']:>4} "
                  f"{r['request_rate_qps'] or 'inf':>5}  {key:16} {x['run'].measured[key]:>9.4g} "
                  f"{x['ours'][key]:>9.4g} {_error(x, key):>+6.0%} "
                  f"{_error(x, key, 'naive'):>+6.0%}  {state}")
    answered = sum(all(not math.isnan(x["ours"][k]) for k in _metrics(x)) for x in results)
    print(f"\nanswered {answered} of {len(results)} rows; simulation "
          f"{np.mean([x['seconds'] for x in results]) * 1e3:.0f} ms per row on average")
    table(results, "MAPE (saturated online rows left out; 'in' = the bundled serving factors "
          "were fitted on these rows)", {"H100"})
    saturated = [x for x in results if not usable(x)]
    if saturated:
        errs = [abs(_error(x, k)) for x in saturated for k in _metrics(x)]
        print(f"\n  saturated online rows ({len(saturated)}): MAPE of TTFT and ITL "
              f"{np.nanmean(errs):.1%} (queueing depends on the benchmark's length)")
    bands = serve_bands(results, in_sample={"H100"})
    if args.write_bands:
        args.write_bands.write_text(json.dumps(bands, indent=2) + "\n")
        print(f"wrote {args.write_bands}")
    return 0


def serve_bands(results: list[dict], in_sample: set[str]) -> dict:
    """Out-of-sample MAPE per metric over the usable rows (printed; --write-bands stores it):
    what `sysplan serve` shows as each prediction's error band."""
    out = {}
    print("\nError band per metric (rows outside the serving factors' sample; what `sysplan "
          "serve` shows):")
    for key, what in (("output_tok_per_s", "output tokens/s"), ("ttft_s", "TTFT"),
                      ("itl_s", "ITL")):
        xs = [x for x in results if usable(x) and x["gpu"] not in in_sample
              and key in _metrics(x) and not math.isnan(_error(x, key))]
        mape = float(np.mean([abs(_error(x, key)) for x in xs])) if xs else None
        out[key] = {"description": what, "rows": len(xs),
                    "mape": round(mape, 4) if mape is not None else None,
                    "gpu_classes": sorted({x["gpu_class"] for x in xs})}
        print(f"  {what:16} {len(xs):>4} rows  MAPE {mape if mape is None else f'{mape:.1%}'}")
    return {"generated_by": "python benchmarks/serving_accuracy.py --write-bands "
                            "planners/serving/accuracy_bands.json", "metrics": out}


if __name__ == "__main__":
    sys.exit(main())
