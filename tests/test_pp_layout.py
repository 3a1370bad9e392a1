"""`sysplan train --pp-layout`: a pinned pipeline layout in Megatron's notation."""

from __future__ import annotations

import json

import pytest
from test_cli import invoke

from sysplan.core.errors import InputError
from sysplan.core.units import GIB
from sysplan.exporters.megatron import layout_string, pipeline_split_arguments
from sysplan.hardware import load_cluster
from sysplan.models import resolve_model
from sysplan.planners.pp_layout import expand, parse_pp_layout, rank_totals
from sysplan.planners.training import plan_training
from sysplan.planners.types import Pins
from sysplan.workloads.training import make_train_job

#: Megatron-Bridge's DeepSeek-V3 layout for 16 chunks (recipes/deepseek/deepseek_v3.py)
DSV3_16 = "Et*4|(t*4|)*14tmL"


def _plan(name: str, gpus: int, **pins):
    model, _ = resolve_model(name)
    cluster, _ = load_cluster("dgx-h100")
    job, _ = make_train_job(model, seq_len=4096)
    return model, plan_training(model, cluster, job, num_gpus=gpus, top=3, pins=Pins(**pins))


def test_repeats_expand_as_megatron_writes_them() -> None:
    assert expand("Et*2|(tt|)*2mL") == "Ett|tt|tt|mL"
    assert expand("Ettt|(tt|)*2,m|L") == "Ettt|tt|tt|m|L"  # commas are cosmetic, as in Megatron
    chunks = parse_pp_layout(DSV3_16, 61, 1, pp=16, vpp=None)
    assert chunks == (4,) * 15 + (1,)
    assert rank_totals(chunks, 2) == (32, 29)  # PP 2 x VPP 8: rank r holds chunks r, r+2, ...
    assert parse_pp_layout("Et|(tt|)*30mL", 61, 1, pp=8, vpp=4)[-1] == 0  # loss-only chunk


@pytest.mark.parametrize(("layout", "pp", "vpp", "message"), [
    ("Et*4|(t*4|)*14tXL", 16, None, "cannot read X"),
    (DSV3_16, None, None, "needs --pp"),
    (DSV3_16, 5, None, "16 chunks do not split over --pp 5"),
    (DSV3_16, 8, 4, "--pp 8 x --vpp 4 = 32"),
    ("t*4|Et*4|(t*4|)*13tmL", 16, None, "embedding E must appear once, in the first chunk"),
    ("Et*4|(t*4|)*14tm", 16, None, "loss L must appear once"),
    ("Et*4|(t*4|)*14tL", 16, None, "1 multi-token-prediction layers"),
    ("Et*4|(t*4|)*14ttmL", 16, None, "places 62 layers"),
    ("Et*61|mL", 2, None, "rank 1 holds no layer"),
    ("Et*99999999999|mL", 2, None, "t*99999999999 writes out more than 100,000 symbols"),
    ("E((t*1000|)*1000|)*1000mL", 2, None, "...*1000 writes out more than 100,000 symbols"),
])
def test_a_layout_that_cannot_run_names_what_is_wrong(layout, pp, vpp, message) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace("*", r"\*")):
        parse_pp_layout(layout, 61, 1, pp=pp, vpp=vpp)


def test_deepseek_v3_on_its_recipe_layout_beats_the_even_split() -> None:
    # even stages put 4 layers with MTP and the LM head on the last stage, the recipe 1
    model, even = _plan("deepseek-v3", 1024, pp=16)
    _, pinned = _plan("deepseek-v3", 1024, pp=16, pp_layout=DSV3_16)
    top = pinned.plans[0]
    assert top.parallel.stage_layers == (4,) * 15 + (1,)
    assert top.parallel.chunk_layers == (4,) * 15 + (1,)
    assert top.estimate.tokens_per_s_per_gpu > 1.05 * even.plans[0].estimate.tokens_per_s_per_gpu
    assert f"layout {DSV3_16} pinned: -" in top.why
    assert f"On the pinned layout {DSV3_16}" in pinned.explanation
    for plan in pinned.plans:  # shown plans fit and their memory is the layout's stages
        assert plan.estimate.fits and plan.estimate.memory.total_bytes <= 76 * GIB
        assert [s["layers"] for s in plan.estimate.memory.per_stage] == list(
            plan.parallel.stage_layers)
    args = pipeline_split_arguments(top.parallel, model)
    assert args == ["--pipeline-model-parallel-layout", layout_string(top.parallel, model)]
    assert expand(args[1]) == expand(DSV3_16)


@pytest.mark.parametrize("pins", [
    {"pp": 4, "recompute": "none"},
    {"pp": 2, "vpp": 2, "recompute": "selective"},
    {"pp": 4, "recompute": "full", "recompute_layers": 3},
])
def test_the_even_layout_pinned_prices_as_the_even_split(pins) -> None:
    # 32 layers: "Et*8|t*8|t*8|t*8L" is the split enumeration prices; pinning it changes nothing
    pins = {"vpp": 1, **pins}  # the layout's chunks fix VPP; the even run must match
    chunks = pins["pp"] * pins["vpp"]
    per = 32 // chunks
    layout = "|".join([f"Et*{per}"] + [f"t*{per}"] * (chunks - 2) + [f"t*{per}L"])
    _, even = _plan("8b", 16, tp=1, dp=16 // pins["pp"], micro_batch=1, **pins)
    _, pinned = _plan("8b", 16, tp=1, dp=16 // pins["pp"], micro_batch=1, pp_layout=layout,
                      **pins)
    a, b = even.plans[0], pinned.plans[0]
    assert b.estimate.step_time_s == pytest.approx(a.estimate.step_time_s, rel=1e-9)
    assert b.estimate.memory.total_bytes == pytest.approx(a.estimate.memory.total_bytes, rel=1e-9)
    assert "+0.0% pipeline time" in b.why


def test_an_uneven_layout_moves_time_to_the_heavier_rank() -> None:
    _, even = _plan("8b", 16, tp=1, pp=4, dp=4, micro_batch=1, recompute="none")
    _, lopsided = _plan("8b", 16, tp=1, pp=4, dp=4, micro_batch=1, recompute="none",
                        pp_layout="Et*14|t*6|t*6|t*6L")
    assert lopsided.plans[0].estimate.step_time_s > 1.3 * even.plans[0].estimate.step_time_s


def test_cli_pins_writes_and_refuses() -> None:
    args = ("train", "--model", "deepseek-v3", "--cluster", "dgx-h100", "--gpus", "1024",
            "--pp", "16", "--pp-layout", DSV3_16, "--top", "1")
    document = json.loads(invoke(*args, "--json").stdout)
    assert document["plans"][0]["parallel"]["chunk_layers"] == [4] * 15 + [1]
    bad = invoke(*args[:-4], "--pp-layout", "Et*4|(t*4|)*14tL", "--quiet")
    assert bad.exit_code == 2 and bad.stderr.count("\n") == 1 and "--pp-layout" in bad.stderr
    both = invoke(*args, "--stages", "dp", "--quiet")
    assert both.exit_code == 2 and both.stderr.count("\n") == 1 and "--stages dp" in both.stderr


def test_deepspeed_refuses_an_uneven_layout_up_front() -> None:
    model, _ = resolve_model("8b")
    cluster, _ = load_cluster("dgx-h100")
    job, _ = make_train_job(model, seq_len=4096)
    with pytest.raises(InputError, match="Megatron-DeepSpeed splits layers evenly"):
        plan_training(model, cluster, job, num_gpus=16, runtimes=("deepspeed",),
                      pins=Pins(pp=4, pp_layout="Et*14|t*6|t*6|t*6L"))
    even = plan_training(model, cluster, job, num_gpus=16, runtimes=("deepspeed",), top=1,
                         pins=Pins(pp=4, pp_layout="Et*8|t*8|t*8|t*8L"))
    assert even.plans[0].parallel.stage_layers == (8, 8, 8, 8)


def test_a_saved_plan_exports_its_pinned_layout(tmp_path) -> None:
    # the JSON keeps chunk_layers, so `sysplan export` writes the same layout, and torchtitan
    # gets the same modules per chunk
    out = tmp_path / "out"
    train = invoke("train", "--model", "8b", "--cluster", "dgx-h100", "--gpus", "8", "--pp", "2",
                   "--pp-layout", "Et*6|t*10|t*10|t*6L", "--top", "1", "--export",
                   "megatron,torchtitan,json", "-o", str(out), "--quiet")
    assert train.exit_code == 0, train.stderr
    script = (out / "megatron/train.sh").read_text()
    assert "--pipeline-model-parallel-layout 'Etttttt|tttttttttt|tttttttttt|ttttttL'" in script
    again = invoke("export", str(out / "plan.json"), "--to", "megatron", "-o", str(tmp_path / "b"))
    assert again.exit_code == 0, again.stderr
    assert (tmp_path / "b/megatron/train.sh").read_text() == script
    titan = (out / "torchtitan/sysplan_torchtitan.py").read_text()
    assert "'layers.5']" in titan and "['layers.6'," in titan and "'layers.15']" in titan


def test_the_examples_row_runs() -> None:
    """examples/README.md's --pp-layout row."""
    result = invoke("train", "--model", "deepseek-v3", "--cluster", "dgx-h100", "--gpus", "1024",
                    "--pp", "16", "--pp-layout", DSV3_16)
    assert result.exit_code == 0, result.stderr
    assert f"On the pinned layout {DSV3_16}" in result.stdout


def test_a_layout_no_plan_fits_exits_1_with_the_closest() -> None:
    # the even split fits; 62 of 80 layers on the first rank do not
    result = invoke("train", "--model", "70b", "--cluster", "dgx-h100", "--gpus", "64", "--pp", "4",
                    "--tp", "8", "--recompute", "none", "--micro-batch", "4", "--quiet",
                    "--pp-layout", "Et*62|t*6|t*6|t*6L")
    assert result.exit_code == 1
    assert "no plan fits; closest 4-stage plan needs" in result.stderr
    assert result.stderr.count("\n") == 1
