"""Every training benchmark's entry point runs on one row, so none can rot; the numbers they
print are read by people, not asserted here (they are measured, not tested)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_accuracy_runs_on_one_row_with_the_fair_baseline_beside(capsys):
    bench = _load("training_accuracy")
    assert bench.main(["--ids", "T238"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("T238"))
    assert row.count("%") == 2  # ours and the baseline, side by side
    assert "PyTorch torchtitan benchmark" in out and "memory MAPE" in out


def test_fair_baseline_is_bf16_palm_flops_with_recompute_for_every_row():
    bench = _load("training_accuracy")
    rows = {r["id"]: r for path in bench.DEFAULT_CSVS
            for r in __import__("csv").DictReader(path.open())}
    from sysplan.models import model_flops_per_token

    for rid in ("T227", "T238", "T081"):  # fp8 + full recompute, long sequence; bf16 no recompute
        r = rows[rid]
        model, cluster = bench.model_from_row(r), bench.cluster_for(r)
        tokens = int(r["global_batch_seqs"]) * int(r["seq_len"])
        flops = model_flops_per_token(model, int(r["seq_len"])) * tokens
        flops *= 8 / 6 if "full" in r["recompute"] else 1.0
        expected = flops / (int(r["num_gpus"]) * cluster.gpu.peak("bf16") * 0.4)
        assert abs(bench.baseline_step(r, model, cluster) / expected - 1) < 1e-12
