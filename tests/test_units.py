"""Unit parsing: hand-worked examples, error text, and format-then-parse round trips."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sysplan.core.errors import InputError
from sysplan.core.units import (
    parse_bandwidth,
    parse_bytes,
    parse_count,
    parse_flops,
    parse_power,
    parse_time,
)

# Independent oracle: unit -> SI multiplier, written out by hand (not read from the module).
BYTE_UNITS = {
    "B": 1, "KB": 10**3, "kB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
}
BANDWIDTH_UNITS = {
    "bps": 1 / 8, "Kbps": 1e3 / 8, "kbps": 1e3 / 8, "Mbps": 1e6 / 8, "Gbps": 1e9 / 8,
    "Tbps": 1e12 / 8, "Gb/s": 1e9 / 8, "Gbit/s": 1e9 / 8,
    "B/s": 1, "KB/s": 1e3, "MB/s": 1e6, "GB/s": 1e9, "TB/s": 1e12, "GiB/s": 2**30,
}
TIME_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0}
FLOPS_UNITS = {
    "FLOP/s": 1, "GFLOP/s": 1e9, "TFLOP/s": 1e12, "PFLOP/s": 1e15, "TFLOPS": 1e12,
    "tflops": 1e12, "TFLOPs": 1e12,
}
POWER_UNITS = {"W": 1, "kW": 1e3}
COUNT_UNITS = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}

PARSERS = [
    (parse_bandwidth, BANDWIDTH_UNITS),
    (parse_time, TIME_UNITS),
    (parse_flops, FLOPS_UNITS),
    (parse_power, POWER_UNITS),
    (parse_count, COUNT_UNITS),
]


def test_bytes_examples() -> None:
    assert parse_bytes("80GiB", "memory") == 80 * 2**30 == 85_899_345_920
    assert parse_bytes("40 GB", "memory") == 40_000_000_000
    assert parse_bytes("1.5KiB", "memory") == 1536
    assert parse_bytes("141gib", "memory") == 141 * 2**30


def test_bandwidth_examples() -> None:
    assert parse_bandwidth("400Gbps", "nic") == 50e9
    assert parse_bandwidth("3.35TB/s", "hbm") == 3.35e12
    assert parse_bandwidth("50GB/s", "link") == 50e9
    assert parse_bandwidth("25 GB/s", "link") == 25e9
    assert parse_bandwidth("200 Gb/s", "nic") == 25e9


def test_time_flops_power_count_examples() -> None:
    assert parse_time("1.5us", "latency") == pytest.approx(1.5e-6)
    assert parse_time("200ms", "slo") == pytest.approx(0.2)
    assert parse_time("2s", "slo") == 2.0
    assert parse_time("500ns", "latency") == pytest.approx(5e-7)
    assert parse_flops("989TFLOP/s", "peak") == 989e12
    assert parse_flops("989 TFLOPS", "peak") == 989e12
    assert parse_flops("1.979PFLOP/s", "peak") == pytest.approx(1.979e15)
    assert parse_power("700W", "power") == 700.0
    assert parse_power("1.2kW", "power") == 1200.0
    assert parse_count("4M", "--global-batch") == 4e6
    assert parse_count("4096", "--global-batch") == 4096.0
    assert parse_count(4096, "--global-batch") == 4096.0
    assert parse_count("1.5k", "--global-batch") == 1500.0


def test_bare_number_names_the_field() -> None:
    with pytest.raises(InputError) as caught:
        parse_bytes("80", "memory")
    assert str(caught.value) == "memory: '80' has no unit (write e.g. 80GiB)"
    with pytest.raises(InputError) as caught:
        parse_bytes(80, "memory")  # a YAML integer
    assert str(caught.value) == "memory: '80' has no unit (write e.g. 80GiB)"
    with pytest.raises(InputError) as caught:
        parse_bandwidth(400, "tiers[1].bandwidth")
    assert str(caught.value) == (
        "tiers[1].bandwidth: '400' has no unit (write e.g. 400Gbps or 400GB/s)"
    )
    with pytest.raises(InputError, match=r"^latency: '1\.5' has no unit \(write e\.g\. 1\.5us"):
        parse_time(1.5, "latency")


def test_bad_units_and_values_are_one_line_errors() -> None:
    cases = [
        (parse_bytes, "80GX", "memory: '80GX' has an unknown unit 'GX' (write e.g. 80GiB)"),
        (parse_bandwidth, "400 gb/s", (
            "bw: '400 gb/s' has an ambiguous unit 'gb/s' (one of Gb/s, GB/s) "
            "(write e.g. 400Gbps or 400GB/s)"
        )),
        (parse_bytes, "lots", "memory: 'lots' is not a size with a unit (write e.g. 80GiB)"),
        (parse_time, "-2ms", "latency: '-2ms' is negative (write e.g. 2us or 2ms)"),
        (parse_power, None, "power: None is not a power (write e.g. 700W)"),
        (parse_count, True, "batch: True is not a count (write e.g. 4M)"),
        (parse_count, "4X", "batch: '4X' has an unknown unit 'X' (write e.g. 4M)"),
    ]
    field_of = {parse_bytes: "memory", parse_bandwidth: "bw", parse_time: "latency",
                parse_power: "power", parse_count: "batch"}
    for parser, value, message in cases:
        with pytest.raises(InputError) as caught:
            parser(value, field_of[parser])
        assert str(caught.value) == message
        assert "\n" not in str(caught.value)


def test_non_finite_float_is_refused() -> None:
    with pytest.raises(InputError, match="not a finite number"):
        parse_count(float("inf"), "batch")


@given(
    number=st.integers(min_value=0, max_value=10**9),
    unit=st.sampled_from(sorted(BYTE_UNITS)),
    space=st.sampled_from(["", " "]),
)
def test_bytes_round_trip(number: int, unit: str, space: str) -> None:
    assert parse_bytes(f"{number}{space}{unit}", "memory") == number * BYTE_UNITS[unit]


@given(
    number=st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False),
    parser_and_units=st.sampled_from(PARSERS),
    data=st.data(),
)
def test_float_round_trip(
    number: float, parser_and_units: tuple[Callable[[object, str], float], dict[str, float]],
    data: st.DataObject,
) -> None:
    parser, units = parser_and_units
    unit = data.draw(st.sampled_from(sorted(units)))
    spellings = [f"{number!r}{unit}", f"{number!r} {unit}", f"{number:g}{unit}"]
    text = data.draw(st.sampled_from(spellings))
    written = float(text.removesuffix(unit).strip())
    parsed = parser(text, "field")
    assert math.isclose(parsed, written * units[unit], rel_tol=1e-12, abs_tol=1e-300)


def test_sequence_lengths_take_binary_suffixes():
    from sysplan.core.units import length_tokens

    assert length_tokens("8k") == 8192 and length_tokens("4K") == 4096
    assert length_tokens("1M") == 2**20 and length_tokens("4000") == 4000
    for bad in ("8x", "k", "٣k", ""):
        with pytest.raises(ValueError):
            length_tokens(bad)
