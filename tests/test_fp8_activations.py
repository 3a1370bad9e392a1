"""What a layer keeps for backward under FP8 (Transformer Engine keeps the linears' quantized
inputs, torchao the 16-bit ones), and MLA's down projections not taken for MLP ones."""

import pytest

from sysplan.costmodels.layers import layer_shapes
from sysplan.costmodels.memory import activation_bytes_per_token
from sysplan.models import resolve_model
from sysplan.planners.runtimes import RUNTIMES, job_for
from sysplan.workloads.training import TrainJob


def _bytes(model_name: str, moe: bool, selective: bool = True, **job) -> float:
    model = resolve_model(model_name)[0]
    spec = TrainJob(seq_len=4096, global_batch=64, moe_load_imbalance=1.0, **job)
    return float(activation_bytes_per_token(model, spec, layer_shapes(model, moe), 1.0, 0.0,
                                            1.0, selective))


def test_llama_fp8_keeps_one_byte_linear_inputs_and_a_second_copy_of_o():
    model = resolve_model("llama3-8b")[0]
    h, f, heads, d = model.hidden_size, model.ffn_hidden, model.num_heads, model.head_dim
    bf16 = _bytes("llama3-8b", False)
    fp8 = _bytes("llama3-8b", False, precision="fp8")
    # the QKV and MLP inputs (2 x h) and the down GEMM's input (f) drop to 1 byte; the
    # output projection adds its FP8 copy of the attention output (a d_h)
    assert bf16 - fp8 == pytest.approx(2 * h + f - heads * d)


def test_torchao_keeps_the_16_bit_inputs():
    assert _bytes("llama3-8b", False, precision="fp8", fp8_saved_inputs="bf16") == \
        _bytes("llama3-8b", False)


def test_moe_fp8_keeps_the_router_input_and_one_byte_expert_rows():
    model = resolve_model("qwen3-30b-a3b")[0]
    h, f, k = model.hidden_size, model.moe.expert_ffn_hidden, model.moe.top_k
    heads, d = model.num_heads, model.head_dim
    bf16 = _bytes("qwen3-30b-a3b", True)
    fp8 = _bytes("qwen3-30b-a3b", True, precision="fp8")
    # QKV input h saved; the MLP input stays 16-bit for the router GEMM; per routed row the
    # expert input (h) and the down GEMM's input (f) drop to 1 byte
    assert bf16 - fp8 == pytest.approx(h + k * (h + f) - heads * d)
    # moe_act's rerun frees the 16-bit activation output, not the down GEMM's FP8 copy
    rerun = _bytes("qwen3-30b-a3b", True, precision="fp8", recompute_modules=("moe_act",))
    assert rerun == pytest.approx(fp8)


def test_mla_down_projections_are_not_mlp_down_projections():
    model = resolve_model("deepseek-v3")[0]
    h, f = model.hidden_size, model.ffn_hidden
    shapes = layer_shapes(model, False)
    assert [g.name for g in shapes.gemms if g.mlp_down] == ["mlp_down"]
    # Korthikanti et al. 2022, Table 2 without recompute: 8h of norm inputs and linear
    # inputs, Q, K, V and O, the fp32 log-sum-exp, the SwiGLU hidden 6f
    kept = (8 * h + 2 * (model.num_heads * (shapes.attn_qk_dim + shapes.attn_v_dim)
                         + shapes.kv_bytes_dims) + 4 * model.num_heads + 6 * f)
    assert _bytes("deepseek-v3", False, selective=False) == pytest.approx(kept)


def test_the_runtime_sets_what_fp8_linears_keep():
    job = TrainJob(seq_len=4096, global_batch=64, precision="fp8")
    assert job_for([RUNTIMES["torchtitan"]], job).fp8_saved_inputs == "bf16"
    assert job_for([RUNTIMES["megatron"]], job).fp8_saved_inputs == "fp8"
