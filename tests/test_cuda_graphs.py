"""`--cuda-graphs`: captured kernels cost no host launch, the layouts a capture cannot run are
refused or left out, and Megatron gets the flags that capture them."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from test_cli import invoke

from sysplan.costmodels import moe as moe_module
from sysplan.costmodels.candidates import Candidates
from sysplan.costmodels.efficiency import Efficiency
from sysplan.costmodels.layer_cost import model_costs
from sysplan.costmodels.types import ParallelConfig
from sysplan.hardware import load_cluster
from sysplan.models import resolve_model
from sysplan.planners.space import enumerate_space
from sysplan.planners.types import Pins
from sysplan.workloads.training import make_train_job

CLUSTER = load_cluster("dgx-h100")[0]
NAMES = Path(__file__).parent / "data" / "runtime-names"


def _moe_launches(graphs: str, capacity: float | None = None) -> tuple[float, float]:
    model = resolve_model("qwen3-30b-a3b")[0]
    job = make_train_job(model, seq_len=4096, global_batch=64, cuda_graphs=graphs,
                         moe_capacity_factor=capacity)[0]
    c = Candidates.from_configs([ParallelConfig(dp=8, ep=8, global_batch=64)])
    moe = model_costs(model, job, CLUSTER, c, Efficiency.default(CLUSTER)).kinds["moe"].moe
    return float(moe.launch_s[0]), float(moe.launch_bwd_s[0])


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_captured_kernels_cost_their_graphed_share(share, monkeypatch) -> None:
    """Qwen3-30B-A3B at EP 8 launches 52 kernels forward and 84 backward per MoE layer;
    scoped graphs replay the router and preprocessing (10 each way), full graphs all; a
    replayed kernel costs MOE_GRAPHED_SHARE of an eager one (its GPU side stays)."""
    monkeypatch.setattr(moe_module, "MOE_GRAPHED_SHARE", share)
    per = moe_module.MOE_KERNEL_S
    assert _moe_launches("none") == pytest.approx((52 * per, 84 * per))
    replayed = moe_module.MOE_SCOPED_KERNELS * (1.0 - share) * per
    assert _moe_launches("scoped") == pytest.approx((52 * per - replayed, 84 * per - replayed))
    assert _moe_launches("full", capacity=1.0) == pytest.approx((52 * per * share,
                                                                   84 * per * share))


def test_graphs_remove_the_measured_per_op_overhead_of_the_layers() -> None:
    """With a profile's 50 us per op and a launch-bound small model, eager layers pay the host
    time beyond their kernels; captured layers pay none."""
    from dataclasses import replace

    model = resolve_model("gpt2")[0]
    eff = replace(Efficiency.default(CLUSTER), op_forward_s=50e-6, op_backward_s=50e-6)
    c = Candidates.from_configs([ParallelConfig(dp=8, global_batch=8)])
    overhead = {}
    for graphs in ("none", "scoped", "full"):
        job = make_train_job(model, seq_len=128, global_batch=8, cuda_graphs=graphs)[0]
        time = model_costs(model, job, CLUSTER, c, eff).kinds["dense"].time
        overhead[graphs] = float(np.asarray(time.overhead_s + time.overhead_bwd_s).ravel()[0])
    assert overhead["none"] > 0 and overhead["scoped"] == overhead["full"] == 0.0


def test_scoped_graphs_leave_full_recompute_out_of_the_search() -> None:
    model = resolve_model("8b")[0]
    codes = {}
    for graphs in ("none", "scoped"):
        job = make_train_job(model, seq_len=4096, global_batch=64, cuda_graphs=graphs)[0]
        codes[graphs] = set(np.unique(enumerate_space(model, job, CLUSTER, 8, Pins()).recompute))
    assert 2 in codes["none"] and 2 not in codes["scoped"] and codes["scoped"]


@pytest.mark.parametrize(("args", "words"), [
    (("--model", "qwen3-30b-a3b", "--cuda-graphs", "full"), "--moe-capacity-factor"),
    (("--model", "8b", "--cuda-graphs", "scoped", "--recompute", "full"),
     "accepted with --cuda-graphs scoped: none, selective"),
    (("--model", "8b", "--cuda-graphs", "all"), "choose one of none, scoped, full"),
])
def test_a_capture_that_cannot_run_is_refused(args, words) -> None:
    result = invoke("train", *args, "--cluster", "dgx-h100", "--gpus", "8")
    assert result.exit_code == 2 and words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def _flags(script: str) -> list[str]:
    block = script.split("ARGS=(", 1)[1].split("\n)", 1)[0]
    return [w for w in shlex.split(block, comments=True) if w.startswith("--")]


@pytest.mark.parametrize(("model", "graphs", "extra", "expected"), [
    ("qwen3-30b-a3b", "scoped", (), "--cuda-graph-scope attn moe_router moe_preprocess"),
    ("8b", "scoped", (), "--cuda-graph-scope attn mlp"),
    ("qwen3-30b-a3b", "full", ("--moe-capacity-factor", "1.0"),
     "--cuda-graph-scope full_iteration"),
])
def test_megatron_exports_the_capture(tmp_path, model, graphs, extra, expected) -> None:
    result = invoke("train", "--model", model, "--cluster", "dgx-h100", "--gpus", "8",
                    "--cuda-graphs", graphs, *extra, "--export", "megatron",
                    "-o", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    script = (tmp_path / "megatron" / "train.sh").read_text()
    assert expected in " ".join(shlex.split(script.split("ARGS=(", 1)[1].split("\n)", 1)[0],
                                            comments=True))
    accepted = set((NAMES / "megatron.txt").read_text().split())
    assert set(_flags(script)) - accepted == set()
    assert "--te-rng-tracker" in _flags(script)
    if graphs == "full":
        assert "--moe-pad-expert-input-to-capacity" in _flags(script)


@pytest.mark.parametrize("runtime", ["deepspeed", "torchtitan"])
def test_runtimes_without_capture_refuse_it(runtime) -> None:
    result = invoke("train", "--model", "8b", "--cluster", "dgx-h100", "--gpus", "8",
                    "--cuda-graphs", "scoped", "--runtime", runtime)
    assert result.exit_code == 2
    assert re.search(r"CUDA-graph capture of the training step", result.stderr), result.stderr


def test_the_examples_row_runs() -> None:
    """examples/README.md's --cuda-graphs row."""
    result = invoke("train", "--model", "qwen3-30b-a3b", "--cluster", "dgx-h100", "--gpus", "8",
                    "--cuda-graphs", "scoped")
    assert result.exit_code == 0, result.stderr
    assert "replayed from CUDA graphs at 100% of an eager kernel's cost" in result.stdout
