"""Megatron's --recompute-modules: selective recompute keeps less of what each module reruns
and pays that module's forward again; enumeration and the stage DP read the same costs."""

from pathlib import Path

import numpy as np
import pytest
from test_cli import invoke

from sysplan.costmodels.candidates import Candidates
from sysplan.costmodels.efficiency import Efficiency
from sysplan.costmodels.estimate import balanced_stage_layers
from sysplan.costmodels.layer_cost import model_costs
from sysplan.costmodels.training import price_training
from sysplan.costmodels.types import ParallelConfig
from sysplan.exporters import megatron
from sysplan.hardware import load_cluster
from sysplan.models import resolve_model
from sysplan.planners.pipeline_dp import evaluate_stages
from sysplan.planners.runtimes import RUNTIMES
from sysplan.planners.stage_costs import layer_costs
from sysplan.workloads.training import TrainJob

CLUSTER = load_cluster("dgx-h100")[0]
EFF = Efficiency.default(CLUSTER)
TOKENS = 4096


def _layer(model_name: str, kind: str, modules: tuple[str, ...], **config):
    model = resolve_model(model_name)[0]
    job = TrainJob(seq_len=TOKENS, global_batch=64, recompute_modules=modules,
                   moe_load_imbalance=1.0)
    parallel = ParallelConfig(global_batch=64, dp=8, recompute="selective", **config)
    costs = model_costs(model, job, CLUSTER, Candidates.from_configs([parallel]), EFF)
    return model, costs.kinds[kind]


def test_moe_act_drops_the_activation_output_and_reruns_its_pass():
    model, attn = _layer("qwen3-30b-a3b", "moe", ("core_attn",), ep=8)
    _, act = _layer("qwen3-30b-a3b", "moe", ("moe_act",), ep=8)
    f = model.moe.expert_ffn_hidden
    # top_k routed copies of the f-wide activation output, 2 bytes each
    dropped = TOKENS * model.moe.top_k * 2 * f
    assert float(attn.selective_bytes[0] - act.selective_bytes[0]) == pytest.approx(dropped)
    assert float(act.selective_s[0]) == pytest.approx(float(act.moe.activation_s[0]))
    assert float(act.selective_flops[0]) == 0.0


def test_layernorm_drops_both_norm_outputs():
    model, none = _layer("8b", "dense", ("core_attn",))
    _, norms = _layer("8b", "dense", ("layernorm",))
    h = model.hidden_size
    assert float(none.selective_bytes[0] - norms.selective_bytes[0]) == pytest.approx(
        TOKENS * 4 * h)
    # two norms read and write h each, at the copy bandwidth
    assert float(norms.selective_s[0]) == pytest.approx(
        2 * 2 * h * 2 * TOKENS / EFF.memory_bytes_per_s)


def test_mla_up_proj_keeps_the_latents_and_reruns_the_up_projections():
    model, none = _layer("deepseek-v3", "moe", ("core_attn",), ep=8)
    _, up = _layer("deepseek-v3", "moe", ("mla_up_proj",), ep=8)
    mla, a = model.mla, model.num_heads
    qk = mla.qk_nope_head_dim + mla.qk_rope_head_dim
    q, kv = a * qk, a * (qk + mla.v_head_dim)  # Q, and K with V
    assert float(none.selective_bytes[0] - up.selective_bytes[0]) == pytest.approx(
        TOKENS * 2 * (q + kv))
    flops = 2 * TOKENS * (q * mla.q_lora_rank
                          + a * (mla.qk_nope_head_dim + mla.v_head_dim) * mla.kv_lora_rank)
    assert float(up.selective_flops[0]) == pytest.approx(flops)


def test_mlp_reruns_a_dense_layer_mlp_and_keeps_only_its_input():
    model, none = _layer("8b", "dense", ("core_attn",))
    _, mlp = _layer("8b", "dense", ("mlp",))
    h, f = model.hidden_size, model.ffn_hidden
    assert float(none.selective_bytes[0] - mlp.selective_bytes[0]) == pytest.approx(
        TOKENS * 6 * f)
    assert float(mlp.selective_flops[0]) == pytest.approx(2 * TOKENS * (2 * f * h + f * h))


def test_enumeration_and_the_stage_dp_agree_with_modules():
    model = resolve_model("deepseek-v3")[0]
    job = TrainJob(seq_len=4096, global_batch=1024,
                   recompute_modules=("mla_up_proj", "mlp", "moe_act", "layernorm"))
    config = ParallelConfig(tp=2, pp=8, dp=64, ep=64, global_batch=1024, recompute="selective",
                            sequence_parallel=True)
    priced = price_training(model, job, CLUSTER, Candidates.from_configs([config]), EFF)
    costs = layer_costs(model, job, CLUSTER, config, EFF)
    plan = evaluate_stages(balanced_stage_layers(model.num_layers, 8), ("selective",) * 8,
                           costs.microbatches, **costs.arrays())
    assert max(plan.stage_memory_bytes) + costs.fixed_bytes == pytest.approx(
        float(priced.memory_bytes[0]), rel=0.01)
    default = price_training(model, job.model_copy(update={"recompute_modules": ("core_attn",)}),
                             CLUSTER, Candidates.from_configs([config]), EFF)
    assert priced.memory_bytes[0] < default.memory_bytes[0]


def test_modules_are_exported_to_megatron_and_refused_elsewhere():
    model = resolve_model("deepseek-v3")[0]
    job = TrainJob(seq_len=4096, global_batch=1024, recompute_modules=("mla_up_proj", "mlp"))
    config = ParallelConfig(tp=2, pp=8, dp=64, ep=64, global_batch=1024, recompute="selective",
                            sequence_parallel=True)
    args = megatron.parallel_arguments(config, model, job)
    at = args.index("--recompute-modules")
    assert args[at + 1:at + 3] == ["mla_up_proj", "mlp"]
    names = (Path(__file__).parent / "data/runtime-names/megatron.txt").read_text().split()
    assert {"--recompute-modules", "--recompute-granularity"} <= set(names)
    dense = resolve_model("8b")[0]
    dense_job = TrainJob(seq_len=4096, global_batch=64, recompute_modules=("layernorm",))
    plain = ParallelConfig(dp=8, global_batch=64, recompute="selective")
    for name in ("deepspeed", "torchtitan"):
        assert any("--recompute-modules" in f for f in
                   RUNTIMES[name].unsupported(plain, dense, dense_job))
    assert np.all(RUNTIMES["megatron"].mask(Candidates.from_configs([plain]), dense, dense_job))


@pytest.mark.parametrize(("args", "says"), [
    (("--model", "8b", "--recompute-modules", "moe_act"), "has none"),
    (("--model", "8b", "--recompute-modules", "mla_up_proj"), "multi-latent attention"),
    (("--model", "qwen3-30b-a3b", "--recompute-modules", "mlp"), "every layer"),
    (("--model", "8b", "--recompute-modules", "layernorm", "--recompute", "full"), "selective"),
    (("--model", "8b", "--recompute-modules", "norms"), "norms: not accepted"),
])
def test_bad_modules_exit_2_with_one_line(args, says):
    result = invoke("train", *args, "--cluster", "dgx-h100", "--gpus", "8")
    assert result.exit_code == 2 and says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_the_plan_heading_names_the_modules_it_reruns():
    result = invoke("train", "--model", "qwen3-30b-a3b", "--cluster", "dgx-h100", "--gpus", "8",
                    "--recompute", "selective", "--recompute-modules", "moe_act,layernorm",
                    "--top", "1")
    assert result.exit_code == 0, result.stderr
    assert "selective (moe_act, layernorm) recompute" in result.stdout, result.stdout
