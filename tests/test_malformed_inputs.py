"""Malformed input of any kind ends as one ``error:`` line and exit 2, never a traceback.

Each case is a reported failure (a traceback, a hang or a wrong exit code); the checks are
that the command exits with the expected code, that stderr ends with exactly one error line
and that the line names the bad value and what is accepted.
"""

from __future__ import annotations

import pytest
from test_cli import invoke, stderr_lines


def error_line(result, code: int = 2) -> str:
    """The single ``error:`` line of a failed command (asserting the exit code and no traceback)."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in stderr_lines(result) if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert stderr_lines(result)[-1] == errors[0]
    return errors[0]


TRAIN = ("train", "--model", "llama2-7b", "--cluster", "dgx-a100")


def test_fp8_on_a_gpu_without_an_fp8_peak():
    line = error_line(invoke("train", "--model", "nemotron-4-15b", "--cluster", "dgx-a100",
                             "--precision", "fp8"))
    assert "--precision fp8" in line and "A100" in line and "no fp8 peak" in line
    assert line.endswith("accepted for it: bf16")


@pytest.mark.parametrize(("args", "shown"), [
    (("profile", "--tp", "\u00b2"), "--tp \u00b2"),
    ((*TRAIN, "--global-batch", "\u00b2"), "--global-batch \u00b2"),
    ((*TRAIN, "--tp", "\u00b2"), "--tp \u00b2"),
    ((*TRAIN, "--gpus", "\u0663"), "--gpus \u0663"),  # an Arabic-Indic 3: int() reads it
    ((*TRAIN, "--memory-headroom", "\u0663GiB"), "'\u0663GiB'"),
])
def test_non_ascii_digits_are_refused(args, shown):
    line = error_line(invoke(*args))
    assert shown in line
    assert "whole number" in line or "write e.g." in line or "expected" in line


@pytest.mark.parametrize(("args", "expected"), [
    ((*TRAIN, "--objective", "time-to-train", "--train-tokens", "1e400"),
     "--train-tokens: '1e400' is too large (accepted: at most 1e30)"),
    ((*TRAIN, "--memory-headroom", "1e400GiB"),
     "--memory-headroom: '1e400GiB' is too large (accepted: at most 1e30 B)"),
    ((*TRAIN, "--memory-headroom", "1e31B"), "at most 1e30 B"),
    ((*TRAIN, "--global-batch", "99999999999999999999"),
     "--global-batch 99999999999999999999: must be from 1 to 1,073,741,824 sequences"),
    ((*TRAIN, "--global-batch", "9e30T"), "at most 1e30"),
    ((*TRAIN, "--global-batch", "1P"), "accepted: at most 1,073,741,824 sequences"),
    ((*TRAIN, "--gpus", "99999999999999999999"),
     "--gpus 99999999999999999999: expected a whole number of at least 1 and at most 1,048,576"),
    ((*TRAIN, "--tp", "1048577"), "--tp 1048577: expected a whole number of at least 1 and at most 1,048,576"),
    (("serve", "--model", "8b", "--cluster", "dgx-h100", "--gpus", "9223372036854775808"),
     "--gpus 9223372036854775808: expected a whole number of at least 1 and at most 1,048,576"),
    (("profile", "--tp", "1,99999999999999999999"), "from 1 to 1,048,576"),
])
def test_out_of_range_numbers_name_the_range(args, expected):
    assert expected in error_line(invoke(*args))


def test_train_tokens_zero_is_refused():
    line = error_line(invoke(*TRAIN, "--train-tokens", "0"))
    assert line == "error: --train-tokens 0: must be at least 1 token (write e.g. 15T)"


def test_a_number_with_too_many_digits_is_refused():
    line = error_line(invoke(*TRAIN, "--memory-headroom", "1" * 5000 + "B"))
    assert "--memory-headroom" in line and "more than 64 characters" in line


SERVE = ("serve", "--model", "8b", "--cluster", "dgx-h100", "--num-requests", "20")


@pytest.mark.parametrize(("args", "expected"), [
    (("--osl", "uniform:1,1e30"),
     "--osl uniform:1,1e30: lengths must be at most 16,777,216 tokens"),
    (("--osl", "lognormal:1e300,1"), "lengths must be at most 16,777,216 tokens"),
    (("--isl", "lognormal:4000,1e200"), "SIGMA must be at most 10"),
    (("--arrival", "gamma:cv=1e-300", "--rate", "4"), "with CV from 0.001 to 1000"),
    (("--arrival", "gamma:cv=1e300", "--rate", "4"), "with CV from 0.001 to 1000"),
    (("--export", ","), "--export ',': name at least one of vllm, sglang, trtllm"),
    (("--export", "vllm,nope"), "--export nope: not accepted; choose from vllm, sglang, trtllm"),
])
def test_serve_workload_ranges(args, expected):
    assert expected in error_line(invoke(*SERVE, *args))


@pytest.mark.parametrize(("lengths", "expected"), [
    ("normal:1e18,1", "--lengths normal:1e18,1: lengths must be at most 16,777,216 tokens"),
    ("normal:200000,1",
     "MEAN 200,000 tokens is longer than Llama 3.1 8B's context; accepted: lengths up to 131,072"),
    ("uniform:1,200000", "HIGH 200,000 tokens is longer"),
    ("lognormal:8192,1,max=200000", "max 200,000 tokens is longer"),
])
def test_train_lengths_are_checked_against_the_context_before_planning(lengths, expected):
    result = invoke("train", "--model", "8b", "--cluster", "frontier", "--gpus", "16",
                    "--lengths", lengths)
    assert expected in error_line(result)
    assert "global batch" not in result.stderr  # refused before the job and the search
