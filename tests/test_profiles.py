"""Profiles price the plans: lookups inside and outside the measured points, the bundled H100
profile, overlays, and `sysplan calibrate` recovering factors it did not see."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_cli import invoke, stderr_lines

from sysplan.core.errors import InputError
from sysplan.costmodels.efficiency import Efficiency
from sysplan.costmodels.lookup import ScatteredTable
from sysplan.costmodels.types import ParallelConfig
from sysplan.hardware import load_cluster
from sysplan.models import resolve_model
from sysplan.planners.calibrate import FACTORS, MeasuredRun, fit_calibration, predict
from sysplan.planners.training import plan_training
from sysplan.planners.types import Pins
from sysplan.profiles.loader import BUNDLED, bundled_for_gpu, load_profile, write_profile
from sysplan.profiles.schema import Calibration
from sysplan.workloads.training import TrainJob

H100, _ = load_cluster("dgx-h100")
A100, _ = load_cluster("dgx-a100")
LLAMA8, _ = resolve_model("8b")


def test_points_on_one_line_fall_back_to_the_nearest_value() -> None:
    table = ScatteredTable(np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 2.0]),
                           np.array([1.0, 2.0, 3.0]))
    values, outside = table(np.array([1.0]), np.array([1.0]))
    assert values[0] == 2.0 and outside[0]


def test_scattered_table_is_exact_at_measured_points_and_flags_the_outside() -> None:
    x = np.array([0.0, 4.0, 0.0, 4.0, 2.0])
    y = np.array([0.0, 0.0, 4.0, 4.0, 2.0])
    table = ScatteredTable(x, y, x + 10 * y)  # a linear function is reproduced exactly
    values, outside = table(np.array([1.0, 3.0, 2.0]), np.array([1.0, 2.5, 4.0]))
    assert np.allclose(values, [11.0, 28.0, 42.0], atol=1e-9)
    assert not outside.any()
    far, flagged = table(np.array([5.0, 9.0]), np.array([0.5, 2.0]))
    assert flagged.all()
    assert far[0] == pytest.approx(4.0)  # the nearest measured point, (4, 0)


def test_bundled_h100_profile_reproduces_its_measurements() -> None:
    profile = load_profile("h100-sxm")
    # the tables alone (the bundled calibration scales them to whole training steps)
    eff = Efficiency.from_profile(profile.model_copy(update={"calibration": None}), H100)
    scaled = Efficiency.from_profile(profile, H100)
    shape = (np.array([4096.0]), 4096 * 4096, 1, H100.gpu.peak("bf16"))
    assert scaled.gemm_seconds(*shape)[0] * profile.calibration.gemm_scale == pytest.approx(
        eff.gemm_seconds(*shape)[0])
    assert profile.calibration.fitted_on.startswith("Megatron-LM README H100 rows T021")
    # the table is over (log m, log n k): shapes sharing m and n k average their efficiency
    groups: dict[tuple[int, int], list[float]] = {}
    for m, n, k, seconds in profile.gemm.rows:
        groups.setdefault((m, n * k), []).append(2.0 * m * n * k / seconds)
    for (m, nk), rates in list(groups.items())[::25]:
        predicted = eff.gemm_seconds(np.array([m]), nk, 1, H100.gpu.peak("bf16"))[0]
        assert 2.0 * m * nk / predicted == pytest.approx(np.mean(rates), rel=0.01)  # 1/256 octave
    assert bundled_for_gpu("H100-SXM").name == profile.name
    assert bundled_for_gpu("A100-SXM4-80GB") is None


def test_the_planner_uses_the_bundled_profile_and_says_what_is_extrapolated() -> None:
    job = TrainJob(seq_len=4096, global_batch=64)
    measured = plan_training(LLAMA8, H100, job, num_gpus=8, top=3)
    assert measured.profile.name.startswith("h100-sxm") and measured.profile.calibrated
    assert measured.profile.uncalibrated_terms == ("communication",)
    assert any("prices gemm, attention, memory" in note for note in measured.notes)
    default = plan_training(LLAMA8, H100, job, num_gpus=8, top=3, bundled_profile=False)
    assert default.profile.name == "default-hopper" and not default.profile.calibrated
    tiny = plan_training(LLAMA8, H100, TrainJob(seq_len=128, global_batch=8), num_gpus=8,
                         top=1, pins=Pins(micro_batch=1, cp=1))
    # 128-token GEMMs and attention: below the measured 512 tokens and 1024 keys
    assert tiny.plans[0].estimate.extrapolated_terms == ("attention", "gemm")
    assert tiny.profile.extrapolated_terms == ("attention", "gemm")
    assert "attention" not in measured.plans[0].estimate.extrapolated_terms  # 4k keys: measured
    assert plan_training(LLAMA8, A100, job, num_gpus=8, top=1).profile.name == "default-ampere"


def _write(tmp_path: Path, data: dict, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _bundled_data() -> dict:
    return yaml.safe_load((BUNDLED / "h100-sxm.yaml").read_text())


@pytest.mark.parametrize(("change", "words"), [
    (lambda d: d.update(schema_version="2.0"), ["schema_version '2.0'", "1.x"]),
    (lambda d: d["gemm"]["rows"][0].__setitem__(3, -1e-5), ["gemm.rows", "positive"]),
    (lambda d: d["gemm"].__setitem__("columns", ["m", "k", "n", "time_s"]), ["gemm.columns"]),
    (lambda d: d["attention"]["rows"][0].__setitem__(5, 0), ["attention.rows", "positive"]),
    (lambda d: d.pop("device"), ["device", "base"]),
    (lambda d: d.update(surprise=1), ["surprise"]),
])
def test_bad_profile_files_are_one_line(tmp_path: Path, change, words) -> None:
    data = copy.deepcopy(_bundled_data())
    change(data)
    path = _write(tmp_path, data)
    with pytest.raises(InputError) as error:
        load_profile(path)
    assert str(path) in str(error.value) and all(w in str(error.value) for w in words)
    result = invoke("train", "--model", "8b", "--cluster", "dgx-h100", "--profile", str(path))
    assert result.exit_code == 2
    assert len([line for line in stderr_lines(result) if line.startswith("error:")]) == 1


def test_malformed_yaml_and_missing_profile(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("gemm: [1, 2\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_profile(bad)
    with pytest.raises(InputError, match="bundled: h100-sxm"):
        load_profile(tmp_path / "absent.yaml")


def test_an_overlay_keeps_its_base_tables_and_applies_its_factors(tmp_path: Path) -> None:
    overlay = _write(tmp_path, {"schema_version": "1.0", "name": "slow", "base": "h100-sxm",
                                "calibration": {"gemm_scale": 0.5}})
    merged = load_profile(overlay)
    assert merged.gemm == load_profile("h100-sxm").gemm and merged.calibration.gemm_scale == 0.5
    job = TrainJob(seq_len=4096, global_batch=64)
    config = ParallelConfig(tp=8, dp=1, global_batch=64, sequence_parallel=True)
    # the overlay's calibration replaces the base's whole: compare with the raw tables
    raw = load_profile("h100-sxm").model_copy(update={"calibration": None})
    base = Efficiency.from_profile(raw, H100)
    slow = Efficiency.from_profile(merged, H100)
    runs = [MeasuredRun("x", LLAMA8, job, config, 1.0)]
    assert predict(runs, H100, slow)[0] > 1.3 * predict(runs, H100, base)[0]
    written = write_profile(merged, tmp_path / "copy.json")
    assert load_profile(written) == merged


def _synthetic_runs(eff: Efficiency) -> list[MeasuredRun]:
    """Runs whose 'measured' step times come from the model itself under known factors."""
    runs = []
    layouts = [(1, 1, 8, 1), (2, 1, 4, 1), (8, 1, 1, 1), (1, 2, 4, 1), (4, 2, 1, 1),
               (2, 1, 4, 2), (8, 1, 2, 1), (1, 1, 16, 1), (4, 1, 4, 1)]
    for i, (tp, pp, dp, cp) in enumerate(layouts):
        job = TrainJob(seq_len=4096 * cp, global_batch=32)
        config = ParallelConfig(tp=tp, pp=pp, dp=dp, cp=cp, global_batch=32, zero=1,
                                sequence_parallel=tp > 1, schedule="1f1b" if pp > 1 else "none")
        runs.append(MeasuredRun(f"run{i}", LLAMA8, job, config, 1.0))
    steps = predict(runs, H100, eff)
    return [replace(run, step_time_s=float(s)) for run, s in zip(runs, steps, strict=True)]


def test_calibrate_recovers_the_factors_that_made_the_steps() -> None:
    base = Efficiency.from_profile(load_profile("h100-sxm"), H100)
    truth = Calibration(gemm_scale=0.8, attention_scale=1.2, comm_scale_node=0.7,
                        comm_scale_network=0.9, overlap=0.9)
    runs = _synthetic_runs(replace(base, calibration=truth))
    fit = fit_calibration(runs, H100, base, fitted_on="synthetic")
    assert fit.mape("before_s") > 0.05
    assert fit.mape("after_s") < 0.01 and fit.mape("left_out_s") < 0.05
    assert fit.calibration.gemm_scale == pytest.approx(0.8, rel=0.05)


def test_calibrate_fits_only_the_factors_asked_for() -> None:
    base = Efficiency.from_profile(load_profile("h100-sxm"), H100)
    truth = base.calibration.model_copy(update={"gemm_scale": 0.7})
    runs = _synthetic_runs(replace(base, calibration=truth))[:4]
    fit = fit_calibration(runs, H100, base, factors=["gemm_scale"])
    assert fit.calibration.gemm_scale == pytest.approx(0.7, rel=0.02)
    for name in FACTORS:
        if name != "gemm_scale":
            assert getattr(fit.calibration, name) == getattr(base.calibration, name)
    with pytest.raises(InputError, match="factors tflops_scale not accepted"):
        fit_calibration(runs, H100, base, factors=["tflops_scale"])


def test_calibrate_cli_refuses_too_few_rows_and_writes_an_overlay(tmp_path: Path) -> None:
    header = "model,gpus,tp,global_batch,seq_len,step_time_s\n"
    few = tmp_path / "few.csv"
    few.write_text(header + "8b,8,1,64,4096,2.0\n" * 3)
    result = invoke("calibrate", str(few), "--cluster", "dgx-h100", "-o", str(tmp_path / "c.yaml"))
    assert result.exit_code == 2
    (line,) = stderr_lines(result)
    assert f"needs at least {len(FACTORS) + 2}" in line
    bad = tmp_path / "bad.csv"
    bad.write_text(header + "8b,8,1,64,4096,soon\n")
    result = invoke("calibrate", str(bad), "--cluster", "dgx-h100")
    assert result.exit_code == 2 and "step_time_s 'soon' is not a number" in result.stderr

    base = Efficiency.from_profile(load_profile("h100-sxm"), H100)
    runs = _synthetic_runs(replace(base, calibration=Calibration(gemm_scale=0.9)))
    rows = [f"8b,{r.parallel.world_size},{r.parallel.tp},{r.parallel.pp},{r.parallel.cp},"
            f"{r.parallel.sequence_parallel:d},1,32,{r.job.seq_len},{r.step_time_s}"
            for r in runs]
    good = tmp_path / "runs.csv"
    good.write_text("model,gpus,tp,pp,cp,sequence_parallel,zero,global_batch,seq_len,"
                    "step_time_s\n" + "\n".join(rows) + "\n")
    out = tmp_path / "calibrated.yaml"
    result = invoke("calibrate", str(good), "--cluster", "dgx-h100", "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert "leave-one-out" in result.stdout
    overlay = load_profile(out)
    assert overlay.calibration.gemm_scale == pytest.approx(0.9, rel=0.05)
    assert overlay.gemm is not None  # the bundled base's tables
    result = invoke("train", "--model", "8b", "--cluster", "dgx-h100", "--gpus", "8",
                    "--profile", str(out), "--top", "1")
    assert result.exit_code == 0 and "calibrated on runs.csv" in result.stdout
