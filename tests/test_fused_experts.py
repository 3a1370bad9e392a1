"""`--moe-fused-experts`: Transformer Engine's fused MXFP8 grouped MLP launches a fixed number of
expert kernels whatever the local experts, folds the activation and fc2's input cast into the
GEMM epilogue, runs only where the kernel exists, and Megatron gets what turns it on."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest
from test_cli import invoke

from sysplan.core.errors import InputError
from sysplan.costmodels import moe as moe_module
from sysplan.costmodels.candidates import Candidates
from sysplan.costmodels.efficiency import Efficiency
from sysplan.costmodels.layer_cost import model_costs
from sysplan.costmodels.types import ParallelConfig
from sysplan.hardware import load_cluster
from sysplan.models import resolve_model
from sysplan.planners.runtimes import get_runtime
from sysplan.workloads.training import check_fused_experts, make_train_job

GB200 = load_cluster("gb200-nvl72")[0]
NAMES = Path(__file__).parent / "data" / "runtime-names"
QWEN = resolve_model("qwen3-30b-a3b")[0]


def _moe(fused: bool, ep: int):
    job = make_train_job(QWEN, seq_len=4096, global_batch=64, precision="fp8",
                         moe_fused_experts=fused)[0]
    c = Candidates.from_configs([ParallelConfig(dp=8, ep=ep, global_batch=64)])
    return model_costs(QWEN, job, GB200, c, Efficiency.default(GB200)).kinds["moe"].moe


@pytest.mark.parametrize("ep", [2, 8])
def test_fused_kernels_do_not_grow_with_local_experts(ep) -> None:
    """Eager TE GroupedLinear runs one GEMM (and with fp8 one cast) per local expert; the fused
    grouped MLP runs FUSED_EXPERT_KERNELS whatever E / EP is."""
    eager, fused = _moe(False, ep), _moe(True, ep)
    local = QWEN.moe.num_experts / ep
    fixed = moe_module.MOE_BLOCK_KERNELS
    assert float(eager.kernels[0]) == fixed + 4 * local
    assert (float(fused.kernels[0]), float(fused.kernels_bwd[0])) == (
        fixed + moe_module.FUSED_EXPERT_KERNELS[0], fixed + moe_module.FUSED_EXPERT_KERNELS[1])
    assert float(fused.launch_s[0]) < float(eager.launch_s[0])


def test_fused_epilogue_removes_the_activation_pass() -> None:
    """The activation (reads 2f, writes f per routed row, 2 bytes each) and fc2's input cast
    (bf16 in, fp8 out: 3 bytes per element of f) leave the element-wise bytes; the expert GEMMs
    themselves are priced the same."""
    eager, fused = _moe(False, 8), _moe(True, 8)
    routed = 4096 * QWEN.moe.top_k * eager.imbalance  # one sequence per micro-batch
    f = QWEN.moe.expert_ffn_hidden
    saved = float(eager.elementwise_bytes[0] - fused.elementwise_bytes[0])
    assert saved == pytest.approx(routed * (2.0 * 3.0 * f + 3.0 * f))
    np.testing.assert_allclose(fused.expert_gemm_s, eager.expert_gemm_s)
    assert np.all(np.asarray(fused.activation_s) == 0.0)


@pytest.mark.parametrize(("model", "cluster", "precision", "words"), [
    ("8b", "gb200-nvl72", "fp8", "has no routed experts"),
    ("qwen3-30b-a3b", "dgx-h100", "fp8", "needs a Blackwell GPU"),
    ("qwen3-30b-a3b", "gb200-nvl72", "bf16", "accepted: --precision fp8"),
])
def test_where_the_kernel_does_not_exist_it_is_refused(model, cluster, precision, words) -> None:
    spec, target = resolve_model(model)[0], load_cluster(cluster)[0]
    job = make_train_job(spec, seq_len=4096, global_batch=64, precision=precision,
                         moe_fused_experts=True)[0]
    with pytest.raises(InputError, match=words):
        check_fused_experts(spec, job, target.gpu)
    result = invoke("train", "--model", model, "--cluster", cluster, "--gpus", "8",
                    "--precision", precision, "--moe-fused-experts")
    assert result.exit_code == 2 and words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_runtime_rules() -> None:
    """Megatron's op-fuser grouped MLP refuses expert TP; runtimes without it refuse it all."""
    job = make_train_job(QWEN, seq_len=4096, global_batch=64, precision="fp8",
                         moe_fused_experts=True)[0]
    c = Candidates.from_configs([ParallelConfig(tp=2, dp=4, ep=4, etp=1, global_batch=64),
                                 ParallelConfig(tp=2, dp=4, ep=4, etp=2, global_batch=64)])
    assert get_runtime("megatron").mask(c, QWEN, job).tolist() == [True, False]
    assert not get_runtime("torchtitan").mask(c, QWEN, job).any()
    eager = job.model_copy(update={"moe_fused_experts": False})
    assert get_runtime("megatron").mask(c, QWEN, eager).all()


def test_megatron_export_turns_it_on(tmp_path) -> None:
    result = invoke("train", "--model", "qwen3-30b-a3b", "--cluster", "gb200-nvl72", "--gpus",
                    "8", "--precision", "fp8", "--moe-fused-experts", "--export", "megatron",
                    "-o", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert "one fused grouped kernel per linear" in result.stdout
    script = (tmp_path / "megatron" / "train.sh").read_text()
    block = script.split("ARGS=(", 1)[1].split("\n)", 1)[0]
    words = shlex.split(block, comments=True)
    flags = {w for w in words if w.startswith("--")}
    assert "--use-transformer-engine-op-fuser" in flags
    assert " ".join(words).count("--fp8-recipe mxfp8") == 1
    assert flags - set((NAMES / "megatron.txt").read_text().split()) == set()
    assert "NVTE_CUTEDSL_FUSED_GROUPED_MLP=1" in script


# --- --moe-rank-capacity: HybridEP's per-rank token budget ------------------------------------


def test_rank_budget_caps_the_imbalance_without_padding() -> None:
    """The busiest rank takes min(imbalance, budget) x the mean; a per-expert capacity factor
    pads every expert up to its factor instead."""
    job = make_train_job(QWEN, seq_len=4096, global_batch=64, moe_load_imbalance=1.3,
                         moe_rank_capacity=1.2, moe_dispatcher="flex")[0]
    assert job.moe_routed_imbalance == pytest.approx(1.2)
    assert job.model_copy(update={"moe_rank_capacity": 1.5}).moe_routed_imbalance == 1.3
    padded = job.model_copy(update={"moe_rank_capacity": None, "moe_capacity_factor": 1.5})
    assert padded.moe_routed_imbalance == 1.5


@pytest.mark.parametrize(("extra", "words"), [
    ((), "accepted: --moe-dispatcher flex"),
    (("--moe-dispatcher", "flex", "--moe-capacity-factor", "1"), "accepted: one of the two"),
])
def test_rank_budget_refusals(extra, words) -> None:
    result = invoke("train", "--model", "qwen3-30b-a3b", "--cluster", "gb200-nvl72", "--gpus",
                    "8", "--moe-rank-capacity", "1.5", *extra)
    assert result.exit_code == 2 and words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("fused", [False, True])
def test_rank_budget_lets_a_full_graph_capture_dropless_routing(tmp_path, fused) -> None:
    """26.08's Megatron-Bridge MXFP8 recipes: a full-iteration graph over HybridEP with a rank
    budget and paged stashing; without the op fuser Megatron needs TE's grouped tensors."""
    extra = ("--precision", "fp8", "--moe-fused-experts") if fused else ()
    result = invoke("train", "--model", "qwen3-30b-a3b", "--cluster", "gb200-nvl72", "--gpus",
                    "8", "--cuda-graphs", "full", "--moe-dispatcher", "flex",
                    "--moe-rank-capacity", "1.5", *extra, "--export", "megatron",
                    "-o", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    script = (tmp_path / "megatron" / "train.sh").read_text()
    words = " ".join(shlex.split(script.split("ARGS=(", 1)[1].split("\n)", 1)[0],
                                 comments=True))
    for expected in ("--moe-expert-rank-capacity-factor 1.5", "--moe-paged-stash",
                     "--moe-flex-dispatcher-backend hybridep",
                     "--cuda-graph-scope full_iteration"):
        assert expected in words
    assert ("--moe-use-grouped-tensor" in words) is not fused
    assert "--moe-pad-expert-input-to-capacity" not in words
    flags = {w for w in words.split() if w.startswith("--")}
    assert flags - set((NAMES / "megatron.txt").read_text().split()) == set()
