"""Fit the serving cost model's factors to measured serving runs (``sysplan calibrate
--serving``, and ``benchmarks/serving_accuracy.py`` on the published runs).

A run is what a serving benchmark reports: the deployment (model, GPU, TP, PP, precisions,
engine and its knobs), the workload (fixed prompt and output lengths, request count, offered
rate or ``inf`` for an offline run) and what was measured: output tokens/s, and for online
runs mean TTFT and mean inter-token latency. Columns follow ``vllm bench serve``'s result
keys (``output_throughput``, ``mean_ttft_ms``, ``mean_itl_ms``) or ``trtllm-bench``'s
(``output_tok_per_s`` for its "Token Throughput").

Each run is replayed through the continuous-batching simulator, offline runs to completion
(output tokens over the makespan, as both benchmarks report), online runs with Poisson
arrivals at the offered rate. The factors (``Calibration.serve_*``: GEMM and memory-bound
scales, fixed seconds per iteration, per TP all-reduce and per request) are fitted by bounded
least squares on log(predicted / measured) of every measured figure, so a 10 % miss weighs
the same on every row. They are shared by every GPU: nothing is fitted per row or per model.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from sysplan.core.errors import InputError
from sysplan.costmodels.efficiency import Efficiency
from sysplan.costmodels.serving.calibration import SERVE_FIELDS
from sysplan.costmodels.serving.cost import ServingCost
from sysplan.costmodels.serving.deployment import Deployment, EngineKnobs, ReplicaLayout
from sysplan.costmodels.serving.simulator import simulate, to_request_metrics
from sysplan.hardware.types import Cluster
from sysplan.models.spec import ModelSpec
from sysplan.profiles.schema import Calibration
from sysplan.workloads.serving import ServeWorkload, make_requests

#: Free factors and their bounds (a factor at a bound means the model, not the engine, is
#: wrong and should be fixed instead).
FACTORS = {"serve_gemm_scale": (0.3, 3.0), "serve_memory_scale": (0.3, 3.0),
           "serve_iteration_overhead_s": (0.0, 0.01), "serve_collective_latency_s": (0.0, 1e-4),
           "serve_request_overhead_s": (0.0, 0.05)}
_START = {"serve_gemm_scale": 1.0, "serve_memory_scale": 1.0,
          "serve_iteration_overhead_s": 1e-3, "serve_collective_latency_s": 1e-5,
          "serve_request_overhead_s": 5e-3}
#: What a run may have measured, in SI units.
METRICS = ("output_tok_per_s", "ttft_s", "itl_s")


@dataclass(frozen=True)
class ServingRun:
    """One measured serving run."""

    label: str
    model: ModelSpec
    cluster: Cluster
    layout: ReplicaLayout
    knobs: EngineKnobs
    isl: int
    osl: int
    num_requests: int
    rate: float  # requests/s offered; inf: offline (all queued at once)
    measured: dict[str, float]  # subset of METRICS

    @property
    def offline(self) -> bool:
        return math.isinf(self.rate)


def _efficiency(run: ServingRun, calibration: Calibration | None,
                base: Efficiency | None) -> Efficiency:
    eff = base or Efficiency.for_cluster(run.cluster)
    if calibration is None:
        return eff
    return replace(eff, calibration=eff.calibration.model_copy(
        update={k: getattr(calibration, k) for k in SERVE_FIELDS}))


def predict(run: ServingRun, calibration: Calibration | None = None,
            efficiency: Efficiency | None = None) -> dict[str, float]:
    """The run replayed through the simulator: METRICS (NaN where it does not fit)."""
    cost = ServingCost(run.model, run.cluster, _efficiency(run, calibration, efficiency))
    nothing = dict.fromkeys(METRICS, math.nan)
    if cost.kv_capacity_tokens(run.layout, run.knobs) < run.isl + run.osl:
        return nothing
    workload = ServeWorkload(isl=str(run.isl), osl=str(run.osl), num_requests=run.num_requests,
                             rate=run.rate)
    requests = make_requests(workload)
    arrival = np.zeros(run.num_requests) if run.offline else requests.arrival_s
    result = simulate(Deployment(replica=run.layout, engine=run.knobs), cost, arrival,
                      requests.input_tokens, requests.output_tokens)
    metrics = to_request_metrics(result).with_request_overhead(
        cost.eff.calibration.serve_request_overhead_s)
    span = float(np.nanmax(result.finish_s) - np.nanmin(result.arrival_s))
    return {"output_tok_per_s": float(requests.output_tokens[result.finished].sum()) / span,
            "ttft_s": float(np.nanmean(metrics.ttft_s)),
            "itl_s": float(np.mean(metrics.itl_all_s)) if len(metrics.itl_all_s) else math.nan}


def _predict_all(runs: list[ServingRun], calibration: Calibration,
                 efficiency: Efficiency | None = None) -> list[dict[str, float]]:
    return [predict(run, calibration, efficiency) for run in runs]


def _residuals(runs: list[ServingRun], calibration: Calibration, pool=None, share: int = 1,
               efficiency: Efficiency | None = None) -> np.ndarray:
    if pool is None:
        predicted = _predict_all(runs, calibration, efficiency)
    else:  # each of the ``share`` workers replays a strided share (long and short runs mixed)
        parts = pool.map(_predict_all, [runs[i::share] for i in range(share)],
                         [calibration] * share, [efficiency] * share)
        predicted = [None] * len(runs)
        for i, part in enumerate(parts):
            predicted[i::share] = part
    out = []
    for run, ours in zip(runs, predicted, strict=True):
        for key, truth in run.measured.items():
            value = ours[key]
            out.append(math.log(value / truth) if value > 0 and math.isfinite(value) else 3.0)
    return np.array(out)


def fit_serving(runs: list[ServingRun], fitted_on: str, max_evaluations: int = 40,
                workers: int = 1, efficiency: Efficiency | None = None) -> Calibration:
    """Serving factors minimising log errors over ``runs`` (every measured figure), the
    simulations spread over ``workers`` processes; ``efficiency`` prices the terms (default:
    each run's cluster's bundled profile or curves)."""
    figures = sum(len(run.measured) for run in runs)
    if figures < len(FACTORS) + 2:
        raise InputError(f"{figures} measured figures: the fit needs at least "
                         f"{len(FACTORS) + 2} (throughput, mean TTFT, mean ITL of the runs)")
    scale = np.array([hi for _, hi in FACTORS.values()])  # fit in units of the upper bound
    low, high = (np.array(b) / scale for b in zip(*FACTORS.values(), strict=True))

    def calibration_of(theta: np.ndarray) -> Calibration:
        return Calibration(serve_fitted_on=fitted_on,
                           **dict(zip(FACTORS, theta * scale, strict=True)))

    start = np.array([_START[k] for k in FACTORS]) / scale
    pool = None
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(workers)
    try:
        theta = least_squares(
            lambda t: _residuals(runs, calibration_of(t), pool, workers, efficiency), start,
            bounds=(low, high), diff_step=2e-2, max_nfev=max_evaluations).x
    finally:
        if pool is not None:
            pool.shutdown()
    fitted = calibration_of(theta)
    rounded = {k: float(f"{getattr(fitted, k):.4g}") for k in FACTORS}
    return fitted.model_copy(update=rounded)


# --- the measured-runs CSV ------------------------------------------------------------------

_ALIASES = {"output_tok_per_s": ("output_tok_per_s", "output_throughput"),
            "ttft_s": ("mean_ttft_ms",), "itl_s": ("mean_itl_ms",),
            "rate": ("request_rate", "request_rate_qps"), "isl": ("input_len", "isl"),
            "osl": ("output_len", "osl")}
REQUIRED = ("model", "tp", "input_len|isl", "output_len|osl", "num_requests",
            "request_rate|request_rate_qps")


def _cell(row: dict, names: tuple[str, ...]) -> str:
    return next((row[n].strip() for n in names if (row.get(n) or "").strip()), "")


def _number(text: str, column: str, where: str, whole: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{where}: {column} {text!r} is not a number") from None
    if not 0 < value <= (1e7 if whole else 1e12) or (whole and value != int(value)):
        raise InputError(f"{where}: {column} {text!r}: expected a positive "
                         f"{'whole number up to 10^7' if whole else 'number up to 10^12'}")
    return value


def read_serving_csv(path: Path, cluster: Cluster,
                     resolve_model: Callable[[str], tuple[ModelSpec, list[str]]],
                     engine: str = "vllm") -> list[ServingRun]:
    """Measured serving runs from ``path`` (columns in the module docstring; optional
    ``engine``, ``pp``, ``weights_precision``, ``kv_precision``, ``max_num_seqs``,
    ``max_num_batched_tokens``, ``label``); unknown engines and missing columns are
    InputError naming the row."""
    from sysplan.costmodels.serving.engines import default_knobs

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read the runs CSV ({error})") from None
    try:
        rows = list(csv.DictReader(text.splitlines(), restval=""))  # short row: empty cells
    except csv.Error as error:  # e.g. a field over the csv module's size limit
        raise InputError(f"{path}: not a readable runs CSV ({error})") from None
    if not rows:
        raise InputError(f"{path}: no runs (expected a header and one row per run)")
    runs = []
    for i, row in enumerate(rows, start=2):
        where = f"{path}:{i}"
        for needed in REQUIRED:
            if not _cell(row, tuple(needed.split("|"))):
                raise InputError(f"{where}: missing {needed.replace('|', ' or ')}")
        model = resolve_model(row["model"].strip())[0]
        tp = int(_number(row["tp"], "tp", where, whole=True))
        pp = int(_number(row.get("pp") or "1", "pp", where, whole=True))
        run_engine = (row.get("engine") or engine).strip().lower()
        if run_engine not in ("vllm", "sglang", "trtllm"):
            raise InputError(f"{where}: engine {run_engine!r}: expected vllm, sglang or trtllm")
        precision = {k: (row.get(k) or "bf16").strip().lower()
                     for k in ("weights_precision", "kv_precision")}
        for column, value in precision.items():
            if value not in ("bf16", "fp8"):
                raise InputError(f"{where}: {column} {value!r}: expected bf16 or fp8")
        knobs = default_knobs(run_engine, cluster.gpu, tp * pp)
        for knob in ("max_num_seqs", "max_num_batched_tokens"):
            if (row.get(knob) or "").strip():
                knobs = knobs.model_copy(update={knob: int(_number(row[knob], knob, where,
                                                                   whole=True))})
        rate_text = _cell(row, _ALIASES["rate"]).lower()
        rate = math.inf if rate_text == "inf" else _number(rate_text, "request_rate", where)
        measured = {}
        for key in METRICS:
            text_value = _cell(row, _ALIASES[key])
            if text_value:
                value = _number(text_value, _ALIASES[key][0], where)
                measured[key] = value / 1e3 if key != "output_tok_per_s" else value
        if not measured:
            raise InputError(f"{where}: nothing measured (give output_throughput, mean_ttft_ms "
                             "or mean_itl_ms)")
        runs.append(ServingRun(
            label=(row.get("label") or f"run {i - 1}").strip(), model=model, cluster=cluster,
            layout=ReplicaLayout(tp=tp, pp=pp, **precision), knobs=knobs,
            isl=int(_number(_cell(row, _ALIASES["isl"]), "input_len", where, whole=True)),
            osl=int(_number(_cell(row, _ALIASES["osl"]), "output_len", where, whole=True)),
            num_requests=int(_number(row["num_requests"], "num_requests", where, whole=True)),
            rate=rate, measured=measured))
    return runs
