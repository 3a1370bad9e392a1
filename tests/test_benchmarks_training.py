"""Every training benchmark's entry point runs on one row, so none can rot; the numbers they
print are read by people, not asserted here (they are measured, not tested)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from benchmark_scripts import load_benchmark as _load


def test_training_accuracy_runs_on_one_row_with_the_fair_baseline_beside(capsys):
    bench = _load("training_accuracy")
    assert bench.main(["--ids", "T238"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("T238"))
    assert row.count("%") == 2  # ours and the baseline, side by side
    assert "PyTorch torchtitan benchmark" in out and "memory MAPE" in out


def test_moe_kernel_fit_runs_on_one_row_and_restores_the_constant(capsys, monkeypatch):
    bench = _load("training_accuracy")
    from sysplan.costmodels import moe

    monkeypatch.setattr(bench, "MOE_KERNEL_GRID", (0.0, 26e-6, 60e-6))
    monkeypatch.setattr(bench, "MOE_GRAPHED_GRID", (0.0, 1.0))
    before = moe.MOE_KERNEL_S, moe.MOE_GRAPHED_SHARE
    assert bench.main(["--ids", "T309,T311", "--fit-moe-kernel", "T309"]) == 0
    out = capsys.readouterr().out
    assert "in-sample MAPE on 1 rows" in out and "held-out" in out and "on 1 rows" in out
    assert "fitted MOE_KERNEL_S" in out and "MOE_GRAPHED_SHARE" in out
    assert (moe.MOE_KERNEL_S, moe.MOE_GRAPHED_SHARE) == before
    assert bench.main(["--ids", "T238", "--fit-moe-kernel", "T238"]) == 2  # a dense row


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


def test_every_bundled_row_parses_into_its_header_columns():
    """An unquoted comma in a note splits it into extra fields: the rest of the note (a
    force-balanced routing, a token-drop recipe) would silently stop reaching ``job_for``."""
    bench = _load("training_accuracy")
    for path in bench.DEFAULT_CSVS:
        for r in __import__("csv").DictReader(path.open()):
            assert None not in r and None not in r.values(), (path.name, r["id"])


def test_megatron_bridge_rows_run_with_the_settings_their_configs_state():
    bench = _load("training_accuracy")
    rows = {r["id"]: r for path in bench.DEFAULT_CSVS
            for r in __import__("csv").DictReader(path.open())}
    settings = {rid: bench.job_for(rows[rid]) for rid in ("T300", "T303", "T310", "T333", "T238")}
    # 26.02 GB300: DeepSeek-V3's FP8 preset captures no graphs, GPT-OSS's the TE scoped ones
    assert (settings["T300"].cuda_graphs, settings["T300"].moe_dispatcher) == ("none", "flex")
    assert (settings["T303"].cuda_graphs, settings["T303"].moe_dispatcher) == ("scoped",
                                                                               "alltoall")
    # H100 presets overlap the all-to-all; 25.09's DeepSeek-V3 on H100 runs DeepEP
    assert settings["T310"].ep_comm_overlap and settings["T333"].ep_comm_overlap
    assert settings["T333"].moe_dispatcher == "flex"
    # FP8 through Transformer Engine keeps 1-byte inputs, torchtitan's torchao 16-bit ones
    assert settings["T300"].fp8_saved_inputs == "fp8"
    assert settings["T238"].fp8_saved_inputs == "bf16"
    assert settings["T238"].cuda_graphs == "none"  # not a Megatron-Bridge row


def test_derive_default_efficiency_runs_on_the_first_rows(capsys):
    import pytest

    bench = _load("derive_default_efficiency")
    if not (bench.DEFAULT / "gemm.csv").exists():
        pytest.skip(f"measured H100 tables not at {bench.DEFAULT}")
    assert bench.main(["--limit", "200"]) == 0
    out = capsys.readouterr().out
    assert "GEMM: log2(FLOPs)" in out and "attention: backend" in out


def test_executor_benchmark_runs_one_layout(tmp_path, capsys):
    import pytest

    pytest.importorskip("torch")
    from sysplan.profiles.loader import write_profile
    from sysplan.profiles.summary import local_cpu_cluster_yaml

    spec = importlib.util.spec_from_file_location("run_cli_tests",
                                                  Path(__file__).with_name("test_run_cli.py"))
    run_cli_tests = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_cli_tests)
    profile = run_cli_tests._cpu_profile()  # two CPU processes, round numbers
    write_profile(profile, tmp_path / "profile-cpu.yaml")
    (tmp_path / "local-cpu.yaml").write_text(local_cpu_cluster_yaml(profile, 8 * 2**30))
    bench = _load("executor")
    assert bench.main(["--profile", str(tmp_path / "profile-cpu.yaml"), "--steps", "2",
                       "--nproc", "1", "--layouts", "single"]) == 0
    out = capsys.readouterr().out
    assert "single" in out and "MAPE: sysplan" in out


def test_calibration_holdout_runs_on_a_few_rows(capsys):
    bench = _load("calibration_holdout")
    ids = "T001,T002,T003,T004,T012,T013,T014,T015"  # Narayanan 2021 / Korthikanti 2022, A100
    assert bench.main(["--ids", ids, "--factors", "gemm_scale"]) == 0
    out = capsys.readouterr().out
    assert "Narayanan et al. 2021" in out and "leave-one-out" in out and "gemm_scale=" in out
