"""Sequence lengths of a training batch: a length file or a named distribution, and a step.

    lengths = parse_lengths("examples/lengths/long_tail.csv")      # histogram CSV
    lengths = parse_lengths("lognormal:8192,1.0,min=1024,max=131072")
    step = sample_step(lengths, batch_tokens="4M", seed=0)        # int64 lengths of one step

A length file is either one length per line (``# comments`` and blank lines ignored) or a
histogram CSV whose rows are ``length,count`` (an optional ``length,count`` header first).
Named distributions are the serving workload's length forms (``parse_length``): ``8192``,
``normal:MEAN,STD``, ``lognormal:MEAN,SIGMA`` or ``uniform:LOW,HIGH``, each with optional
``,min=N,max=N``. A step draws sequences until their tokens reach the global batch (the last
sequence may overshoot it, as a data loader that never splits a document does).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sysplan.core.errors import InputError
from sysplan.core.units import ascii_float
from sysplan.workloads.serving import MAX_LENGTH_TOKENS, LengthSpec, parse_length
from sysplan.workloads.training import batch_tokens as _batch_tokens

__all__ = ["LengthMix", "check_context", "check_step", "parse_lengths", "read_lengths",
           "sample_step"]

#: Most sequences one sampled step may hold: the mix search keeps arrays of sequences x
#: sequences (about 16,000 take a few seconds and ~0.3 GB; 100,000 ran out of memory).
MAX_STEP_SEQUENCES = 16_384

#: File suffixes read as length files; anything else is parsed as a distribution.
LENGTH_FILE_SUFFIXES = (".txt", ".csv", ".lengths")
_HEADER = ("length", "count")


@dataclass(frozen=True, eq=False)
class LengthMix:
    """Where sequence lengths come from: an empirical histogram or a LengthSpec."""

    source: str  # the file path or the distribution as written
    values: np.ndarray | None = None  # empirical: distinct lengths (int64, ascending)
    weights: np.ndarray | None = None  # empirical: how often each length occurs
    spec: LengthSpec | None = None  # named distribution

    def __post_init__(self) -> None:
        assert (self.spec is None) != (self.values is None), "one of spec or values"
        if self.values is not None:
            assert self.weights is not None and self.values.shape == self.weights.shape
            assert self.values.size and self.values.min() >= 1 and self.weights.sum() > 0

    @property
    def mean_tokens(self) -> float:
        """Mean length (of the distribution before clipping, for a named one)."""
        if self.spec is not None:
            return self.spec.mean
        return float(np.average(self.values, weights=self.weights))

    def sample(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """``count`` int64 lengths drawn independently."""
        if self.spec is not None:
            return self.spec.sample(count, rng)
        return rng.choice(self.values, size=count, p=self.weights / self.weights.sum())


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise InputError(f"--lengths {path}: cannot read it ({reason})") from None


def _positive_int(text: str, where: str, what: str, zero_ok: bool = False) -> int:
    try:
        value = ascii_float(text.strip())
        if not value.is_integer() or value < (0 if zero_ok else 1) or not (
                zero_ok or value <= MAX_LENGTH_TOKENS):
            raise ValueError(text)
    except ValueError:
        accepted = ("a whole number >= 0" if zero_ok
                    else f"a positive whole number of tokens (at most {MAX_LENGTH_TOKENS:,})")
        raise InputError(f"{where}: {what} {text.strip()!r} is not {accepted}") from None
    return int(value)


def read_lengths(path: str | Path) -> LengthMix:
    """The lengths in a file: one per line, or ``length,count`` histogram rows (CSV)."""
    path = Path(path)
    rows = []
    for number, raw in enumerate(_read_text(path).splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if line:
            rows.append((number, [cell.strip() for cell in line.split(",")]))
    if not rows:
        raise InputError(f"--lengths {path}: no lengths in the file (expected one length per "
                         "line or length,count rows)")
    if tuple(cell.lower() for cell in rows[0][1]) == _HEADER:
        rows = rows[1:]
    histogram = any(len(cells) > 1 for _, cells in rows)
    counts: dict[int, int] = {}
    for number, cells in rows:
        where = f"--lengths {path} line {number}"
        if len(cells) != (2 if histogram else 1):
            expected = "length,count" if histogram else "one length"
            raise InputError(f"{where}: expected {expected}, got {','.join(cells)!r}")
        length = _positive_int(cells[0], where, "length")
        count = _positive_int(cells[1], where, "count", zero_ok=True) if histogram else 1
        counts[length] = counts.get(length, 0) + count
    if not sum(counts.values()):
        raise InputError(f"--lengths {path}: every count is 0")
    values = np.array(sorted(counts), dtype=np.int64)
    weights = np.array([counts[v] for v in values], dtype=float)
    return LengthMix(source=str(path), values=values[weights > 0], weights=weights[weights > 0])


def parse_lengths(value: str | Path | LengthMix) -> LengthMix:
    """A LengthMix from a length file (``.txt``, ``.csv``, ``.lengths``) or a distribution."""
    if isinstance(value, LengthMix):
        return value
    text = str(value).strip()
    if isinstance(value, Path) or text.lower().endswith(LENGTH_FILE_SUFFIXES):
        return read_lengths(Path(text))
    return LengthMix(source=text, spec=parse_length(text, "--lengths"))


def check_context(lengths: LengthMix, context_tokens: int, model_name: str) -> None:
    """InputError unless the lengths ``lengths`` states fit the model's context.

    The stated length is the file's longest, or the distribution's ``max=``, its fixed length,
    its uniform HIGH, else (normal, lognormal) its mean, since those tails are unbounded.
    """
    if lengths.values is not None:
        longest, what = int(lengths.values.max()), "the longest length"
    else:
        spec = lengths.spec
        assert spec is not None
        if spec.max_tokens is not None:
            longest, what = spec.max_tokens, "max"
        elif spec.kind == "uniform":
            longest, what = spec.high_tokens, "HIGH"
        else:
            longest, what = spec.mean_tokens, "the length" if spec.kind == "fixed" else "MEAN"
    if longest > context_tokens:
        raise InputError(
            f"--lengths {lengths.source}: {what} {longest:,.0f} tokens is longer than "
            f"{model_name}'s context; accepted: lengths up to {context_tokens:,} tokens "
            f"(e.g. add ,max={context_tokens} to a distribution)")


def check_step(lengths: LengthMix, tokens_per_step: int) -> None:
    """InputError when a step of ``tokens_per_step`` tokens would hold more than
    MAX_STEP_SEQUENCES sequences of the mean length."""
    expected = tokens_per_step / lengths.mean_tokens
    if expected > MAX_STEP_SEQUENCES:
        shortest = -(-tokens_per_step // MAX_STEP_SEQUENCES)
        raise InputError(
            f"--lengths {lengths.source}: a step of {tokens_per_step:,} tokens would hold about "
            f"{expected:,.0f} sequences of {lengths.mean_tokens:,.0f} tokens on average; "
            f"accepted: at most {MAX_STEP_SEQUENCES:,} per step (a mean length of at least "
            f"{shortest:,} tokens, or a smaller --global-batch)")


def sample_step(lengths: LengthMix, batch_tokens: int | str, seed: int = 0,
                step: int = 0) -> np.ndarray:
    """One step's sequence lengths (int64): drawn until their sum reaches ``batch_tokens``.

    ``batch_tokens`` is a token count (``4194304`` or ``4M``). Step ``step`` of seed ``seed``
    is the same on every call (its own random stream).
    """
    tokens = _batch_tokens(batch_tokens) if isinstance(batch_tokens, str) else batch_tokens
    if not tokens >= 1:
        raise InputError(f"--global-batch {batch_tokens}: must be at least 1 token")
    rng = np.random.default_rng([seed, step])
    drawn: list[np.ndarray] = []
    total = 0
    count = 0
    while total < tokens:
        if count > MAX_STEP_SEQUENCES:  # clipping left the lengths far below their mean
            raise InputError(
                f"--lengths {lengths.source}: a step of {tokens:,.0f} tokens holds more than "
                f"{MAX_STEP_SEQUENCES:,} sequences as sampled; accepted: at most that many "
                "(longer lengths or a smaller --global-batch)")
        # enough draws for the expected remainder, at least 16
        chunk = lengths.sample(max(16, int(1.25 * (tokens - total) / lengths.mean_tokens)), rng)
        drawn.append(chunk)
        total += int(chunk.sum())
        count += chunk.size
    sequences = np.concatenate(drawn)
    cut = int(np.searchsorted(np.cumsum(sequences), tokens)) + 1
    return sequences[:cut].astype(np.int64)
