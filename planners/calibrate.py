"""Fit the cost model's free factors to measured training steps (``sysplan calibrate``).

The factors (``profiles.schema.Calibration``) scale GEMM and attention efficiency, collective
bandwidth inside and across nodes, and the share of compute that hides data-parallel
traffic. They are fitted by bounded least squares on log(predicted / measured) step time
(scipy ``least_squares``), so a 10 % miss weighs the same on a 1 s and a 100 s step; the
allocator reserve is fitted separately to the peak-memory column when there is one. The
leave-one-out error (refit without each row, predict it) says how well the fit generalises.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from pydantic import ValidationError
from scipy.optimize import least_squares

from sysplan.core.errors import InputError
from sysplan.costmodels.candidates import Candidates
from sysplan.costmodels.efficiency import Efficiency
from sysplan.costmodels.training import price_training
from sysplan.costmodels.types import ParallelConfig
from sysplan.hardware.types import Cluster
from sysplan.models.spec import ModelSpec
from sysplan.profiles.schema import Calibration
from sysplan.workloads.training import TrainJob

#: Free factors and their bounds (a factor outside them means the model, not the
#: hardware, is wrong and should be fixed instead).
FACTORS = {
    "gemm_scale": (0.25, 4.0),
    "attention_scale": (0.25, 4.0),
    "comm_scale_node": (0.1, 4.0),
    "comm_scale_network": (0.1, 4.0),
    "overlap": (0.0, 1.0),
}
MIN_EXTRA_ROWS = 2  # rows needed beyond one per free factor


@dataclass(frozen=True)
class MeasuredRun:
    """One measured training run: what ran and how long a step took."""

    label: str
    model: ModelSpec
    job: TrainJob
    parallel: ParallelConfig
    step_time_s: float
    peak_memory_bytes: float | None = None


@dataclass(frozen=True)
class RowFit:
    """A run's measured step and the prediction before, after, and left out of the fit."""

    label: str
    measured_s: float
    before_s: float
    after_s: float
    left_out_s: float


@dataclass(frozen=True)
class CalibrationFit:
    """The fitted factors and how well they predict."""

    calibration: Calibration
    rows: tuple[RowFit, ...]

    def mape(self, column: str) -> float:
        """Mean absolute percentage error of ``before_s``, ``after_s`` or ``left_out_s``."""
        return float(np.mean([abs(getattr(r, column) / r.measured_s - 1) for r in self.rows]))


def predict(runs: list[MeasuredRun], cluster: Cluster, eff: Efficiency) -> np.ndarray:
    """Predicted step time of every run: runs of one model and job are priced in one
    vectorised call (a fit evaluates this hundreds of times)."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(runs):
        groups.setdefault((r.model, r.job), []).append(i)
    steps = np.empty(len(runs), dtype=float)
    for (model, job), members in groups.items():
        configs = Candidates.from_configs([runs[i].parallel for i in members])
        steps[members] = price_training(model, job, cluster, configs, eff).step_time_s
    return steps


def _with(eff: Efficiency, theta: np.ndarray, names: Sequence[str]) -> Efficiency:
    values = dict(zip(names, (float(t) for t in theta), strict=True))
    return replace(eff, calibration=eff.calibration.model_copy(update=values))


def _solve(runs, cluster, eff, start: np.ndarray, max_nfev: int,
           names: Sequence[str]) -> np.ndarray:
    measured = np.log([r.step_time_s for r in runs])
    low, high = zip(*(FACTORS[name] for name in names), strict=True)

    def residual(theta):
        return np.log(predict(runs, cluster, _with(eff, theta, names))) - measured

    return least_squares(residual, start, bounds=(low, high), diff_step=1e-3,
                         max_nfev=max_nfev).x


def fit_calibration(runs: list[MeasuredRun], cluster: Cluster, eff: Efficiency,
                    fitted_on: str = "", factors: Sequence[str] | None = None
                    ) -> CalibrationFit:
    """Fit ``factors`` (default: all of ``FACTORS``; the others keep ``eff``'s values) to
    ``runs`` on ``cluster``, starting from ``eff``'s calibration."""
    names = tuple(FACTORS) if factors is None else tuple(factors)
    unknown = sorted(set(names) - set(FACTORS))
    if unknown or not names:
        raise InputError(f"calibrate: factors {', '.join(unknown) or '(none)'} not accepted; "
                         f"choose among {', '.join(FACTORS)}")
    needed = len(names) + MIN_EXTRA_ROWS
    if len(runs) < needed:
        raise InputError(f"calibrate: {len(runs)} measured rows; fitting {len(names)} factors "
                         f"needs at least {needed}")
    start = np.array([getattr(eff.calibration, name) for name in names], dtype=float)
    start = np.clip(start, *zip(*(FACTORS[name] for name in names), strict=True))
    theta = _solve(runs, cluster, eff, start, max_nfev=200, names=names)
    fitted = _with(eff, theta, names)
    before, after = predict(runs, cluster, eff), predict(runs, cluster, fitted)
    left_out = []
    for i in range(len(runs)):
        others = runs[:i] + runs[i + 1:]
        loo = _with(eff, _solve(others, cluster, eff, theta, max_nfev=40, names=names), names)
        left_out.append(predict([runs[i]], cluster, loo)[0])
    reserve = _fit_reserve(runs, cluster, fitted)
    calibration = fitted.calibration.model_copy(
        update={"allocator_reserve": reserve, "fitted_on": fitted_on})
    rows = tuple(RowFit(r.label, r.step_time_s, float(b), float(a), float(o))
                 for r, b, a, o in zip(runs, before, after, left_out, strict=True))
    return CalibrationFit(calibration, rows)


def _fit_reserve(runs: list[MeasuredRun], cluster: Cluster, eff: Efficiency) -> float | None:
    """Allocator reserve (share of activations + logits) that best explains peak memory."""
    with_memory = [r for r in runs if r.peak_memory_bytes]
    if not with_memory:
        return eff.calibration.allocator_reserve
    shares = []
    for run in with_memory:
        priced = price_training(run.model, run.job, cluster,
                                Candidates.from_configs([run.parallel]), eff)
        memory = {k: float(v[0]) for k, v in priced.memory.items()}
        base = sum(memory.values()) - memory["allocator_reserve"]
        shares.append((run.peak_memory_bytes - base) / (memory["activations"] + memory["logits"]))
    return float(max(0.0, np.median(shares)))


# --- the measured-runs CSV --------------------------------------------------------------------

CSV_REQUIRED = ("model", "gpus", "global_batch", "seq_len", "step_time_s")
CSV_OPTIONAL = ("tp", "pp", "vpp", "dp", "cp", "ep", "etp", "micro_batch", "zero", "recompute",
                "sequence_parallel", "precision", "peak_memory_gib", "label")


def read_measured_csv(path: Path, resolve_model) -> list[MeasuredRun]:
    """Measured runs from a CSV (one row per run); InputError naming the row and column."""
    try:
        with path.open(encoding="utf-8", newline="") as stream:
            rows = list(csv.DictReader(stream, restval=""))  # a short row: empty cells
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not a UTF-8 text CSV (byte {error.start}: "
                         f"{error.reason})") from None
    except csv.Error as error:  # e.g. a field over the csv module's size limit
        raise InputError(f"{path}: not a readable CSV ({error})") from None
    if not rows:
        raise InputError(f"{path}: no rows (columns: {', '.join(CSV_REQUIRED)}, optional "
                         f"{', '.join(CSV_OPTIONAL)})")
    missing = [c for c in CSV_REQUIRED if c not in rows[0]]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}; required: "
                         f"{', '.join(CSV_REQUIRED)}")
    return [_run(row, index + 2, path, resolve_model) for index, row in enumerate(rows)]


#: Largest whole number and number a runs CSV cell holds (counts, tokens; seconds, GiB).
_MAX_CELL = {int: (2**30, "1,073,741,824"), float: (1e12, "1e12")}


def _run(row: dict[str, str], line: int, path: Path, resolve_model) -> MeasuredRun:
    where = f"{path}:{line}"

    def number(name: str, default=None, kind=int):
        text = (row.get(name) or "").strip()
        if not text:
            if default is None:
                raise InputError(f"{where}: {name} is empty")
            return default
        try:
            value = kind(text)
        except ValueError:
            raise InputError(f"{where}: {name} {text!r} is not a number") from None
        if not value > 0 and name not in ("zero",):
            raise InputError(f"{where}: {name} {text!r} must be positive")
        largest, shown = _MAX_CELL[kind]
        if not value <= largest:
            raise InputError(f"{where}: {name} {text!r} is out of range (at most {shown})")
        return value

    model, _ = resolve_model(row["model"])
    tp, pp, cp, vpp = number("tp", 1), number("pp", 1), number("cp", 1), number("vpp", 1)
    gpus = number("gpus")
    dp = number("dp", max(1, gpus // (tp * pp * cp)))
    if tp * pp * cp * dp != gpus:  # the layout the run used covers exactly its GPUs
        raise InputError(f"{where}: tp {tp} x pp {pp} x cp {cp} x dp {dp} is "
                         f"{tp * pp * cp * dp:,} GPUs, not the row's gpus {gpus:,}; accepted: "
                         "degrees whose product is gpus")
    if pp * vpp > model.num_layers:
        raise InputError(f"{where}: pp {pp} x vpp {vpp} stages for {model.name}'s "
                         f"{model.num_layers} layers; accepted: at most one layer per stage")
    precision = (row.get("precision") or "bf16").strip()
    job = TrainJob(seq_len=number("seq_len"), global_batch=number("global_batch"),
                   precision=precision if precision in ("bf16", "fp16", "fp8") else "bf16")
    try:
        parallel = ParallelConfig(
            tp=tp, pp=pp, vpp=vpp, dp=dp, cp=cp, ep=number("ep", 1),
            etp=number("etp", 1), micro_batch=number("micro_batch", 1),
            global_batch=job.global_batch, zero=number("zero", 0),
            recompute=(row.get("recompute") or "none").strip(),
            sequence_parallel=(row.get("sequence_parallel") or "0").strip() in ("1", "true"),
            schedule="none" if pp == 1 else ("interleaved-1f1b" if vpp > 1 else "1f1b"))
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(map(str, first["loc"]))
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InputError(f"{where}: {field + ': ' if field else ''}{message}") from None
    except ValueError as error:
        raise InputError(f"{where}: {str(error).splitlines()[-1].strip()}") from None
    memory = number("peak_memory_gib", 0.0, float) * 2**30 or None
    return MeasuredRun(row.get("label") or f"row {line}", model, job, parallel,
                       number("step_time_s", kind=float), memory)
