"""`sysplan train --export/--runtime` and `sysplan export` through typer's runner, and the
promise behind --runtime: the search keeps only layouts the runtime runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import invoke, stderr_lines

from sysplan.core.errors import InputError
from sysplan.hardware import load_cluster
from sysplan.models import resolve_model
from sysplan.planners.runtimes import RUNTIMES
from sysplan.planners.training import plan_training
from sysplan.workloads.training import TrainJob

TRAIN = ("train", "--model", "8b", "--cluster", "dgx-h100", "--gpus", "16", "--top", "3")


@pytest.fixture
def saved_plan(tmp_path: Path) -> Path:
    """The whole `sysplan train --json` output of a small search."""
    result = invoke(*TRAIN, "--json")
    assert result.exit_code == 0, result.stderr
    path = tmp_path / "plans.json"
    path.write_text(result.stdout)
    return path


def test_train_export_writes_every_target_and_restricts_the_search(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke(*TRAIN, "--export", "megatron,torchtitan,deepspeed,json", "-o", str(out))
    assert result.exit_code == 0, result.stderr
    for name in ("megatron/train.sh", "torchtitan/sysplan_torchtitan.py", "torchtitan/train.sh",
                 "deepspeed/ds_config.json", "deepspeed/train.sh", "plan.json"):
        assert (out / name).is_file(), name
        assert f"wrote {out / name}" in result.stderr
    assert "search restricted to layouts megatron, torchtitan, deepspeed can run" in result.stderr
    assert (out / "megatron/train.sh").stat().st_mode & 0o111
    document = json.loads((out / "plan.json").read_text())
    assert len(document["plans"]) == 1 and document["runtimes"] == [
        "megatron", "torchtitan", "deepspeed"]


def test_each_runtime_export_carries_the_plan_priced_with_its_own_settings(tmp_path: Path):
    """The search prices with the first runtime's settings (Megatron: FP8 inputs kept in one
    byte, selective recompute of the attention core); torchtitan's files state the same
    layout priced with torchtitan's (16-bit inputs, per-op recompute), as estimate_config
    gives it."""
    from sysplan.costmodels.estimate import estimate_config
    from sysplan.exporters.plan_json import load_plan_json
    from sysplan.planners.runtimes import get_runtime, job_for

    out = tmp_path / "out"
    result = invoke("train", "--model", "8b", "--cluster", "dgx-h100", "--gpus", "8",
                    "--precision", "fp8", "--recompute", "selective", "--export",
                    "megatron,torchtitan,json", "-o", str(out))
    assert result.exit_code == 0, result.stderr
    lines = {name: next(line for line in (out / name).read_text().splitlines()
                        if "Predicted:" in line)
             for name in ("megatron/train.sh", "torchtitan/train.sh")}
    assert lines["megatron/train.sh"] != lines["torchtitan/train.sh"]
    saved = load_plan_json(out / "plan.json")
    own = job_for([get_runtime("torchtitan")], saved.job)
    assert own.fp8_saved_inputs == "bf16" and own != saved.job
    model, cluster = resolve_model("8b")[0], load_cluster("dgx-h100")[0]
    memory = estimate_config(model, own, cluster, saved.plans[0].parallel).memory.total_bytes
    assert f"worst-stage memory {memory / 2**30:.1f} GiB" in lines["torchtitan/train.sh"]
    # `sysplan export` of the saved plan (bundled profile: at hand) prices it the same way
    again = invoke("export", str(out / "plan.json"), "--to", "torchtitan", "-o",
                   str(tmp_path / "again"))
    assert again.exit_code == 0, again.stderr
    assert ((tmp_path / "again/torchtitan/train.sh").read_text()
            == (out / "torchtitan/train.sh").read_text())


def test_export_of_the_saved_plan_matches_the_train_export(tmp_path: Path) -> None:
    first = tmp_path / "first"
    assert invoke(*TRAIN, "--export", "megatron,json", "-o", str(first)).exit_code == 0
    again = invoke("export", str(first / "plan.json"), "--to", "megatron", "-o",
                   str(tmp_path / "again"))
    assert again.exit_code == 0, again.stderr
    assert again.stdout.split() == [str(tmp_path / "again/megatron/train.sh")]
    assert ((tmp_path / "again/megatron/train.sh").read_text()
            == (first / "megatron/train.sh").read_text())


def test_export_picks_the_rank_and_says_which(saved_plan: Path, tmp_path: Path) -> None:
    result = invoke("export", str(saved_plan), "--to", "json", "-o", str(tmp_path))
    assert result.exit_code == 0 and "exporting rank 1 of the 3 plans" in result.stderr
    result = invoke("export", str(saved_plan), "--to", "json", "--rank", "2", "-o", str(tmp_path))
    assert result.exit_code == 0 and result.stderr == ""
    assert json.loads((tmp_path / "plan.json").read_text())["plans"][0]["rank"] == 2


@pytest.mark.parametrize(("args", "words"), [
    (["--to", "slurm"], ["--to slurm", "megatron, deepspeed, torchtitan, json"]),
    (["--to", "json", "--rank", "9"], ["--rank 9", "rank 1, 2, 3"]),
    (["--to", "json", "--torchtitan-format", "yaml"], ["--torchtitan-format yaml", "python"]),
])
def test_export_bad_options_are_one_line(saved_plan: Path, tmp_path: Path, args, words) -> None:
    result = invoke("export", str(saved_plan), *args, "-o", str(tmp_path))
    assert result.exit_code == 2
    (line,) = stderr_lines(result)
    assert all(word in line for word in words), line


def test_export_refuses_bare_newer_and_missing_plans(saved_plan: Path, tmp_path: Path) -> None:
    document = json.loads(saved_plan.read_text())
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(document["plans"][0]))
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({**document, "schema_version": "2.0"}))
    for path, words in ((bare, ["a single plan", "--rank"]), (newer, ["2.0", "1.x"]),
                        (tmp_path / "none.json", ["no such file"])):
        result = invoke("export", str(path), "--to", "megatron", "-o", str(tmp_path / "o"))
        assert result.exit_code == 2, path
        (line,) = stderr_lines(result)
        assert all(word in line for word in words), line


def test_export_names_the_feature_the_runtime_lacks(tmp_path: Path) -> None:
    plans = tmp_path / "plans.json"
    result = invoke(*TRAIN, "--zero", "1", "--runtime", "megatron", "--json")
    plans.write_text(result.stdout)
    result = invoke("export", str(plans), "--to", "torchtitan", "--rank", "1", "-o",
                    str(tmp_path / "o"))
    assert result.exit_code == 2
    (line,) = stderr_lines(result)
    assert "torchtitan cannot run this plan: ZeRO-1" in line and "--runtime torchtitan" in line
    assert not (tmp_path / "o").exists()


def test_runtime_that_cannot_train_the_model_is_one_line() -> None:
    result = invoke("train", "--model", "mixtral-8x7b", "--cluster", "dgx-h100", "--runtime",
                    "torchtitan")
    assert result.exit_code == 2
    (line,) = [line for line in stderr_lines(result) if not line.startswith("note:")]
    assert "--runtime torchtitan" in line and "mixture-of-experts" in line
    assert "--runtime megatron exports them" in line
    dense = invoke("train", "--model", "gpt3-xl", "--cluster", "dgx-h100", "--runtime",
                   "torchtitan")
    assert dense.exit_code == 2 and "Llama-style dense" in dense.stderr


@pytest.mark.parametrize("runtime", list(RUNTIMES))
@pytest.mark.parametrize(("model", "cluster", "gpus", "seq_len"), [
    ("8b", "dgx-h100", 64, 32768), ("70b", "frontier", 256, 8192), ("mixtral-8x7b", "dgx-h100", 64, 4096),
])
def test_every_plan_of_a_runtime_search_exports(runtime, model, cluster, gpus, seq_len) -> None:
    spec, _ = resolve_model(model)
    hardware, _ = load_cluster(cluster)
    job = TrainJob(seq_len=seq_len, global_batch=256)
    try:
        result = plan_training(spec, hardware, job, num_gpus=gpus, runtimes=(runtime,), top=10)
    except InputError as error:  # the model itself is refused, naming the feature
        assert RUNTIMES[runtime].model_rules and f"--runtime {runtime}" in str(error)
        return
    for plan in result.plans:
        assert RUNTIMES[runtime].unsupported(plan.parallel, spec, result.job) == []
