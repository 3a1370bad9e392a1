"""The serving accuracy benchmark's entry point runs on a few rows, so it cannot rot; its
numbers are read by people, not asserted here (they are measured, not tested)."""

from __future__ import annotations

from benchmark_scripts import load_benchmark as _load


def test_serving_accuracy_runs_on_one_row_of_each_file(capsys):
    bench = _load("serving_accuracy")
    assert bench.main(["--ids", "S099,S019"]) == 0
    out = capsys.readouterr().out
    assert "answered 2 of 2 rows" in out
    assert "offline trtllm-bench v0.17" in out and "online Triton v0.14" in out
    for line in out.splitlines():  # every printed row carries ours beside the naive error
        if line.startswith(("S099", "S019")):
            assert "%" in line and "nan" not in line.split()[-3]
