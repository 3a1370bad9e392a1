"""The serving workload: request lengths, an arrival process or a trace, turned into requests.

    ServeWorkload(isl="lognormal:4000,0.5", osl=500, rate=8)   # Poisson, 8 requests/s
    make_requests(workload) -> Requests(arrival_s, input_tokens, output_tokens)

Lengths are ``4000`` (fixed), ``normal:MEAN,STD``, ``lognormal:MEAN,SIGMA`` (mean in tokens,
sigma of the log) or ``uniform:LOW,HIGH``, each optionally with ``,min=N,max=N``. Arrivals are
Poisson (default), Gamma with a coefficient of variation (``gamma:cv=2``, bursty above 1),
constant, or a trace's own timestamps; ``rate=inf`` queues every request at t=0 (offline) and
``concurrency`` is closed-loop load the simulator keeps in flight. Input lengths, output
lengths and arrivals draw from separate streams of the seed, so for one seed the lengths do not
change with the rate and Poisson arrivals only rescale (common random numbers for bisection).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from sysplan.core.errors import InputError
from sysplan.core.types import Frozen
from sysplan.core.units import ascii_float, length_tokens
from sysplan.workloads.slo import (  # re-exported: one import for serving
    LatencyPercentiles,
    RequestMetrics,
    ServeSummary,
    Slo,
    SloCheck,
    parse_slos,
    summarize,
)

__all__ = [
    "ArrivalKind", "LatencyPercentiles", "LengthSpec", "RequestMetrics", "Requests",
    "ServeSummary", "ServeWorkload", "Slo", "SloCheck", "load_trace", "make_requests",
    "parse_arrival", "parse_length", "parse_slos", "summarize",
]

LengthKind = Literal["fixed", "normal", "lognormal", "uniform"]
ArrivalKind = Literal["poisson", "gamma", "constant", "trace"]
DEFAULT_NUM_REQUESTS = 2000
#: The longest request length any length parameter accepts: 2**24 tokens (16,777,216), above
#: every model's context; larger values only overflow the sampler or never finish simulating.
MAX_LENGTH_TOKENS = 16_777_216
#: Largest lognormal SIGMA (the spread of the log-length; real traces have 0.3 to 1.5).
MAX_SIGMA = 10.0
#: Accepted gamma coefficients of variation (shape 1/cv^2 from 1e6 down to 1e-6).
CV_RANGE = (1e-3, 1e3)

_FORMS = {"fixed": "TOKENS", "normal": "normal:MEAN,STD", "lognormal": "lognormal:MEAN,SIGMA",
          "uniform": "uniform:LOW,HIGH"}
_ALL_FORMS = ("TOKENS (a positive integer, or with a binary suffix: 4k = 4,096), normal:MEAN,STD, "
              "lognormal:MEAN,SIGMA or uniform:LOW,HIGH")
#: Parameters each kind needs, in the order they are written.
_PARAMETERS = {"fixed": ("mean_tokens",), "normal": ("mean_tokens", "std_tokens"),
               "lognormal": ("mean_tokens", "sigma"), "uniform": ("low_tokens", "high_tokens")}


class LengthSpec(Frozen):
    """A distribution of request lengths in tokens; samples are rounded and clipped to bounds."""

    kind: LengthKind = Field(description="fixed, normal, lognormal or uniform.")
    mean_tokens: float | None = Field(
        default=None, description="fixed: the length; normal and lognormal: the mean.")
    std_tokens: float | None = Field(default=None, description="normal: standard deviation.")
    sigma: float | None = Field(default=None, description="lognormal: std of the log-length.")
    low_tokens: int | None = Field(default=None, description="uniform: smallest length.")
    high_tokens: int | None = Field(default=None, description="uniform: largest length.")
    min_tokens: int = Field(default=1, description="Samples below are raised to it (>= 1).")
    max_tokens: int | None = Field(default=None, description="Samples above are cut to it.")

    @model_validator(mode="after")
    def _check(self) -> LengthSpec:
        needed = _PARAMETERS[self.kind]
        for name in dict.fromkeys(p for ps in _PARAMETERS.values() for p in ps):
            if (getattr(self, name) is None) == (name in needed):
                raise InputError(f"{self}: expected {_FORMS[self.kind]} (no {name})")
        top = math.inf if self.max_tokens is None else self.max_tokens
        problems = {
            "the length must be a positive integer": self.kind == "fixed" and not (
                self.mean_tokens >= 1 and float(self.mean_tokens).is_integer()),
            "MEAN must be at least 1": self.kind in ("normal", "lognormal")
            and not self.mean_tokens >= 1,
            "STD must be >= 0": self.kind == "normal" and not self.std_tokens >= 0,
            "SIGMA must be >= 0": self.kind == "lognormal" and not self.sigma >= 0,
            "1 <= LOW <= HIGH is required": self.kind == "uniform"
            and not 1 <= self.low_tokens <= self.high_tokens,
            "1 <= min <= max is required": not 1 <= self.min_tokens <= top,
            f"SIGMA must be at most {MAX_SIGMA:g}": self.kind == "lognormal"
            and not self.sigma <= MAX_SIGMA,
            f"lengths must be at most {MAX_LENGTH_TOKENS:,} tokens": any(
                value is not None and not value <= MAX_LENGTH_TOKENS
                for value in (self.mean_tokens, self.std_tokens, self.low_tokens,
                              self.high_tokens, self.min_tokens, self.max_tokens)),
        }
        for problem, failed in problems.items():
            if failed:
                raise InputError(f"{self}: {problem}")
        return self

    def __str__(self) -> str:
        values = [getattr(self, name) for name in _PARAMETERS[self.kind]]
        text = ",".join(f"{v:.15g}" if v is not None else "?" for v in values)
        text = text if self.kind == "fixed" else f"{self.kind}:{text}"
        bounds = ("" if self.min_tokens == 1 else f",min={self.min_tokens}") + (
            "" if self.max_tokens is None else f",max={self.max_tokens}")
        return text + bounds

    @property
    def mean(self) -> float:
        """Mean of the distribution before rounding and clipping, in tokens."""
        if self.kind == "uniform":
            return (self.low_tokens + self.high_tokens) / 2
        return float(self.mean_tokens)

    def sample(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """``count`` int64 lengths, rounded and clipped to [min_tokens, max_tokens]."""
        if self.kind == "fixed":
            values = np.full(count, self.mean_tokens)
        elif self.kind == "normal":
            values = rng.normal(self.mean_tokens, self.std_tokens, count)
        elif self.kind == "lognormal":
            # E[X] = exp(mu + sigma^2 / 2) for a lognormal (Johnson, Kotz & Balakrishnan, ch. 14)
            mu = math.log(self.mean_tokens) - self.sigma**2 / 2
            values = rng.lognormal(mu, self.sigma, count)
        else:
            values = rng.integers(self.low_tokens, self.high_tokens, size=count, endpoint=True)
        top = MAX_LENGTH_TOKENS if self.max_tokens is None else self.max_tokens
        return np.clip(np.rint(values), self.min_tokens, top).astype(np.int64)


def _number(text: str, integer: bool) -> float | int:
    value = length_tokens(text)  # 4000 or 4k; ValueError on junk, caught by the caller
    if not math.isfinite(value) or (integer and not value.is_integer()):
        raise ValueError(text)
    return int(value) if integer else value


def parse_length(value: str | int | LengthSpec, field: str) -> LengthSpec:
    """A LengthSpec from ``4000``, ``'normal:4000,800'``, ``'lognormal:4000,0.5,max=16000'``."""
    if isinstance(value, LengthSpec):
        return value
    text = str(value).strip()
    kind, colon, rest = text.partition(":")
    kind = kind.strip().lower() if colon else "fixed"
    rest = rest if colon else text
    if kind not in _FORMS or (kind == "fixed" and colon):
        raise InputError(f"{field} {text}: expected {_ALL_FORMS}")
    accepted = (_ALL_FORMS if kind == "fixed"
                else f"{_FORMS[kind]} (optionally {_FORMS[kind]},min=N,max=N)")
    parts = [part.strip() for part in rest.split(",")]
    names = _PARAMETERS[kind]
    positional, keywords = parts[: len(names)], parts[len(names) :]
    try:
        fields: dict = {"kind": kind}
        for name, part in zip(names, positional, strict=True):
            fields[name] = _number(part, integer=kind in ("fixed", "uniform"))
        for part in keywords:
            key, equals, number = part.partition("=")
            key = f"{key.strip().lower()}_tokens"
            if kind == "fixed" or not equals or key not in ("min_tokens", "max_tokens") \
                    or key in fields:
                raise ValueError(part)
            fields[key] = _number(number, integer=True)
    except ValueError:
        raise InputError(f"{field} {text}: expected {accepted}") from None
    try:
        return LengthSpec(**fields)
    except InputError as error:
        raise InputError(f"{field} {text}: {str(error).partition(': ')[2]}") from None


def parse_arrival(value: str, field: str = "--arrival") -> tuple[ArrivalKind, float | None]:
    """(kind, cv) from ``'poisson'``, ``'constant'``, ``'trace'``, ``'gamma:cv=2'``."""
    text = value.strip()
    kind, colon, rest = text.lower().partition(":")
    if kind in ("poisson", "constant", "trace") and not colon:
        return kind, None  # type: ignore[return-value]
    number = rest.removeprefix("cv=").strip()
    try:
        cv = ascii_float(number) if kind == "gamma" else math.nan
    except ValueError:
        cv = math.nan
    low, high = CV_RANGE
    if not low <= cv <= high:
        raise InputError(f"{field} {text}: expected poisson, constant, trace or gamma:cv=CV "
                         f"with CV from {low:g} to {high:g} (e.g. gamma:cv=2; 1 is Poisson)")
    return "gamma", cv


@dataclass(frozen=True, eq=False)
class Requests:
    """The requests of one run, sorted by arrival (read-only numpy arrays, one entry each)."""

    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray

    def __post_init__(self) -> None:
        for name, dtype in (("arrival_s", np.float64), ("input_tokens", np.int64),
                            ("output_tokens", np.int64)):
            array = np.array(getattr(self, name), dtype=dtype)
            array.setflags(write=False)
            object.__setattr__(self, name, array)
        assert self.arrival_s.shape == self.input_tokens.shape == self.output_tokens.shape
        assert np.all(np.diff(self.arrival_s) >= 0), "arrivals must be sorted"
        assert self.input_tokens.size == 0 or min(self.input_tokens.min(),
                                                   self.output_tokens.min()) >= 1

    def __len__(self) -> int:
        return self.arrival_s.size


#: Accepted spellings of each trace column, preferred first.
TRACE_COLUMNS = {"arrival_s": ("arrival_s", "timestamp"),
                 "input_tokens": ("input_tokens", "input_len"),
                 "output_tokens": ("output_tokens", "output_len")}


def _trace_value(where: str, row: dict, column: str) -> float | int:
    key = next((k for k in TRACE_COLUMNS[column] if k in row), None)
    if key is None or row[key] in (None, ""):
        raise InputError(f"{where}: no {' or '.join(TRACE_COLUMNS[column])} value")
    raw = row[key]
    try:
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
            raise TypeError(raw)
        value = _number(str(raw), integer=column != "arrival_s")
        if column != "arrival_s" and not 1 <= value <= MAX_LENGTH_TOKENS:
            raise ValueError(raw)
    except (TypeError, ValueError):
        accepted = ("a number of seconds" if column == "arrival_s"
                    else f"a positive integer (at most {MAX_LENGTH_TOKENS:,} tokens)")
        raise InputError(f"{where}: {key} {raw!r} is not {accepted}") from None
    return value


def _trace_rows(path: Path, text: str) -> list[tuple[int, dict]]:
    """(line number, record) of each non-blank line of a CSV (with header) or JSONL trace."""
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        try:
            return [(reader.line_num, row) for row in reader if any(row.values())]
        except csv.Error as error:  # e.g. a field over the csv module's size limit
            raise InputError(f"trace {path}: not a readable CSV ({error})") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"trace {path} line {number}: not JSON ({error.msg})") from None
        except RecursionError:
            raise InputError(f"trace {path} line {number}: nested too deeply to read (expected "
                             'a flat {"arrival_s": ..., "input_tokens": ..., "output_tokens": '
                             "...} object)") from None
        if not isinstance(record, dict):
            raise InputError(f"trace {path} line {number}: expected a JSON object "
                             '{"arrival_s": ..., "input_tokens": ..., "output_tokens": ...}')
        rows.append((number, record))
    return rows


def load_trace(path: str | Path) -> Requests:
    """Requests from a CSV or JSONL trace (columns in TRACE_COLUMNS; others are ignored).

    Timestamps are seconds; requests are sorted by them (stable) and shifted to start at 0.
    """
    path = Path(path)
    if path.suffix.lower() not in (".csv", ".jsonl", ".ndjson"):
        raise InputError(f"trace {path}: expected a .csv or .jsonl file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"trace {path}: cannot read it ({error})") from None
    columns = [[_trace_value(f"trace {path} line {number}", row, column)
                for column in TRACE_COLUMNS] for number, row in _trace_rows(path, text)]
    if not columns:
        raise InputError(f"trace {path}: no requests (expected a header or JSON keys "
                         "arrival_s, input_tokens, output_tokens)")
    arrival, inputs, outputs = (np.array(column) for column in zip(*columns))
    order = np.argsort(arrival, kind="stable")
    return Requests(arrival_s=arrival[order] - arrival.min(), input_tokens=inputs[order],
                    output_tokens=outputs[order])


class ServeWorkload(Frozen):
    """Traffic to serve: lengths (or a trace) and an open- or closed-loop arrival process."""

    isl: LengthSpec | None = Field(default=None, description="Input lengths (not with trace).")
    osl: LengthSpec | None = Field(default=None, description="Output lengths (not with trace).")
    arrival: ArrivalKind = Field(default="poisson", description="Arrival process.")
    rate: float | None = Field(
        default=None, description="Offered load, requests/s; inf = all at t=0 (offline). With "
        "arrival trace it rescales the trace's timestamps to this mean rate.")
    cv: float | None = Field(
        default=None, description="gamma: coefficient of variation of inter-arrival gaps.")
    concurrency: int | None = Field(
        default=None, description="Closed loop: requests kept in flight (not with rate).")
    num_requests: int = Field(
        default=DEFAULT_NUM_REQUESTS, description="Requests to simulate (a trace: at most).")
    seed: int = Field(default=0, description="Seed of every random draw.")
    trace: Path | None = Field(
        default=None, description="CSV/JSONL trace: its lengths, and its timestamps when "
        "arrival is trace; with another arrival its (input, output) pairs are resampled.")

    @model_validator(mode="before")
    @classmethod
    def _parse_strings(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name in ("isl", "osl"):
            if isinstance(data.get(name), (str, int)):
                data[name] = parse_length(data[name], f"--{name}")
        # every spelling goes through parse_arrival (one-line errors), except a bare "gamma"
        # whose cv comes as its own field
        if isinstance(data.get("arrival"), str) and data["arrival"].strip().lower() != "gamma":
            kind, cv = parse_arrival(data["arrival"])
            if data.get("cv") not in (None, cv):
                raise InputError(f"--arrival {data['arrival']} and cv={data['cv']} disagree")
            data["arrival"], data["cv"] = kind, cv
        return data

    @model_validator(mode="after")
    def _check(self) -> ServeWorkload:
        lengths = self.isl is not None or self.osl is not None
        problems = {
            "--rate and --concurrency are exclusive: give an open-loop rate (requests/s) "
            "or a closed-loop concurrency": self.rate is not None and self.concurrency is not None,
            f"--rate {self.rate}: expected a positive number of requests/s or inf":
                self.rate is not None and not self.rate > 0,
            f"--concurrency {self.concurrency}: expected at least 1":
                self.concurrency is not None and self.concurrency < 1,
            f"--num-requests {self.num_requests}: expected at least 1": self.num_requests < 1,
            f"--arrival gamma needs a cv from {CV_RANGE[0]:g} to {CV_RANGE[1]:g} (e.g. "
            "gamma:cv=2)": self.arrival == "gamma"
            and not (self.cv is not None and CV_RANGE[0] <= self.cv <= CV_RANGE[1]),
            f"cv applies only to --arrival gamma, not {self.arrival}":
                self.arrival != "gamma" and self.cv is not None,
            "--arrival trace needs --trace FILE": self.arrival == "trace" and self.trace is None,
            "--trace supplies the lengths: drop --isl/--osl": self.trace is not None and lengths,
            "--isl and --osl are both needed (or a --trace)":
                self.trace is None and (self.isl is None or self.osl is None),
            f"--arrival {self.arrival} needs an open-loop --rate, not --concurrency":
                self.concurrency is not None and self.arrival in ("gamma", "constant"),
        }
        for problem, failed in problems.items():
            if failed:
                raise InputError(problem)
        return self


def _arrival_times(workload: ServeWorkload, count: int, rng: np.random.Generator) -> np.ndarray:
    """Open-loop arrival times starting at 0 (``rate`` finite)."""
    rate = workload.rate
    if workload.arrival == "constant":
        gaps = np.full(count, 1 / rate)
    elif workload.arrival == "gamma":
        # Gamma gaps with shape k = 1/cv^2, mean 1/rate (vllm bench serve --burstiness = k)
        shape = 1 / workload.cv**2
        gaps = rng.standard_gamma(shape, count) / (shape * rate)
    else:
        gaps = rng.standard_exponential(count) / rate  # Poisson process: exponential gaps
    return np.cumsum(gaps) - gaps[0]


def make_requests(workload: ServeWorkload) -> Requests:
    """The workload's requests, deterministic for its seed.

    Closed loop (``concurrency``) and ``rate=inf`` give every request arrival 0: the simulator
    admits them as capacity (or the concurrency) allows.
    """
    input_rng, output_rng, arrival_rng = (
        np.random.default_rng(child) for child in np.random.SeedSequence(workload.seed).spawn(3))
    count = workload.num_requests
    if workload.trace is not None:
        trace = load_trace(workload.trace)
        if workload.arrival == "trace":
            count = min(count, len(trace))
            picked = np.arange(count)
        else:
            picked = input_rng.integers(0, len(trace), size=count)
        inputs, outputs = trace.input_tokens[picked], trace.output_tokens[picked]
    else:
        inputs = workload.isl.sample(count, input_rng)
        outputs = workload.osl.sample(count, output_rng)
    if workload.concurrency is not None or workload.rate == math.inf:
        arrivals = np.zeros(count)
    elif workload.arrival == "trace":
        arrivals = trace.arrival_s[:count]
        span = arrivals[-1] - arrivals[0]
        if workload.rate is not None and span > 0:
            arrivals = arrivals * ((count - 1) / span) / workload.rate  # to mean rate `rate`
    elif workload.rate is None:
        raise InputError("the workload needs --rate (requests/s, or inf) or --concurrency")
    else:
        arrivals = _arrival_times(workload, count, arrival_rng)
    return Requests(arrival_s=arrivals, input_tokens=inputs, output_tokens=outputs)
