"""`sysplan run`: plans mapped onto this machine, run, and compared with the prediction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import invoke, stderr_lines

pytest.importorskip("torch")

from sysplan.costmodels.efficiency import Efficiency
from sysplan.executor.predict import parallel_config, predict, tiny_model_spec
from sysplan.executor.scale import as_written, scale_down
from sysplan.exporters import request_for
from sysplan.exporters.plan_json import load_plan_json
from sysplan.hardware import load_cluster
from sysplan.profiles.loader import write_profile
from sysplan.profiles.schema import (
    SCHEMA_VERSION,
    CollectiveTable,
    Device,
    GemmTable,
    MemoryTable,
    Profile,
)
from sysplan.profiles.summary import local_cpu_cluster_yaml

TRAIN = ("train", "--model", "8b", "--cluster", "dgx-h100", "--gpus", "16", "--top", "2",
         "--json")


@pytest.fixture(scope="module")
def plans(tmp_path_factory) -> dict[str, Path]:
    """Saved plans of distinct layouts, and a profile + local-cpu cluster to price them."""
    folder = tmp_path_factory.mktemp("run")
    layouts = {"tp2pp2": ("--tp", "2", "--pp", "2"),
               "dp_zero1": ("--tp", "1", "--pp", "1", "--cp", "1", "--zero", "1"),
               "pp2vpp2": ("--tp", "1", "--pp", "2", "--vpp", "2"),
               "tp8": ("--tp", "8")}
    out = {}
    for name, pins in layouts.items():
        result = invoke(*TRAIN, *pins)
        assert result.exit_code == 0, result.stderr
        out[name] = folder / f"{name}.json"
        out[name].write_text(result.stdout)
    profile = _cpu_profile()
    write_profile(profile, folder / "profile-cpu.yaml")
    (folder / "local-cpu.yaml").write_text(local_cpu_cluster_yaml(profile, 8 * 2**30))
    return out


def _cpu_profile() -> Profile:
    """Two CPU processes as `sysplan profile --device cpu` measures them (round numbers)."""
    collectives = tuple((op, "node", 2, size, 1e-4 + size / 1e9)
                        for op in ("all_reduce", "all_gather", "send_recv")
                        for size in (4096, 2**20, 2**24))
    return Profile(
        schema_version=SCHEMA_VERSION, name="test-cpu",
        device=Device(name="test cpu", kind="cpu", count=2, runtime="cpu",
                      date="2026-01-01T00:00:00Z"),
        gemm=GemmTable(dtype="fp32", rows=((128, 128, 128, 1e-4), (512, 512, 512, 4e-3),
                                           (1024, 1024, 1024, 3e-2))),
        memory=MemoryTable(rows=(("copy", 2**27, 1e-2),)),
        collectives=CollectiveTable(rows=collectives))


def _sources(paths):
    sources = []
    for path in paths:
        result = load_plan_json(path)
        plan = result.plans[0]
        request = request_for(result, plan, str(path))
        sources.append((path.name, plan, request.model, request.job))
    return sources


def test_scale_down_keeps_the_layout_on_one_shared_tiny_model(plans) -> None:
    scaled = scale_down(_sources([plans["tp2pp2"], plans["dp_zero1"], plans["pp2vpp2"]]), 4)
    assert len({s.tiny for s in scaled}) == 1  # one model for a fair comparison
    tiny = scaled[0].tiny
    for s in scaled:
        p, lay = s.plan.parallel, s.layout
        assert (lay.tp, lay.pp, lay.vpp, lay.cp, lay.zero, lay.recompute,
                lay.sequence_parallel) == (p.tp, p.pp, p.vpp, p.cp, p.zero, p.recompute,
                                           p.sequence_parallel)
        assert lay.world_size <= 4 and lay.dp == min(p.dp, 4 // (p.tp * p.pp * p.cp))
        assert lay.micro_batches % lay.pp == 0
        assert tiny.heads % lay.tp == 0 and tiny.kv_heads % lay.tp == 0
        assert tiny.layers % (lay.pp * lay.vpp) == 0 or lay.stage_layers
    assert len({s.layout.global_batch for s in scaled}) == 1


def test_plans_that_cannot_run_here_are_one_line_errors(plans, tmp_path) -> None:
    with pytest.raises(Exception, match="tp x pp x cp = 8 x 1 x 1 = 8 processes; --nproc 4"):
        scale_down(_sources([plans["tp8"]]), 4)
    with pytest.raises(Exception, match="the plan needs 16 processes"):
        as_written(*_sources([plans["tp2pp2"]])[0], 4)
    bad_field = json.loads(plans["tp2pp2"].read_text())
    bad_field["plans"][0]["parallel"]["offload_ratio"] = 0.5
    (tmp_path / "bad.json").write_text(json.dumps(bad_field))
    cases = [((str(plans["tp8"]),), "8 processes; --nproc 4"),
             ((str(plans["tp2pp2"]), "--compare"), "--compare with 1 plan"),
             ((f"{plans['tp2pp2']}#x",), "FILE#RANK"),
             ((f"{plans['tp2pp2']}#9",), "--rank 9"),
             ((str(tmp_path / "bad.json"),), "offload_ratio"),
             ((str(plans["tp2pp2"]), "--steps", "2", "--warmup", "2"), "--warmup 2")]
    for args, words in cases:
        result = invoke("run", *args, "--profile", str(plans["tp2pp2"].parent / "profile-cpu.yaml"))
        assert result.exit_code == 2, (args, result.stderr)
        lines = stderr_lines(result)
        assert len(lines) == 1 and words in lines[0], (args, lines)
    missing = invoke("run", str(plans["tp2pp2"]), "--profile", str(tmp_path / "none.yaml"))
    assert missing.exit_code == 2 and "none.yaml" in missing.stderr


def test_prediction_prices_the_layout_that_runs(plans) -> None:
    scaled = scale_down(_sources([plans["tp2pp2"], plans["dp_zero1"]]), 4)
    cluster, _ = load_cluster(str(plans["tp2pp2"].parent / "local-cpu.yaml"))
    from sysplan.profiles.loader import load_profile

    efficiency = Efficiency.from_profile(
        load_profile(str(plans["tp2pp2"].parent / "profile-cpu.yaml")), cluster)
    tp_pp, dp = (predict(s.tiny, s.layout, cluster, efficiency) for s in scaled)
    assert tp_pp.terms_s["tp"] > 0 and tp_pp.terms_s["pipeline"] > 0
    assert dp.terms_s["tp"] == 0 and dp.terms_s["pipeline"] == 0 and dp.terms_s["dp"] > 0
    assert tp_pp.step_time_s == pytest.approx(sum(tp_pp.terms_s.values()))
    config = parallel_config(scaled[0].tiny, scaled[0].layout)
    assert sum(config.stage_layers) == scaled[0].tiny.layers
    assert tiny_model_spec(scaled[0].tiny).num_layers == scaled[0].tiny.layers


def test_processes_computing_side_by_side_are_slowed_by_the_measured_contention(
        plans, monkeypatch) -> None:
    """With {2: 1.3} measured, a 2-process layout's compute takes 1.3x as long on 2 cores;
    on 1 core the 2 processes take turns instead (2x, never side by side); one process is
    never slowed."""
    from dataclasses import replace

    import sysplan.executor.predict as predict_module
    from sysplan.profiles.loader import load_profile

    scaled = scale_down(_sources([plans["dp_zero1"]]), 2)[0]
    assert scaled.layout.world_size == 2
    cluster, _ = load_cluster(str(plans["tp2pp2"].parent / "local-cpu.yaml"))
    plain = Efficiency.from_profile(
        load_profile(str(plans["tp2pp2"].parent / "profile-cpu.yaml")), cluster)
    contended = replace(plain, contention={2: 1.3})
    compute = {}
    for cores in (2, 1):
        monkeypatch.setattr(predict_module, "cpu_cores", lambda cores=cores: cores)
        for name, eff in (("plain", plain), ("contended", contended)):
            compute[name, cores] = predict(scaled.tiny, scaled.layout, cluster,
                                           eff).terms_s["compute"]
    assert compute["contended", 2] == pytest.approx(1.3 * compute["plain", 2], rel=0.02)
    assert compute["contended", 1] == pytest.approx(2.0 * compute["plain", 2], rel=0.02)
    assert predict_module.shared_cores(contended, cluster, 1) is contended


def test_pipeline_ranks_share_the_cores_only_while_they_compute() -> None:
    """A pipeline's ranks idle in its bubble, (p - 1) / (v m) of their compute time, so
    fewer of them compete for the cores at once (Narayanan et al. 2021, section 2.2)."""
    from sysplan.executor.layout import ExecLayout
    from sysplan.executor.predict import busy_ranks

    assert busy_ranks(ExecLayout(pp=4, global_batch=16, micro_batch=2)) == \
        pytest.approx(4 / (1 + 3 / 8))
    assert busy_ranks(ExecLayout(pp=2, vpp=2, schedule="interleaved", global_batch=16,
                                 micro_batch=2)) == pytest.approx(2 / (1 + 1 / 16))
    assert busy_ranks(ExecLayout(dp=2, tp=2, global_batch=16, micro_batch=4)) == 4


def test_profile_contention_is_checked() -> None:
    profile = _cpu_profile()
    good = Profile.model_validate({**profile.model_dump(), "contention": [[2, 1.26]]})
    assert good.contention == ((2, 1.26),) and hash(good)
    for bad in ([[1, 1.2]], [[2, 0.1]]):
        with pytest.raises(ValueError, match="contention"):
            Profile.model_validate({**profile.model_dump(), "contention": bad})


def test_run_compare_reports_measured_and_predicted(plans) -> None:
    args = ("run", str(plans["tp2pp2"]), str(plans["dp_zero1"]), "--compare", "--steps", "3",
            "--warmup", "1", "--nproc", "4",
            "--profile", str(plans["tp2pp2"].parent / "profile-cpu.yaml"))
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["backend"] == "gloo" and len(report["runs"]) == 2
    assert sorted(report["measured_order"]) == sorted(report["predicted_order"])
    assert report["rankings_agree"] == (report["measured_order"] == report["predicted_order"])
    for run in report["runs"]:
        measured = run["measured"]
        assert len(measured["losses"]) == 3 and measured["median_step_s"] > 0
        assert run["predicted_step_s"] > 0 and {t["name"] for t in run["terms"]} >= {"compute"}
    tp_pp = report["runs"][0]
    assert {t["name"] for t in tp_pp["terms"]} >= {"tp", "pipeline"}
    assert "dp 4 capped at 1 (--nproc 4)" in result.stderr or tp_pp["notes"]
    # progress on stderr: counts and, after the first group, an ETA
    assert "run: 0/2 plans done" in result.stderr


def test_readme_run_commands_run(tmp_path, monkeypatch) -> None:
    from test_docs import commands

    monkeypatch.chdir(tmp_path)  # they write profile-cpu.yaml, local-cpu.yaml, plans.json
    lines = [line for line in commands("Run") if line.startswith("sysplan ")]
    assert len(lines) == 3
    for line in lines:
        words, _, target = line.split(" # ")[0].partition(" > ")
        result = invoke(*words.split()[1:])
        assert result.exit_code == 0, f"{line}: {result.stderr}"
        if target:
            Path(target.strip()).write_text(result.stdout)
    assert "ranking by step time: measured" in result.stdout


def test_run_without_a_profile_measures_a_quick_one_and_says_so(plans, tmp_path,
                                                                monkeypatch) -> None:
    """No --profile and no profile-cpu.yaml here: run measures one (here a stand-in for the
    quick sweep, which takes about a minute) instead of stopping, keeps it, and says so."""
    from sysplan.cli import profile as profile_cli

    calls = []

    def quick(err, **options):
        calls.append(options)
        write_profile(_cpu_profile(), Path("profile-cpu.yaml"))
        Path("local-cpu.yaml").write_text(local_cpu_cluster_yaml(_cpu_profile(), 8 * 2**30))
        return _cpu_profile(), Path("profile-cpu.yaml"), Path("local-cpu.yaml")

    monkeypatch.setattr(profile_cli, "measure_and_write", quick)
    monkeypatch.chdir(tmp_path)
    result = invoke("run", str(plans["dp_zero1"]), "--steps", "2", "--warmup", "1",
                    "--nproc", "2", "--json")
    assert result.exit_code == 0, result.stderr
    assert calls == [{"device": "cpu", "quick": True, "world": 2}]
    assert "measuring a quick one first" in result.stderr and "run: 0/1 plans done" in result.stderr
    assert (tmp_path / "profile-cpu.yaml").is_file() and json.loads(result.stdout)["runs"]
    # the kept profile prices the next run; --quiet drops the notes and the progress
    again = invoke("run", str(plans["dp_zero1"]), "--steps", "2", "--warmup", "1", "--nproc", "2",
                   "--json", "--quiet")
    assert again.exit_code == 0 and again.stderr == "" and len(calls) == 1


def test_an_overlay_keeps_its_bases_overhead_and_contention(tmp_path) -> None:
    """A calibration overlay (base: ...) changes factors; the base's measured per-op overhead
    and contention still price the plans."""
    from sysplan.profiles.loader import load_profile
    from sysplan.profiles.schema import OpOverhead

    base = _cpu_profile().model_copy(update={
        "overhead": OpOverhead(forward_s=3e-6, backward_s=8e-6), "contention": ((2, 1.2),)})
    write_profile(base, tmp_path / "base.yaml")
    (tmp_path / "overlay.yaml").write_text(
        f"schema_version: '{SCHEMA_VERSION}'\nname: tuned\nbase: base.yaml\n"
        "calibration: {gemm_scale: 0.9}\n")
    merged = load_profile(tmp_path / "overlay.yaml")
    assert merged.overhead == base.overhead and merged.contention == ((2, 1.2),)
    assert merged.calibration.gemm_scale == 0.9
