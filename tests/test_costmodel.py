"""Cost model: hand-worked formulas, invariants (hypothesis) and vectorised == one-by-one."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sysplan.costmodels import collectives as coll
from sysplan.costmodels.candidates import Candidates
from sysplan.costmodels.estimate import estimate_config
from sysplan.costmodels.layers import layer_shapes
from sysplan.costmodels.memory import activation_bytes_per_token, in_flight_microbatches
from sysplan.costmodels.training import TIME_TERMS, price_training
from sysplan.costmodels.types import ParallelConfig
from sysplan.hardware import load_cluster
from sysplan.models import resolve_model
from sysplan.models.spec import ModelSpec
from sysplan.workloads.training import TrainJob

A100, _ = load_cluster("dgx-a100")
H100, _ = load_cluster("dgx-h100")
LLAMA70, _ = resolve_model("70b")
GPT175, _ = resolve_model("gpt3-175b")
JOB = TrainJob(seq_len=4096, global_batch=256)


def test_ring_all_reduce_inside_a_node_matches_the_formula():
    # 2 (n-1)/n S / BW + 2 (n-1) alpha on the NVLink tier (bandwidth x collective fraction)
    tier = H100.tiers[0]
    size = 1e9
    got = float(coll.all_reduce_time(H100, size, 8, 1))
    bw = tier.bandwidth_bytes_per_s * 0.78
    assert math.isclose(got, 2 * 7 / 8 * size / bw + 2 * 7 * tier.latency_s, rel_tol=1e-9)


def test_hierarchical_all_reduce_is_slower_across_nodes():
    inside = float(coll.all_reduce_time(H100, 1e9, 8, 1))
    across = float(coll.all_reduce_time(H100, 1e9, 16, 1))
    strided = float(coll.all_reduce_time(H100, 1e9, 8, 8))  # one rank per node
    assert inside < across < strided


def test_korthikanti_activation_memory_for_gpt_with_tp_and_no_sp():
    # Korthikanti et al. 2022, Table 2: s b h (10 + 24/t + 5 a s /(h t)) for f = 4h, MHA
    model = ModelSpec(name="gpt", num_layers=2, hidden_size=1024, num_heads=16, num_kv_heads=16,
                      head_dim=64, ffn_hidden=4096, vocab_size=50000, max_seq_len=2048,
                      gated_mlp=False, linear_bias=True, learned_positions=True,
                      tied_embeddings=True, norm="layernorm")
    job = TrainJob(seq_len=2048, global_batch=8, flash_attention=False)
    shapes = layer_shapes(model, False)
    t = np.array([4.0])
    got = activation_bytes_per_token(model, job, shapes, t, np.array([0]), np.array([1.0]),
                                     np.array([False]))
    h, a, s = 1024, 16, 2048
    assert math.isclose(float(got[0]), h * (10 + 24 / 4) + 5 * a * s / 4, rel_tol=1e-9)
    # with sequence parallel everything divides by t: s b h (34 + 5 a s / h) / t
    got_sp = activation_bytes_per_token(model, job, shapes, t, np.array([1]), np.array([1.0]),
                                        np.array([False]))
    assert math.isclose(float(got_sp[0]), (34 * h + 5 * a * s) / 4, rel_tol=1e-9)


def test_in_flight_microbatches_follow_the_schedules():
    assert in_flight_microbatches(np.array(8.0), np.array(1.0), np.array(64.0)) == 8
    assert in_flight_microbatches(np.array(8.0), np.array(1.0), np.array(3.0)) == 3
    # interleaved: p (1 + (p-1)/(p v))
    assert math.isclose(float(in_flight_microbatches(np.array(4.0), np.array(2.0), np.array(64.0))),
                        4 * (1 + 3 / 8))


def test_bubble_is_p_minus_1_over_v_stage_times():
    base = {"tp": 8, "dp": 1, "micro_batch": 1, "global_batch": 64, "recompute": "full"}
    one = estimate_config(GPT175, JOB, A100, ParallelConfig(pp=8, **base))
    two = estimate_config(GPT175, JOB, A100, ParallelConfig(pp=8, vpp=2, **base))
    assert math.isclose(two.breakdown["pp_bubble"] * 2, one.breakdown["pp_bubble"], rel_tol=1e-9)


def test_more_recompute_trades_time_for_memory():
    cfg = {"tp": 8, "pp": 4, "dp": 4, "micro_batch": 1, "global_batch": 256, "sequence_parallel": True}
    none = estimate_config(LLAMA70, JOB, H100, ParallelConfig(recompute="none", **cfg))
    full = estimate_config(LLAMA70, JOB, H100, ParallelConfig(recompute="full", **cfg))
    assert full.step_time_s > none.step_time_s
    assert full.memory.activations_bytes < none.memory.activations_bytes / 5
    assert full.hfu > full.mfu and math.isclose(none.hfu, none.mfu)


def test_zero_stages_shrink_model_state_memory():
    cfg = {"tp": 8, "pp": 1, "dp": 16, "micro_batch": 1, "global_batch": 256, "sequence_parallel": True,
               "recompute": "full"}
    states = []
    for zero in range(4):
        m = estimate_config(LLAMA70, JOB, H100, ParallelConfig(zero=zero, **cfg)).memory
        states.append(m.weights_bytes + m.gradients_bytes + m.optimizer_bytes)
    assert states[0] > states[1] > states[2] > states[3]
    # ZeRO-0, bf16 mixed precision: 2 + 4 + 12 = 18 bytes per local parameter (dist_optimizer.md)
    m0 = estimate_config(LLAMA70, JOB, H100, ParallelConfig(zero=0, **cfg)).memory
    assert math.isclose(m0.optimizer_bytes / m0.weights_bytes, 6.0)


configs = st.builds(
    dict, tp=st.sampled_from([1, 2, 4, 8]), pp=st.sampled_from([1, 2, 4, 5]),
    dp=st.sampled_from([1, 2, 4]), cp=st.sampled_from([1, 2]), zero=st.integers(0, 3),
    mb=st.sampled_from([1, 2]), rc=st.sampled_from(["none", "selective", "full"]),
    sp=st.booleans(),
)


@settings(max_examples=40, deadline=None)
@given(configs)
def test_breakdown_sums_to_step_time_and_memory_to_total(k):
    sp = k["sp"] and k["tp"] > 1
    config = ParallelConfig(tp=k["tp"], pp=k["pp"], dp=k["dp"], cp=k["cp"], zero=k["zero"] if k["dp"] * k["cp"] > 1 else 0,
                            micro_batch=k["mb"], global_batch=8 * k["dp"] * k["mb"],
                            recompute=k["rc"], sequence_parallel=sp)
    est = estimate_config(LLAMA70, JOB, H100, config)
    assert set(est.breakdown) == set(TIME_TERMS)
    assert all(v >= 0 for v in est.breakdown.values())
    assert math.isclose(sum(est.breakdown.values()), est.step_time_s, rel_tol=1e-9)
    mem = est.memory
    parts = mem.weights_bytes + mem.gradients_bytes + mem.optimizer_bytes + mem.activations_bytes + mem.other_bytes
    assert math.isclose(parts, mem.total_bytes, rel_tol=1e-9)
    assert 0 < est.mfu < 1


def test_vectorised_pricing_equals_one_by_one():
    configs = [ParallelConfig(tp=t, pp=p, dp=64 // (t * p), micro_batch=1, global_batch=512,
                              recompute="full", sequence_parallel=t > 1)
               for t in (1, 2, 4, 8) for p in (1, 2, 4)]
    batch = price_training(LLAMA70, JOB, H100, Candidates.from_configs(configs))
    for i, config in enumerate(configs):
        one = estimate_config(LLAMA70, JOB, H100, config)
        assert math.isclose(float(batch.step_time_s[i]), one.step_time_s, rel_tol=1e-12)
        assert math.isclose(float(batch.memory_bytes[i]), one.memory.total_bytes, rel_tol=1e-12)


def test_moe_model_prices_expert_all_to_all():
    mixtral, _ = resolve_model("mixtral-8x7b")
    job = TrainJob(seq_len=4096, global_batch=64)
    cfg = {"tp": 1, "pp": 1, "dp": 8, "micro_batch": 1, "global_batch": 64, "zero": 1, "recompute": "full"}
    no_ep = estimate_config(mixtral, job, H100, ParallelConfig(ep=1, **cfg))
    ep8 = estimate_config(mixtral, job, H100, ParallelConfig(ep=8, **cfg))
    assert no_ep.breakdown["ep_comm"] == 0 and ep8.breakdown["ep_comm"] > 0
    assert ep8.memory.weights_bytes < no_ep.memory.weights_bytes / 3


def test_recomputing_some_layers_sits_between_none_and_full():
    cfg = {"tp": 8, "pp": 4, "dp": 4, "micro_batch": 1, "global_batch": 256, "sequence_parallel": True}
    none = estimate_config(LLAMA70, JOB, H100, ParallelConfig(recompute="none", **cfg))
    half = estimate_config(LLAMA70, JOB, H100,
                           ParallelConfig(recompute="full", recompute_layers=10, **cfg))
    full = estimate_config(LLAMA70, JOB, H100, ParallelConfig(recompute="full", **cfg))
    assert none.step_time_s < half.step_time_s < full.step_time_s
    assert none.memory.activations_bytes > half.memory.activations_bytes > full.memory.activations_bytes
    # 10 of the stage's 20 layers: half of full recompute's extra forward work
    assert math.isclose(half.breakdown["recompute"], full.breakdown["recompute"] / 2, rel_tol=1e-9)


def test_small_heads_run_attention_at_the_published_head_dim_64_rate():
    from sysplan.costmodels.efficiency import Efficiency, head_dim_rate

    # FlashAttention-3 Figs. 5-6 (cuDNN, 4k): forward 408 / 609, backward 417 / 499
    assert head_dim_rate(64.0, 4096.0, backward=False) == pytest.approx(408 / 609)
    assert head_dim_rate(64.0, 4096.0, backward=True) == pytest.approx(417 / 499)
    assert head_dim_rate(128.0, 4096.0, backward=False) == 1.0
    assert head_dim_rate(192.0, 4096.0, backward=True) == 1.0  # no published ratio above 128
    middle = head_dim_rate(96.0, 4096.0, backward=False)
    assert 408 / 609 < middle < 1.0
    cluster, _ = load_cluster("dgx-b200")
    eff = Efficiency.default(cluster)
    f128, b128 = eff.attention_seconds(1e12, 64.0, 4096.0, "cudnn", head_dim=128.0)
    f64, b64 = eff.attention_seconds(1e12, 64.0, 4096.0, "cudnn", head_dim=64.0)
    assert f64 / f128 == pytest.approx(609 / 408) and b64 / b128 == pytest.approx(499 / 417)
