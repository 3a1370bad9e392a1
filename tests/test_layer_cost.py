"""costmodels/layer_cost.py: one per-layer cost function, read alike by enumeration and the
stage DP; costmodels/moe.py: the routed-expert block as it runs."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sysplan.costmodels.candidates import Candidates
from sysplan.costmodels.efficiency import Efficiency
from sysplan.costmodels.estimate import balanced_stage_layers
from sysplan.costmodels.layer_cost import Layout, model_costs
from sysplan.costmodels.moe import grouped_gemm_seconds, moe_layer_cost
from sysplan.costmodels.training import price_training
from sysplan.costmodels.types import ParallelConfig
from sysplan.hardware import load_cluster
from sysplan.models import MoESpec, resolve_model
from sysplan.models.spec import ModelSpec
from sysplan.planners.pipeline_dp import evaluate_stages
from sysplan.planners.stage_costs import layer_costs
from sysplan.workloads.training import make_train_job

CLUSTER = load_cluster("dgx-h100")[0]
EFF = Efficiency.default(CLUSTER)
PIPELINE = ("compute_gemm", "compute_attention", "compute_elementwise", "recompute", "lm_head",
            "tp_comm", "cp_comm", "ep_comm", "pp_bubble")


def _model(layers: int, moe: bool, mtp: int, first_dense: int) -> ModelSpec:
    spec = MoESpec(num_experts=16, top_k=2, expert_ffn_hidden=512, num_shared_experts=1,
                   first_dense_layers=min(first_dense, layers - 1)) if moe else None
    return ModelSpec(name="random", num_layers=layers, hidden_size=1024, num_heads=16,
                     num_kv_heads=4, head_dim=64, ffn_hidden=2816, vocab_size=32000,
                     max_seq_len=4096, moe=spec, mtp_layers=mtp)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers=st.integers(4, 13), moe=st.booleans(), mtp=st.integers(0, 1),
       first_dense=st.integers(0, 3), pp=st.sampled_from([1, 2, 4]), tp=st.sampled_from([1, 2]),
       ep=st.sampled_from([1, 2, 4]), mode=st.sampled_from(["none", "selective", "full"]),
       zero=st.sampled_from([0, 1, 3]))
def test_enumeration_and_dp_even_split_agree(layers, moe, mtp, first_dense, pp, tp, ep, mode,
                                             zero):
    """price_training and the stage DP's even split price the same stages: pipeline time
    and the fullest stage's memory within 1 % on dense, MoE and MTP layouts."""
    if pp > layers:
        pp = 1
    model = _model(layers, moe, mtp, first_dense)
    dp = 16 // (tp * pp)
    ep = ep if moe else 1
    job = make_train_job(model, seq_len=2048, global_batch=dp * 8)[0]
    config = ParallelConfig(tp=tp, pp=pp, dp=dp, ep=ep, global_batch=dp * 8, recompute=mode,
                            sequence_parallel=tp > 1, zero=zero)
    priced = price_training(model, job, CLUSTER, Candidates.from_configs([config]), EFF)
    costs = layer_costs(model, job, CLUSTER, config, EFF)
    plan = evaluate_stages(balanced_stage_layers(layers, pp), (mode,) * pp, costs.microbatches,
                           **costs.arrays())
    enumerated = sum(float(priced.time[k][0]) for k in PIPELINE)
    assert plan.pipeline_time_s == pytest.approx(enumerated, rel=0.01)
    memory = max(plan.stage_memory_bytes) + costs.fixed_bytes
    assert memory == pytest.approx(float(priced.memory_bytes[0]), rel=0.01)


def test_mtp_is_priced_on_the_last_stage():
    """DeepSeek-V3's MTP module costs time and memory in enumeration (it did not before)."""
    model = resolve_model("deepseek-v3")[0]
    without = model.model_copy(update={"mtp_layers": 0})
    job = make_train_job(model, seq_len=4096, global_batch=1024)[0]
    config = ParallelConfig(tp=2, pp=8, dp=64, ep=64, global_batch=1024, recompute="full",
                            sequence_parallel=True)
    c = Candidates.from_configs([config])
    a, b = (price_training(m, job, CLUSTER, c, EFF) for m in (model, without))
    assert a.step_time_s[0] > b.step_time_s[0]
    assert a.memory_bytes[0] >= b.memory_bytes[0]


def _moe_layout(tokens: float, ep: float, etp: float = 1.0) -> Layout:
    one = np.ones(1)
    return Layout(one, one, ep * one, etp * one, 0 * one, tokens * one)


def test_tokens_per_expert_and_dispatch_volume_by_hand():
    """Qwen3-30B-A3B, 16,384 local tokens, EP 8: 128 experts top-8 -> 16 local experts of
    16,384 x 8 / 16 = 8,192 rows; each rank sends 16,384 x 8 x 2,048 x 2 bytes per a2a."""
    model = resolve_model("qwen3-30b-a3b")[0]
    job = make_train_job(model, seq_len=4096, global_batch=8, moe_load_imbalance=1.0,
                         moe_dispatcher="alltoall")[0]
    cost = moe_layer_cost(model, job, CLUSTER, EFF, _moe_layout(16384, 8))
    assert cost.local_experts[0] == 16
    assert cost.tokens_per_expert[0] == pytest.approx(8192)
    assert cost.dispatch_bytes[0] == pytest.approx(16384 * 8 * 2048 * 2)
    # 2 MNK over the gate/up (2 x 768) and down (768) GEMMs of every routed row
    assert cost.expert_flops[0] == pytest.approx(2 * 16384 * 8 * 2048 * (2 * 768 + 768))


def test_moe_block_pays_a_fixed_cost_per_kernel_it_launches(monkeypatch):
    """Qwen3-30B-A3B at EP 8 (16 local experts), bf16: forward 20 block kernels + 2 GEMMs per
    expert = 52, backward 20 + 4 per expert = 84; fp8 adds one quantisation per GEMM; EP 32
    (4 local experts) launches fewer; each costs MOE_KERNEL_S, forward and recomputed alike."""
    from sysplan.costmodels import moe as moe_module

    model = resolve_model("qwen3-30b-a3b")[0]
    bf16, fp8 = (make_train_job(model, seq_len=4096, global_batch=8, precision=p)[0]
                 for p in ("bf16", "fp8"))
    cost = moe_layer_cost(model, bf16, CLUSTER, EFF, _moe_layout(16384, 8))
    assert (cost.kernels[0], cost.kernels_bwd[0]) == (52, 84)
    assert cost.launch_s[0] == pytest.approx(52 * moe_module.MOE_KERNEL_S)
    cast = moe_layer_cost(model, fp8, CLUSTER, EFF, _moe_layout(16384, 8))
    assert (cast.kernels[0], cast.kernels_bwd[0]) == (84, 116)
    wide = moe_layer_cost(model, bf16, CLUSTER, EFF, _moe_layout(16384, 32))
    assert wide.kernels[0] == 20 + 2 * 4
    c = Candidates.from_configs([ParallelConfig(dp=8, ep=8, global_batch=64)])
    seconds = []
    for per_kernel in (0.0, 1e-4):
        monkeypatch.setattr(moe_module, "MOE_KERNEL_S", per_kernel)
        layer = model_costs(model, bf16, CLUSTER, c, EFF).kinds["moe"]
        seconds.append([float(layer.seconds(full, 0.0)[0]) for full in (0.0, 1.0)])
    assert seconds[1][0] - seconds[0][0] == pytest.approx((52 + 84) * 1e-4)
    assert seconds[1][1] - seconds[0][1] == pytest.approx((2 * 52 + 84) * 1e-4)


def test_biased_experts_pay_the_eager_bias_add():
    """GPT-OSS's expert biases: Megatron-Core adds the probability-scaled down bias outside
    the GEMM, per local expert, in fp32 (EXPERT_BIAS_BYTES per routed element over forward and
    backward, priced as a third of it forward) with its own kernels; unbiased experts do not."""
    from sysplan.costmodels import moe as moe_module

    model = resolve_model("gpt-oss-120b")[0]
    plain = model.model_copy(update={"moe": model.moe.model_copy(update={"expert_bias": False})})
    job = make_train_job(model, seq_len=4096, global_batch=8, moe_load_imbalance=1.0,
                         moe_dispatcher="alltoall")[0]
    biased, unbiased = (moe_layer_cost(m, job, CLUSTER, EFF, _moe_layout(16384, 8))
                        for m in (model, plain))
    routed = 16384 * model.moe.top_k
    extra = moe_module.EXPERT_BIAS_BYTES / 3.0 * routed * model.hidden_size
    assert biased.elementwise_bytes[0] - unbiased.elementwise_bytes[0] == pytest.approx(extra)
    (per_f, fixed_f), (per_b, fixed_b) = moe_module.EXPERT_BIAS_KERNELS
    local = model.moe.num_experts / 8
    assert biased.kernels[0] - unbiased.kernels[0] == per_f * local + fixed_f
    assert biased.kernels_bwd[0] - unbiased.kernels_bwd[0] == per_b * local + fixed_b


def test_a_clamped_activation_pays_the_eager_clamps_and_cat():
    """GPT-OSS's swiglu_limit: Megatron-Core clamps fc1's two halves and concatenates them
    eagerly before its fused activation (CLAMP_ELEMENTS forward and backward, priced as a
    third forward under the layer's convention, with their kernels); the forward joins the
    activation pass a moe_act recompute replays, and the concatenation is kept for backward
    unless that recompute drops it; the fused grouped MLP has no such passes."""
    from sysplan.costmodels import moe as moe_module

    model = resolve_model("gpt-oss-120b")[0]
    plain = model.model_copy(update={"moe": model.moe.model_copy(
        update={"activation_clamp": None})})
    job = make_train_job(model, seq_len=4096, global_batch=8, moe_load_imbalance=1.0,
                         moe_dispatcher="alltoall")[0]
    clamped, unclamped = (moe_layer_cost(m, job, CLUSTER, EFF, _moe_layout(16384, 8))
                          for m in (model, plain))
    rows, f = 16384 * model.moe.top_k, model.moe.expert_ffn_hidden
    forward, backward = (2 * rows * f * n for n in moe_module.CLAMP_ELEMENTS)  # bf16
    assert (clamped.elementwise_bytes[0] - unclamped.elementwise_bytes[0]
            == pytest.approx((forward + backward) / 3.0))
    assert (clamped.activation_s[0] - unclamped.activation_s[0]
            == pytest.approx(forward / EFF.memory_bytes_per_s))
    assert clamped.kernels[0] - unclamped.kernels[0] == moe_module.CLAMP_KERNELS[0]
    assert clamped.kernels_bwd[0] - unclamped.kernels_bwd[0] == moe_module.CLAMP_KERNELS[1]
    # memory: the concatenated clamped halves (2f, 16-bit) per routed row, unless recomputed
    from sysplan.costmodels.layers import layer_shapes
    from sysplan.costmodels.memory import activation_bytes_per_token

    shapes = layer_shapes(model, True)
    moe_act = job.model_copy(update={"recompute_modules": ("moe_act",)})
    for run, recompute, extra in ((job, False, model.moe.top_k * 4.0 * f), (moe_act, True, 0.0)):
        kept = [float(activation_bytes_per_token(m, run, shapes, 1, 0, 1, recompute))
                for m in (model, plain)]
        assert kept[0] - kept[1] == pytest.approx(extra)
    fused = job.model_copy(update={"moe_fused_experts": True, "precision": "fp8"})
    both = [moe_layer_cost(m, fused, CLUSTER, EFF, _moe_layout(16384, 8)) for m in (model, plain)]
    assert both[0].elementwise_bytes[0] == pytest.approx(both[1].elementwise_bytes[0])
    assert both[0].kernels[0] == both[1].kernels[0]


def test_flex_dispatch_sends_one_copy_per_destination_gpu_and_node():
    """Flex (DeepEP-style): Qwen3-30B-A3B's 8 experts of 128 over 8 GPUs land on
    8 (1 - C(112, 8)/C(128, 8)) distinct GPUs, the bytes one rank sends per token; DeepSeek-V3's
    node-limited routing keeps a token on at most 4 of 8 nodes, and the flex dispatcher is
    the cheapest over InfiniBand at EP 64."""
    from math import comb

    from sysplan.costmodels.moe import distinct_units

    qwen = resolve_model("qwen3-30b-a3b")[0]
    expected = 8 * (1 - comb(112, 8) / comb(128, 8))
    assert distinct_units(np.array([8.0]), qwen.moe)[0] == pytest.approx(expected)
    job = make_train_job(qwen, seq_len=4096, global_batch=8, moe_load_imbalance=1.0,
                         moe_dispatcher="flex")[0]
    cost = moe_layer_cost(qwen, job, CLUSTER, EFF, _moe_layout(16384, 8))
    assert cost.dispatcher_name() == "flex"
    assert cost.dispatch_bytes[0] == pytest.approx(16384 * 2048 * 2 * expected)
    dsv3 = resolve_model("deepseek-v3")[0]
    nodes = distinct_units(np.array([8.0]), dsv3.moe)[0]
    assert 3.5 < nodes <= 4.0 + 1e-9  # 4 of 8 groups, one group per node
    assert distinct_units(np.array([8.0]), dsv3.moe.model_copy(
        update={"route_groups": 1, "route_groups_per_token": None}))[0] > 5.0
    job = make_train_job(dsv3, seq_len=4096, global_batch=8)[0]
    auto = moe_layer_cost(dsv3, job, CLUSTER, EFF, _moe_layout(4096, 64))
    a2a = moe_layer_cost(dsv3, job.model_copy(update={"moe_dispatcher": "alltoall"}), CLUSTER,
                         EFF, _moe_layout(4096, 64))
    assert auto.dispatcher_name() == "flex" and auto.dispatch_s[0] < 0.6 * a2a.dispatch_s[0]


def test_dispatch_across_nodes_costs_more_than_inside_nvlink():
    model = resolve_model("deepseek-v3")[0]
    job = make_train_job(model, seq_len=4096, global_batch=8)[0]
    inside = moe_layer_cost(model, job, CLUSTER, EFF, _moe_layout(4096, 8))
    across = moe_layer_cost(model, job, CLUSTER, EFF, _moe_layout(4096, 64))
    assert across.dispatch_s[0] > 2 * inside.dispatch_s[0]


def test_grouped_gemm_pads_each_expert_to_a_tile():
    """Ten experts of 1 row cost what ten experts of 128 rows cost (one tile each)."""
    peak = CLUSTER.gpu.peak("bf16")
    one = grouped_gemm_seconds(EFF, np.array([1.0]), 10, 1536, 2048, peak)
    tile = grouped_gemm_seconds(EFF, np.array([128.0]), 10, 1536, 2048, peak)
    assert one[0][0] == pytest.approx(tile[0][0])
    assert one[1][0] <= tile[1][0]


def test_imbalance_slows_the_moe_layer():
    model = resolve_model("qwen3-30b-a3b")[0]
    c = Candidates.from_configs([ParallelConfig(dp=8, ep=8, global_batch=64)])
    times = []
    for imbalance in (1.0, 1.5):
        job = make_train_job(model, seq_len=4096, global_batch=64,
                             moe_load_imbalance=imbalance)[0]
        times.append(float(model_costs(model, job, CLUSTER, c, EFF).kinds["moe"]
                           .seconds(0.0, 0.0)[0]))
    assert times[1] > times[0]


def test_capacity_factor_sets_what_every_rank_computes_and_sends():
    """Dropping past capacity and padding up to it: with imbalance 1.5 and capacity factor
    1.25 the busiest rank holds 1.25x the mean routed rows; a factor above the imbalance pads
    every expert to it, so it costs more than dropless routing."""
    model = resolve_model("qwen3-30b-a3b")[0]

    def cost(**flags):
        job = make_train_job(model, seq_len=4096, global_batch=8, **flags)[0]
        return moe_layer_cost(model, job, CLUSTER, EFF, _moe_layout(16384, 64))

    capped = cost(moe_load_imbalance=1.5, moe_capacity_factor=1.25, moe_dispatcher="alltoall")
    # EP 64: 2 local experts of 16,384 x 8 / 2 rows at the mean; the all-to-all dispatcher
    assert capped.tokens_per_expert[0] == pytest.approx(65536 * 1.25)
    assert capped.dispatcher_name() == "alltoall"
    assert capped.dispatch_bytes[0] == pytest.approx(16384 * 8 * 2048 * 2 * 1.25)
    loose = cost(moe_load_imbalance=1.5, moe_capacity_factor=4.0)
    dropless = cost(moe_load_imbalance=1.5)
    assert loose.expert_gemm_s[0] > dropless.expert_gemm_s[0] > capped.expert_gemm_s[0]
    assert loose.tokens_per_expert[0] == pytest.approx(65536 * 4.0)


def test_capacity_factor_is_exported_to_megatron_and_refused_on_dense_models():
    from test_cli import invoke

    ok = invoke("train", "--model", "qwen3-30b-a3b", "--cluster", "dgx-h100", "--gpus", "8",
                "--moe-capacity-factor", "1.25", "--top", "1", "--json")
    assert ok.exit_code == 0, ok.stderr
    dense = invoke("train", "--model", "8b", "--cluster", "dgx-h100",
                   "--moe-capacity-factor", "1.25")
    assert dense.exit_code == 2 and "has no experts" in dense.stderr
    from sysplan.exporters import megatron
    from sysplan.workloads.training import TrainJob

    job = TrainJob(seq_len=4096, global_batch=8, moe_capacity_factor=1.25)
    args = megatron.model_arguments(resolve_model("qwen3-30b-a3b")[0], job)
    at = args.index("--moe-expert-capacity-factor")
    assert args[at + 1] == "1.25" and "--moe-token-drop-policy" in args
    assert "--moe-pad-expert-input-to-capacity" in args  # static shapes: no host sync
    from pathlib import Path

    names = (Path(__file__).parent / "data/runtime-names/megatron.txt").read_text().split()
    assert {"--moe-expert-capacity-factor", "--moe-token-drop-policy",
            "--moe-pad-expert-input-to-capacity"} <= set(names)


def test_ep_overlap_hides_the_all_to_all_behind_the_layer_compute():
    """Batch-level overlap: exposed = what the layer's forward + backward compute cannot hide,
    plus the SM share the hidden part takes from that compute; exported as Megatron's flags."""
    from sysplan.costmodels import collectives as coll
    from sysplan.costmodels.layer_cost import layer_cost

    model = resolve_model("deepseek-v3")[0]
    lay = _moe_layout(4096, 64)
    plain = make_train_job(model, seq_len=4096, global_batch=8)[0]
    over = plain.model_copy(update={"ep_comm_overlap": True})
    a, b = (layer_cost(model, j, CLUSTER, EFF, lay, True) for j in (plain, over))
    t = a.time
    compute = t.total_s + t.gemm_bwd_s + t.attention_bwd_s + 2.0 * t.elementwise_s
    hidden = np.minimum(a.comm["ep"], compute)
    assert b.comm["ep"][0] == pytest.approx(
        (a.comm["ep"] - hidden + coll.COLLECTIVE_COMPUTE_SHARE * hidden)[0])
    assert b.comm["ep"][0] < a.comm["ep"][0]
    from sysplan.exporters import megatron

    args = megatron.model_arguments(model, over)
    assert "--overlap-moe-expert-parallel-comm" in args and "--delay-wgrad-compute" in args
    assert "--overlap-moe-expert-parallel-comm" not in megatron.model_arguments(model, plain)


def test_all_gather_dispatcher_wins_at_small_ep_and_large_top_k():
    """Qwen3-30B-A3B (top-8): at EP 4 the all-to-all sends 8 copies of 3/4 of the tokens each
    way, the all-gather 3/4 of one copy of the group's 4x: without the flex kernels the
    planner prices the all-gather and Megatron's export names it; at EP 64 the all-to-all
    stays; "auto" proposes the deduplicating flex dispatcher only across nodes (EP 64), where
    it is the cheapest of the three."""
    model = resolve_model("qwen3-30b-a3b")[0]
    job = make_train_job(model, seq_len=4096, global_batch=8, moe_load_imbalance=1.0)[0]
    cost = {name: {ep: moe_layer_cost(model, job.model_copy(update={"moe_dispatcher": name}),
                                      CLUSTER, EFF, _moe_layout(16384, ep)) for ep in (4, 64)}
            for name in ("alltoall", "allgather", "auto")}
    assert cost["allgather"][4].dispatch_s[0] < cost["alltoall"][4].dispatch_s[0]
    assert cost["allgather"][64].dispatch_s[0] > cost["alltoall"][64].dispatch_s[0]
    assert cost["allgather"][4].dispatch_bytes[0] == pytest.approx(16384 * 2048 * 2 * 4)
    assert cost["auto"][4].dispatcher_name() == "allgather"
    assert cost["auto"][64].dispatcher_name() == "flex"
    flex = job.model_copy(update={"moe_dispatcher": "flex"})
    assert moe_layer_cost(model, flex, CLUSTER, EFF, _moe_layout(16384, 64)).dispatch_s[0] == (
        cost["auto"][64].dispatch_s[0]) < cost["alltoall"][64].dispatch_s[0]
    from sysplan.costmodels.moe import token_dispatcher
    from sysplan.costmodels.types import ParallelConfig as Config

    config = Config(tp=1, dp=8, ep=4, global_batch=8)
    no_flex = job.model_copy(update={"moe_dispatcher": "allgather"})
    assert token_dispatcher(model, no_flex, CLUSTER, config) == "allgather"
    assert token_dispatcher(model, job, CLUSTER, config) == "allgather"
    assert token_dispatcher(model, job, CLUSTER, config.model_copy(
        update={"ep": 64, "dp": 64, "global_batch": 64})) == "flex"
    from sysplan.exporters import megatron

    args = megatron.model_arguments(model, job, "flex")
    assert args[args.index("--moe-flex-dispatcher-backend") + 1] == "deepep"
    dsv3 = megatron.model_arguments(resolve_model("deepseek-v3")[0], job)
    assert dsv3[dsv3.index("--moe-router-group-topk") + 1] == "4"


def test_tp_collectives_outside_the_layers_are_priced_on_the_end_stages():
    """The vocab-parallel embedding (first stage) and the LM head's input and loss (last
    stage) each add one b s h all-reduce volume under TP; the loss adds three small ones."""
    model = resolve_model("8b")[0]
    job, _ = make_train_job(model, seq_len=4096, global_batch=16, precision="bf16")
    configs = [ParallelConfig(tp=tp, pp=2, dp=1, micro_batch=1, global_batch=16,
                              sequence_parallel=tp > 1, recompute="none") for tp in (1, 4)]
    costs = model_costs(model, job, CLUSTER, Candidates.from_configs(configs), EFF)
    embed, head = costs.embedding.terms["tp"], costs.head.terms["tp"]
    assert embed[0] == head[0] == 0.0  # no TP, no collectives
    assert 0 < embed[1] < head[1]
    layer_tp = costs.kinds["dense"].comm["tp"][1]
    assert embed[1] == pytest.approx(layer_tp / 4, rel=1e-6)  # one of a layer's four


def test_allgather_context_parallelism_gathers_keys_and_values_and_scatters_their_grads():
    """Megatron --cp-comm-type allgather (and the executor's CP): an all-gather of the full
    keys and values and a reduce-scatter of their gradients per layer, never overlapped."""
    from sysplan.costmodels import collectives as coll

    model = resolve_model("8b")[0]
    config = ParallelConfig(tp=2, cp=4, pp=1, dp=1, micro_batch=1, global_batch=8,
                            sequence_parallel=True, recompute="none")
    prices = {}
    for comm in ("p2p", "allgather"):
        job, _ = make_train_job(model, seq_len=8192, global_batch=8, precision="bf16",
                                context_parallel_comm=comm)
        costs = model_costs(model, job, CLUSTER, Candidates.from_configs([config]), EFF)
        prices[comm] = float(costs.kinds["dense"].comm["cp"][0])
    # 8 KV heads of 128 dims, K and V, bf16, over TP 2: the whole sequence's bytes
    whole = 8192 * 2 * 8 * 128 * 2 / 2
    expected = (coll.all_gather_time(CLUSTER, whole, 4, 2, EFF)
                + coll.reduce_scatter_time(CLUSTER, whole, 4, 2, EFF))
    assert prices["allgather"] == pytest.approx(float(expected), rel=1e-6)
    assert prices["allgather"] != prices["p2p"]
