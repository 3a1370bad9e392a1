"""`sysplan train --stages dp`: the stage DP re-splits the best pipelined plans."""

from __future__ import annotations

import json

import pytest
from export_cases import CASES
from test_cli import invoke

from sysplan.core.errors import InputError
from sysplan.core.units import GIB
from sysplan.costmodels.estimate import balanced_stage_layers
from sysplan.exporters import EXPORTERS
from sysplan.hardware import load_cluster
from sysplan.models import resolve_model
from sysplan.planners.restage import runs_text
from sysplan.planners.training import plan_training
from sysplan.planners.types import Pins
from sysplan.workloads.training import make_train_job


def _plan(name: str, gpus: int, stages: str, runtimes=(), **pins):
    model, _ = resolve_model(name)
    cluster, _ = load_cluster("dgx-h100")
    job, _ = make_train_job(model, seq_len=4096)
    return model, plan_training(model, cluster, job, num_gpus=gpus, top=5, pins=Pins(**pins),
                                stages=stages, runtimes=runtimes)


def test_dp_stages_beat_even_stages_on_deepseek_v3() -> None:
    # 61 layers (3 dense, 58 MoE) + MTP and the LM head on the last stage: even stages leave the
    # last stage the slowest, the DP gives it fewer layers
    model, even = _plan("deepseek-v3", 1024, "uniform", pp=16)
    _, split = _plan("deepseek-v3", 1024, "dp", pp=16)
    top = split.plans[0]
    assert top.estimate.tokens_per_s_per_gpu > 1.05 * even.plans[0].estimate.tokens_per_s_per_gpu
    assert sum(top.parallel.stage_layers) == model.num_layers
    assert top.parallel.stage_layers != balanced_stage_layers(model.num_layers, 16)
    assert top.parallel.stage_layers[-1] < max(top.parallel.stage_layers)
    assert "by DP (exact)" in top.why
    assert "With --stages dp the top plan re-splits its stages" in split.explanation
    assert any(note.startswith("--stages dp:") for note in split.notes)
    for plan in split.plans:  # every shown plan fits, ranks are in order, none repeats
        assert plan.estimate.memory.total_bytes <= 76 * GIB
        assert max(s["total_bytes"] for s in plan.estimate.memory.per_stage) == pytest.approx(
            plan.estimate.memory.total_bytes)
    values = [plan.objective_value for plan in split.plans]
    assert values == sorted(values, reverse=True)
    assert [plan.rank for plan in split.plans] == list(range(1, len(split.plans) + 1))
    assert len({plan.parallel for plan in split.plans}) == len(split.plans)


def test_a_target_runtime_keeps_one_recompute_mode_and_deepspeed_the_even_split() -> None:
    _, megatron = _plan("deepseek-v3", 1024, "dp", runtimes=("megatron",), pp=16)
    assert all(plan.parallel.stage_recompute == () for plan in megatron.plans)
    assert any("one recompute mode per plan" in note for note in megatron.notes)
    _, deepspeed = _plan("70b", 64, "dp", runtimes=("deepspeed",), pp=4, tp=8)
    assert all(plan.parallel.stage_layers == balanced_stage_layers(80, 4)
               for plan in deepspeed.plans)
    assert any("splits layers evenly" in note for note in deepspeed.notes)


def test_plans_without_a_pipeline_are_left_alone() -> None:
    _, even = _plan("8b", 16, "uniform", pp=1)
    _, split = _plan("8b", 16, "dp", pp=1)
    assert [p.model_dump() for p in split.plans] == [p.model_dump() for p in even.plans]


def test_unknown_stages_value_is_one_line_exit_2() -> None:
    with pytest.raises(InputError, match="--stages greedy: not accepted; choose one of uniform, dp"):
        _plan("8b", 16, "greedy")
    result = invoke("train", "--model", "8b", "--cluster", "dgx-h100", "--stages", "greedy")
    assert result.exit_code == 2
    assert "--stages" in result.stderr and "greedy" in result.stderr


def test_cli_shows_and_writes_the_split() -> None:
    args = ("train", "--model", "deepseek-v3", "--cluster", "dgx-h100", "--gpus", "1024",
            "--pp", "16", "--stages", "dp", "--top", "2")
    shown = invoke(*args, "--explain")
    assert shown.exit_code == 0, shown.stderr
    document = json.loads(invoke(*args, "--json").stdout)
    parallel = document["plans"][0]["parallel"]
    assert f"stages {runs_text(parallel['stage_layers'])}" in shown.stdout
    assert sum(parallel["stage_layers"]) == 61 and "stage_recompute" in parallel


def test_no_runtime_exports_a_recompute_mode_per_stage() -> None:
    request = next(c for c in CASES if c.name == "llama70b-per-stage-recompute").request()
    for target in ("megatron", "deepspeed", "torchtitan"):
        with pytest.raises(InputError, match="a recompute mode per stage"):
            EXPORTERS[target](request)


def test_interleaved_plans_are_re_split_by_the_heuristic() -> None:
    model, even = _plan("deepseek-v3", 1024, "uniform", pp=8, vpp=2)
    _, split = _plan("deepseek-v3", 1024, "dp", pp=8, vpp=2)
    top = split.plans[0]
    assert top.parallel.vpp == 2 and sum(top.parallel.stage_layers) == model.num_layers
    assert "by DP (heuristic)" in top.why
    assert all(n >= 2 for n in top.parallel.stage_layers)  # every chunk keeps a layer
    assert top.estimate.step_time_s < even.plans[0].estimate.step_time_s
    assert top.estimate.memory.total_bytes <= 76 * GIB
