"""The eager element-wise chain: what the profile times is what the cost model counts, and
the rates it derives price the measured rows back."""

from __future__ import annotations

import numpy as np
import pytest

from sysplan.costmodels.eager import chain_elements, chain_ops, eager_rates

DIMS = (128, 8, 4, 16, 512)  # hidden, heads, kv_heads, head_dim, ffn


def _row(tokens: int, op_f: float, op_b: float, rate: float) -> tuple:
    """A row a node with these rates would measure (4-byte elements, host-bound)."""
    moved = 4.0 * tokens * sum(chain_elements(*DIMS))
    ops = chain_ops()
    # the backward moves twice the forward's bytes (costmodels/compute.py charges 2x)
    return (tokens, *DIMS, ops * op_f + moved / rate, ops * op_b + 2 * moved / rate)


def test_rates_recover_the_node_that_produced_the_rows() -> None:
    rows = [_row(1, 10e-6, 12e-6, 20e9), _row(128, 10e-6, 12e-6, 12e9),
            _row(512, 10e-6, 12e-6, 16e9)]
    rates = eager_rates(rows, 4.0, host_bound=True)
    # the one-token row's passes are a few kilobytes: its time is the ops' host cost
    assert rates.op_forward_s == pytest.approx(10e-6, rel=1e-2)
    assert rates.op_backward_s == pytest.approx(12e-6, rel=1e-2)
    assert rates.tokens == (128.0, 512.0)
    assert rates.bandwidth([128, 512]) == pytest.approx([12e9, 16e9], rel=1e-2)
    # between the sizes in log2(tokens); held at the ends, never extrapolated
    assert rates.bandwidth([256])[0] == pytest.approx(14e9, rel=1e-2)
    assert rates.bandwidth([8, 1 << 20]) == pytest.approx(rates.bandwidth([128, 512]))


def test_a_gpu_does_not_subtract_the_host_cost() -> None:
    rows = [(1, *DIMS, 1e-4, 1e-4), (4096, *DIMS, 1e-3, 2e-3)]
    moved = 3 * 2.0 * 4096 * sum(chain_elements(*DIMS))
    assert eager_rates(rows, 2.0, host_bound=False).bandwidth([4096])[0] == \
        pytest.approx(moved / 3e-3)


def test_unusable_rows_give_no_rates() -> None:
    assert eager_rates([(512, *DIMS, 1e-3, 2e-3)], 4.0, True) is None
    # all the time is the ops' host cost: no bandwidth can be read off it
    assert eager_rates([(1, *DIMS, 1e-3, 1e-3), (2, *DIMS, 1e-3, 1e-3)], 4.0, True) is None


def test_slowed_rates_charge_more_host_time_per_op() -> None:
    rates = eager_rates([_row(1, 10e-6, 12e-6, 20e9), _row(512, 10e-6, 12e-6, 16e9)], 4.0,
                        True)
    half = rates.slowed(0.5)
    assert (half.op_forward_s, half.op_backward_s) == pytest.approx(
        (2 * rates.op_forward_s, 2 * rates.op_backward_s))
    assert np.array_equal(half.bandwidth([512]), rates.bandwidth([512]))


@pytest.mark.parametrize("dims", [DIMS, (96, 6, 3, 16, 256), (64, 4, 4, 16, 128)])
def test_the_timed_chain_records_the_ops_the_cost_model_charges(dims) -> None:
    """profiles/eager.element_chain records chain_ops autograd nodes, counting the two
    norm weights' gradient accumulation and none for the inputs standing in for GEMM and
    attention outputs."""
    torch = pytest.importorskip("torch")
    from sysplan.profiles.eager import element_chain

    forward, gradients = element_chain(16, *dims, device="cpu", dtype=torch.float32)
    outputs = forward()
    assert [o.shape for o in outputs] == [g.shape for g in gradients]
    seen, stack = set(), [o.grad_fn for o in outputs]
    while stack:
        node = stack.pop()
        if node is not None and node not in seen:
            seen.add(node)
            stack.extend(n for n, _ in node.next_functions)
    weights = {id(node) for node in seen if type(node).__name__ == "AccumulateGrad"
               and node.variable.dim() == 1}
    inputs = sum(type(node).__name__ == "AccumulateGrad" for node in seen) - len(weights)
    assert len(weights) == 2
    assert len(seen) - inputs == chain_ops()


def test_eager_jobs_are_priced_at_the_chain_rates_and_fused_ones_are_not(tmp_path) -> None:
    """A CPU profile with an eager table: an eager layer's element-wise work runs at the
    chain's bandwidth and its ops at the chain's host cost; a fused layer keeps the copy
    bandwidth and the one-element op's cost."""
    pytest.importorskip("torch")  # the executor's decoder as a ModelSpec
    from sysplan.costmodels.compute import _elementwise_bytes, layer_forward, layer_ops
    from sysplan.costmodels.efficiency import Efficiency
    from sysplan.costmodels.layers import layer_shapes
    from sysplan.executor.model import TinyConfig
    from sysplan.executor.predict import tiny_model_spec
    from sysplan.hardware import load_cluster
    from sysplan.profiles.schema import (
        Device,
        EagerTable,
        GemmTable,
        MemoryTable,
        OpOverhead,
        Profile,
    )
    from sysplan.profiles.summary import local_cpu_cluster_yaml
    from sysplan.workloads.training import TrainJob

    rows = (_row(1, 10e-6, 12e-6, 20e9), _row(512, 10e-6, 12e-6, 8e9))
    profile = Profile(
        schema_version="1.1", name="cpu-test",
        device=Device(name="test CPU", kind="cpu", date="2026-12-07T00:00:00Z"),
        gemm=GemmTable(dtype="fp32", rows=((512, 512, 512, 1e-3),)),
        memory=MemoryTable(rows=(("copy", 2**27, 2**27 / 16e9),)),
        overhead=OpOverhead(forward_s=4e-6, backward_s=12e-6),
        eager=EagerTable(rows=rows))
    path = tmp_path / "local-cpu.yaml"
    path.write_text(local_cpu_cluster_yaml(profile, 2**34))
    cluster, _ = load_cluster(str(path))
    eff = Efficiency.from_profile(profile, cluster)
    tiny = TinyConfig(hidden=128, heads=8, kv_heads=4, ffn=512, seq_len=128)
    model, shapes = tiny_model_spec(tiny), layer_shapes(tiny_model_spec(tiny), False)
    one = np.ones(1)
    for fusion, rate, op_f in (("eager", eff.eager.bandwidth([512])[0], eff.eager.op_forward_s),
                               ("fused", eff.memory_bytes_per_s, 4e-6)):
        job = TrainJob(seq_len=128, global_batch=4, precision="fp32", kernel_fusion=fusion)
        time = layer_forward(model, job, eff, shapes, tokens=512 * one, tp=one, etp=one,
                             ep=one, sp=0 * one, cp=one, imbalance=1.0)
        moved = _elementwise_bytes(model, job, shapes, 512 * one, one, 0 * one)
        assert time.elementwise_s == pytest.approx(moved / rate)
        assert time.overhead_s == pytest.approx(layer_ops(model, job, shapes) * op_f)
    assert eff.eager.bandwidth([512])[0] == pytest.approx(8e9, rel=1e-2)
