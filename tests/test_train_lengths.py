"""`sysplan train --lengths`: a sampled step of variable-length data on the top plan."""

from __future__ import annotations

import json
from pathlib import Path

from test_cli import invoke, stderr_lines

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lengths" / "long_tail.csv"
TRAIN = ("train", "--model", "8b", "--cluster", "dgx-h100", "--gpus", "16", "--seq-len", "32768",
         "--global-batch", "1M", "--top", "1")


def test_lengths_show_the_mix_and_json_lists_its_groups() -> None:
    result = invoke(*TRAIN, "--lengths", "lognormal:8192,1.0,max=32768")
    assert result.exit_code == 0, result.stderr
    assert "Variable-length data" in result.stdout and "uniform cp" in result.stdout
    document = json.loads(invoke(*TRAIN, "--lengths", "lognormal:8192,1.0,max=32768",
                                 "--json").stdout)
    mix = document["sequence_mix"]
    assert mix["step_time_s"] <= mix["uniform_step_time_s"] + 1e-12  # never worse than uniform
    placed = sorted(i for g in mix["groups"] for i in g["sequence_indices"])
    assert placed == list(range(len(mix["lengths"])))  # every sequence in exactly one group
    job = document["job"]
    assert sum(mix["lengths"]) >= job["seq_len"] * job["global_batch"]  # a whole step of tokens


def test_a_length_file_works_and_a_bad_one_is_one_line(tmp_path: Path) -> None:
    result = invoke(*TRAIN, "--lengths", str(EXAMPLE))
    assert result.exit_code in (0, 1), result.stderr  # 1: a 128K sequence fits no CP group
    bad = tmp_path / "bad.txt"
    bad.write_text("4096\nlots\n")
    result = invoke(*TRAIN, "--lengths", str(bad))
    assert result.exit_code == 2
    (line,) = [line for line in stderr_lines(result) if line.startswith("error:")]
    assert str(bad) in line and "lots" in line


def test_a_pipelined_top_plan_says_the_mix_needs_pp_1() -> None:
    result = invoke(*TRAIN, "--pp", "2", "--lengths", "lognormal:8192,1.0,max=32768")
    assert result.exit_code == 2
    (line,) = [line for line in stderr_lines(result) if line.startswith("error:")]
    assert "pp 2" in line and "--pp 1" in line
