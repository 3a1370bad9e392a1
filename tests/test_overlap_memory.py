"""Issue 15: overlap is earned (last bucket, first gather, ring steps, slowed compute) and peak
memory names what the allocator holds (loss buffers, FSDP2 + PP gathered states)."""

import numpy as np
import pytest

from sysplan.costmodels import collectives as coll
from sysplan.costmodels.candidates import Candidates
from sysplan.costmodels.layer_cost import FUSED_LOSS_BYTES_PER_LOGIT, LOSS_BYTES_PER_LOGIT
from sysplan.costmodels.training import exposed_sharding_seconds, price_training
from sysplan.costmodels.types import ParallelConfig
from sysplan.hardware import load_cluster
from sysplan.models import resolve_model
from sysplan.models.counting import padded_vocab
from sysplan.workloads.training import TrainJob

H100 = load_cluster("dgx-h100")[0]
LLAMA8 = resolve_model("8b")[0]


def _price(model, job, **config):
    config.setdefault("global_batch", job.global_batch)
    return price_training(model, job, H100, Candidates.from_configs([ParallelConfig(**config)]))


def test_gradient_reduction_exposes_its_last_bucket_and_slows_what_it_hides_behind():
    job = TrainJob(seq_len=4096, global_batch=8)
    # 4 s of gradient reduction in 4 buckets behind a 100 s backward: 1 s (the last bucket)
    # is exposed, and the 3 s hidden cost the overlapped compute its SM share
    exposed = exposed_sharding_seconds(0.0, 4.0, 0.0, m=1.0, layers=4.0, compute_mb=300.0,
                                       fwd_mb=100.0, bwd_mb=200.0, overlap=1.0, job=job,
                                       per_mb_gathers=False)
    assert exposed == pytest.approx(1.0 + 3.0 * coll.COLLECTIVE_COMPUTE_SHARE)
    # without --overlap-grad-reduce all of it is exposed, and nothing is slowed
    off = job.model_copy(update={"overlap_grad_reduce": False})
    assert exposed_sharding_seconds(0.0, 4.0, 0.0, m=1.0, layers=4.0, compute_mb=300.0,
                                    fwd_mb=100.0, bwd_mb=200.0, overlap=1.0, job=off,
                                    per_mb_gathers=False) == pytest.approx(4.0)


def test_zero3_traffic_issued_in_line_is_all_exposed():
    """FSDP prefetches each micro-batch's gathers and reduces in backward's hooks, so all but
    the first layer's gather hides; a runtime that does neither (the reference executor:
    overlap_param_gather and overlap_grad_reduce off) waits for every one."""
    job = TrainJob(seq_len=4096, global_batch=8)
    common = {"m": 2.0, "layers": 4.0, "compute_mb": 300.0, "fwd_mb": 100.0, "bwd_mb": 200.0,
              "overlap": 1.0, "per_mb_gathers": True}
    hidden = exposed_sharding_seconds(8.0, 0.0, 0.0, job=job, **common)
    assert hidden == pytest.approx(2.0 * (2.0 + 6.0 * coll.COLLECTIVE_COMPUTE_SHARE))
    inline = job.model_copy(update={"overlap_grad_reduce": False, "overlap_param_gather": False})
    assert exposed_sharding_seconds(8.0, 0.0, 0.0, job=inline, **common) == pytest.approx(16.0)


def test_ring_cp32_on_8k_tokens_is_not_free():
    job = TrainJob(seq_len=8192, global_batch=32)
    priced = _price(LLAMA8, job, tp=1, cp=32, dp=1, micro_batch=1)
    per_layer_steps = 31 * 2  # forward and backward steps of every layer
    assert priced.time["cp_comm"][0] > 32 * per_layer_steps * 20e-6 * 0.99


def test_loss_holds_twelve_bytes_per_logit_on_the_last_stage():
    job = TrainJob(seq_len=8192, global_batch=8)
    priced = _price(LLAMA8, job, tp=2, dp=4, micro_batch=2, sequence_parallel=True, zero=1)
    vocab = padded_vocab(LLAMA8, np.array([2.0]))[0]
    assert priced.memory["logits"][0] == pytest.approx(LOSS_BYTES_PER_LOGIT * 2 * 8192 * vocab / 2)


def test_fused_loss_holds_the_bf16_logits_only_and_reads_them_less():
    job = TrainJob(seq_len=8192, global_batch=8)
    config = {"tp": 2, "dp": 4, "micro_batch": 2, "sequence_parallel": True, "zero": 1}
    plain = _price(LLAMA8, job, **config)
    fused = _price(LLAMA8, job.model_copy(update={"fused_loss": True}), **config)
    vocab = padded_vocab(LLAMA8, np.array([2.0]))[0]
    assert fused.memory["logits"][0] == pytest.approx(
        FUSED_LOSS_BYTES_PER_LOGIT * 2 * 8192 * vocab / 2)
    assert fused.time["lm_head"][0] < plain.time["lm_head"][0]
    # nothing else moves
    for term in ("activations", "weights", "gradients", "optimizer"):
        assert fused.memory[term][0] == pytest.approx(plain.memory[term][0])


def test_bf16_gradient_reduction_halves_gradient_bytes_and_dp_traffic():
    job = TrainJob(seq_len=4096, global_batch=64, overlap_grad_reduce=False)
    config = {"tp": 1, "dp": 8, "micro_batch": 1, "zero": 1}
    fp32 = _price(LLAMA8, job, **config)
    bf16 = _price(LLAMA8, job.model_copy(update={"grad_reduce_in_fp32": False}), **config)
    assert bf16.memory["gradients"][0] == pytest.approx(0.5 * fp32.memory["gradients"][0])
    assert bf16.memory["optimizer"][0] == pytest.approx(fp32.memory["optimizer"][0])
    # the reduce-scatter moves half the bytes; the parameter all-gather is unchanged
    assert bf16.time["dp_comm"][0] < fp32.time["dp_comm"][0]


def test_zero3_under_pipeline_keeps_parameters_gathered_and_gradients_unsharded():
    """FSDP2 + PP (torchtitan): no reshard after forward, fp32 gradients accumulated unsharded
    until the last micro-batch; only the optimizer stays sharded, and the traffic is paid once
    per step, not once per micro-batch."""
    job = TrainJob(seq_len=4096, global_batch=64)
    common = {"tp": 2, "pp": 4, "dp": 8, "micro_batch": 1, "sequence_parallel": True}
    z3, z1 = _price(LLAMA8, job, zero=3, **common), _price(LLAMA8, job, zero=1, **common)
    for term in ("weights", "gradients", "optimizer"):
        assert z3.memory[term][0] == pytest.approx(z1.memory[term][0])
    pp1 = _price(LLAMA8, job, zero=3, tp=2, pp=1, dp=32, micro_batch=1, sequence_parallel=True)
    assert pp1.memory["weights"][0] < z3.memory["weights"][0] / 2  # resharded after forward
    assert z3.time["dp_comm"][0] == pytest.approx(z1.time["dp_comm"][0], rel=0.5)


def test_torchtitan_op_checkpointing_keeps_every_second_matmul_output():
    """torchtitan's per-op selective checkpointing (its Llama 3 configs) keeps the layer input,
    wq, wv, w1 and w2 outputs, the SDPA output and its fp32 log-sum-exp: for Llama 3.1 8B
    2 x (4096 + 4096 + 1024 + 4096 + 14336 + 4096) + 4 x 32 bytes a token, less than half of
    what Megatron's selective recompute keeps, at the price of rerunning wk, wo and w3 (36.5 %
    of the layer's matmul FLOPs) and the element-wise ops."""
    from sysplan.costmodels.layers import layer_shapes
    from sysplan.costmodels.memory import op_checkpoint_bytes_per_token
    from sysplan.planners.runtimes import TORCHTITAN, job_for

    kept, share = op_checkpoint_bytes_per_token(LLAMA8, layer_shapes(LLAMA8, False),
                                                np.array([1.0]), np.array([0.0]), "bf16")
    assert kept[0] == 2 * (4096 + 4096 + 1024 + 4096 + 14336 + 4096) + 4 * 32
    assert share == pytest.approx((1024 + 4096 + 14336) / (4096 + 2 * 1024 + 4096 + 3 * 14336))
    job = TrainJob(seq_len=8192, global_batch=16)
    titan = job_for([TORCHTITAN], job)
    assert titan.selective_policy == "op" and job.selective_policy == "attention"
    config = {"tp": 1, "dp": 8, "micro_batch": 2, "zero": 3, "recompute": "selective"}
    op, megatron = _price(LLAMA8, titan, **config), _price(LLAMA8, job, **config)
    assert op.memory["activations"][0] < 0.5 * megatron.memory["activations"][0]
    # what it reruns: the unsaved matmuls' share of the GEMM time and every element-wise pass
    from sysplan.costmodels.efficiency import Efficiency
    from sysplan.costmodels.layer_cost import model_costs

    c = Candidates.from_configs([ParallelConfig(global_batch=16, **config)])
    eff = Efficiency.for_cluster(H100)
    layer, plain = (model_costs(LLAMA8, j, H100, c, eff).kinds["dense"] for j in (titan, job))
    assert layer.selective_s[0] == pytest.approx(share * layer.time.gemm_s[0]
                                                 + layer.time.elementwise_s[0])
    assert plain.selective_s[0] == pytest.approx(plain.time.attention_s[0])
