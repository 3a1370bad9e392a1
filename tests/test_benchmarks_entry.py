"""The planner and speed benchmarks' entry points run on one case each, so none can rot; what
they print is read by people (timings and gains are measured, not asserted)."""

from __future__ import annotations

import pytest
from benchmark_scripts import load_benchmark


@pytest.mark.parametrize(("name", "argv", "printed"), [
    ("pipeline_dp", ["--cases", "1"], "uniform, config mode"),
    ("planners", ["--cases", "1"], "sharding (ZeRO -> ILP)"),
    ("search_speed", ["--cases", "1"], "configs/s"),
    ("sp_mix", ["--quick", "--cases", "1"], "| 8b tp1 x64 | p2p |"),
    ("ilp", ["1", "--skip-brute-force"], "baseline: full recompute"),
    ("serve_search", ["--quick"], "tok/s/GPU"),
    ("fuzz", ["--cases", "2", "--family", "stray", "--family", "train-bad"], "distinct failure signatures"),
])
def test_benchmark_entry_point_runs_one_case(name, argv, printed, capsys):
    assert load_benchmark(name).main(argv) == 0
    assert printed in capsys.readouterr().out
