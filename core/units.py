"""Parse human quantities with explicit units into SI (house style 6: one module parses units).

Every parser takes the value (a YAML scalar or a CLI string) and the ``field`` it came from,
and returns SI: bytes, bytes/s, seconds, FLOP/s, watts, or a plain count. Anything it cannot
read raises ``InputError`` with one line naming the field, the value and an accepted example:

    memory: '80' has no unit (write e.g. 80GiB)

Decimal prefixes (K, M, G, T, P) are powers of 1000 and binary ones (KiB, MiB, GiB, TiB) powers
of 1024 (IEC 80000-13). In bandwidths a lower-case ``b`` is a bit and an upper-case ``B`` a
byte, so ``400Gbps`` is 50 GB/s. Case is otherwise forgiven where the reading is unambiguous
(``tflops``, ``gib``); ``gb/s`` is refused because it could be bits or bytes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

from sysplan.core.errors import InputError

__all__ = [
    "parse_bandwidth",
    "parse_bytes",
    "parse_count",
    "parse_flops",
    "parse_power",
    "parse_time",
]

_NUMBER_AND_UNIT = re.compile(
    r"^\s*(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(?P<unit>\S*?)\s*$",
    re.ASCII,  # digits 0-9 only: ``\d`` would also match other scripts' digits
)

#: The largest quantity any parser returns, in SI units (bytes, seconds, ...): far above any
#: real machine or job, and small enough that sums and products of a few stay finite floats.
LARGEST = 10**30
#: The most GPUs sysplan plans for (2**20): any GPU count, parallel degree or cluster size.
MAX_GPUS = 1_048_576
#: Longest number text read; longer is refused before it reaches int/Fraction.
_MAX_DIGITS = 64

_DECIMAL = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}
#: Bytes in a GiB, for printing sizes
GIB = _BINARY["Gi"]


@dataclass(frozen=True)
class _Quantity:
    """What one parser accepts: unit -> SI multiplier, and how to show an example."""

    what: str
    units: dict[str, Fraction]
    example_units: tuple[str, ...]
    sample_number: str
    unit_required: bool = True
    si_unit: str = ""


def _byte_units() -> dict[str, Fraction]:
    units = {"B": Fraction(1), "kB": Fraction(1000)}
    units.update({f"{p}B": Fraction(m) for p, m in _DECIMAL.items()})
    units.update({f"{p}B": Fraction(m) for p, m in _BINARY.items()})
    return units


def _bandwidth_units() -> dict[str, Fraction]:
    units: dict[str, Fraction] = {}
    for prefix, multiplier in [("", 1), ("k", 1000), *_DECIMAL.items()]:
        bits = Fraction(multiplier, 8)
        for suffix in ("bps", "b/s", "bit/s"):
            units[f"{prefix}{suffix}"] = bits
        for suffix in ("B/s", "Bps"):
            units[f"{prefix}{suffix}"] = Fraction(multiplier)
    units.update({f"{p}B/s": Fraction(m) for p, m in _BINARY.items()})
    return units


def _flops_units() -> dict[str, Fraction]:
    units: dict[str, Fraction] = {}
    for prefix, multiplier in [("", 1), *_DECIMAL.items(), ("E", 10**18)]:
        for suffix in ("FLOP/s", "FLOPS"):
            units[f"{prefix}{suffix}"] = Fraction(multiplier)
    return units


_BYTES = _Quantity("a size", _byte_units(), ("GiB",), "80", si_unit=" B")
_BANDWIDTH = _Quantity("a bandwidth", _bandwidth_units(), ("Gbps", "GB/s"), "400",
                       si_unit=" B/s")
_TIME = _Quantity(
    "a time",
    {
        "ns": Fraction(1, 10**9),
        "us": Fraction(1, 10**6),
        "\u00b5s": Fraction(1, 10**6),  # micro sign
        "\u03bcs": Fraction(1, 10**6),  # Greek mu
        "ms": Fraction(1, 10**3),
        "s": Fraction(1),
        "min": Fraction(60),
        "h": Fraction(3600),
    },
    ("us", "ms"),
    "200",
    si_unit=" s",
)
_FLOPS = _Quantity("a FLOP rate", _flops_units(), ("TFLOP/s",), "989", si_unit=" FLOP/s")
_POWER = _Quantity(
    "a power", {"W": Fraction(1), "kW": Fraction(10**3), "MW": Fraction(10**6)}, ("W",), "700",
    si_unit=" W",
)
_COUNT = _Quantity(
    "a count",
    {"": Fraction(1), "k": Fraction(10**3)} | {p: Fraction(m) for p, m in _DECIMAL.items()},
    ("M",),
    "4",
    unit_required=False,
)


def _examples(number: str, quantity: _Quantity) -> str:
    return " or ".join(f"{number}{unit}" for unit in quantity.example_units)


def _fail(field: str, shown: str, problem: str, example: str) -> InputError:
    return InputError(f"{field}: {shown} {problem} (write e.g. {example})")


def _lookup_unit(unit: str, quantity: _Quantity) -> Fraction | None:
    """Exact match first; otherwise a case-insensitive match if every reading agrees."""
    if unit in quantity.units:
        return quantity.units[unit]
    readings = {m for name, m in quantity.units.items() if name.lower() == unit.lower()}
    return readings.pop() if len(readings) == 1 else None


def _split(value: object, field: str, quantity: _Quantity) -> tuple[str, str]:
    """The number text and the unit text of ``value``, or an InputError naming ``field``."""
    default_example = _examples(quantity.sample_number, quantity)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _fail(field, repr(value), f"is not {quantity.what}", default_example)
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(field, repr(str(value)), "is not a finite number", default_example)
    if not isinstance(value, str):
        return repr(value), ""
    match = _NUMBER_AND_UNIT.match(value)
    if match is None:
        raise _fail(field, repr(value), f"is not {quantity.what} with a unit", default_example)
    return match["number"], match["unit"]


def _parse(value: object, field: str, quantity: _Quantity) -> Fraction:
    """``value`` in SI as an exact fraction, or an InputError naming ``field``."""
    number, unit = _split(value, field, quantity)
    shown = repr(value if isinstance(value, str) else number)
    example = _examples(number.lstrip("+-"), quantity)
    if not unit and quantity.unit_required:
        raise _fail(field, shown, "has no unit", example)
    multiplier = _lookup_unit(unit, quantity)
    if multiplier is None:
        spellings = [u for u in quantity.units if u.lower() == unit.lower()]
        problem = (
            f"has an ambiguous unit {unit!r} (one of {', '.join(spellings)})"
            if spellings
            else f"has an unknown unit {unit!r}"
        )
        raise _fail(field, shown, problem, example)
    too_large = f"is too large (accepted: at most 1e30{quantity.si_unit})"
    plain = _examples(quantity.sample_number, quantity)
    if len(number) > _MAX_DIGITS:
        raise _fail(field, shown, f"has more than {_MAX_DIGITS} characters", plain)
    magnitude = abs(float(number))  # inf past ~1.8e308; 0.0 below ~5e-324
    if magnitude > 1e300:
        raise _fail(field, shown, too_large, plain)
    amount = Fraction(number) * multiplier if magnitude else Fraction(0)
    if amount < 0:
        raise _fail(field, shown, "is negative", example)
    if amount > LARGEST:
        raise _fail(field, shown, too_large, plain)
    return amount


def parse_bytes(value: object, field: str) -> int:
    """Bytes from ``'80GiB'``, ``'40 GB'``, ``'512MiB'`` (B, KB..PB decimal, KiB..PiB binary)."""
    return round(_parse(value, field, _BYTES))


def parse_bandwidth(value: object, field: str) -> float:
    """Bytes/s from ``'400Gbps'`` (bits), ``'3.35TB/s'``, ``'25 GB/s'``, ``'50GiB/s'``."""
    return float(_parse(value, field, _BANDWIDTH))


def parse_time(value: object, field: str) -> float:
    """Seconds from ``'500ns'``, ``'1.5us'``, ``'200ms'``, ``'2s'``, ``'5min'``, ``'1h'``."""
    return float(_parse(value, field, _TIME))


def parse_flops(value: object, field: str) -> float:
    """FLOP/s from ``'989TFLOP/s'``, ``'989 TFLOPS'``, ``'1.979PFLOP/s'``."""
    return float(_parse(value, field, _FLOPS))


def parse_power(value: object, field: str) -> float:
    """Watts from ``'700W'``, ``'1.2kW'``."""
    return float(_parse(value, field, _POWER))


def parse_count(value: object, field: str) -> float:
    """A plain count from ``4096``, ``'4M'``, ``'1.5k'``, ``'2G'`` (decimal K, M, G, T, P)."""
    return float(_parse(value, field, _COUNT))


def ascii_float(text: object) -> float:
    """``float(text)`` for text written in ASCII; ValueError otherwise.

    ``float`` also reads other scripts' digits ('\u0663' is 3.0, full-width '\uff11' is 1.0),
    which no option, table or file of sysplan means to accept.
    """
    text = str(text)
    if not text.isascii():
        raise ValueError(f"not ASCII: {text!r}")
    return float(text)


#: Suffixes of a sequence length: "8k" tokens is 8,192, as context lengths are quoted.
_LENGTH_SUFFIXES = {"k": 2**10, "m": 2**20}


def length_tokens(text: object) -> float:
    """Tokens of a sequence length: ``4096``, ``8k`` (8,192) or ``1M`` (1,048,576); binary
    suffixes, as context lengths are quoted. ValueError otherwise (not ASCII, junk)."""
    text = str(text).strip()
    factor = _LENGTH_SUFFIXES.get(text[-1:].lower())
    return ascii_float(text[:-1]) * factor if factor else ascii_float(text)
