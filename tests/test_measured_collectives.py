"""A CPU profile's collectives priced from its measured table (gloo is not NCCL's ring):
log-log interpolation, the latency floor, linear extrapolation, unmeasured groups and ops,
and price_training on a local-cpu cluster; GPU profiles keep the ring formulas."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from sysplan.costmodels import collectives as coll
from sysplan.costmodels.candidates import Candidates
from sysplan.costmodels.efficiency import Efficiency
from sysplan.costmodels.measured_collectives import (
    SEND_RECV_FROM_ALL_REDUCE,
    MeasuredCollectives,
    ring_volume,
)
from sysplan.costmodels.training import price_training
from sysplan.costmodels.types import ParallelConfig
from sysplan.hardware import load_cluster
from sysplan.models import resolve_model
from sysplan.profiles.loader import bundled_for_gpu
from sysplan.profiles.schema import (
    SCHEMA_VERSION,
    Calibration,
    CollectiveTable,
    Device,
    GemmTable,
    MemoryTable,
    Profile,
)
from sysplan.profiles.summary import local_cpu_cluster_yaml
from sysplan.workloads.training import TrainJob

SIZES = (2**12, 2**17, 2**22)
#: op -> group -> seconds at SIZES (hand-written, not ring-shaped; no reduce_scatter: gloo)
TIMES = {
    "all_reduce": {2: (1e-4, 4e-4, 8e-3), 4: (2e-4, 8e-4, 1.6e-2)},
    "all_gather": {2: (5e-5, 2e-4, 3e-3)},
    "all_to_all": {2: (6e-5, 3e-4, 5e-3)},
    "send_recv": {2: (3e-5, 1e-4, 2e-3)},
}


def rows(times: dict) -> tuple:
    return tuple((op, "node", group, size, seconds)
                 for op, groups in times.items() for group, values in groups.items()
                 for size, seconds in zip(SIZES, values, strict=True))


def cpu_profile(times: dict | None = None, count: int = 2) -> Profile:
    return Profile(
        schema_version=SCHEMA_VERSION, name="cpu-test",
        device=Device(name="test cpu", kind="cpu", count=count, runtime="cpu",
                      date="2026-01-01T00:00:00Z"),
        gemm=GemmTable(dtype="fp32", rows=((512, 512, 512, 0.01), (1024, 1024, 1024, 0.05))),
        memory=MemoryTable(rows=(("copy", 2**26, 0.01),)),
        collectives=CollectiveTable(rows=rows(TIMES if times is None else times)))


def lookup(times: dict | None = None) -> MeasuredCollectives:
    table = MeasuredCollectives.from_table(cpu_profile(times).collectives)
    assert table is not None
    return table


def at(table: MeasuredCollectives, op: str, message_bytes, group) -> float:
    seconds, _ = table.seconds(op, message_bytes, group)
    return float(seconds)


@pytest.fixture(scope="module")
def local_cpu(tmp_path_factory: pytest.TempPathFactory):
    """The local-cpu cluster `sysplan profile` would write for the test profile."""
    profile = cpu_profile()
    path = Path(tmp_path_factory.mktemp("cluster")) / "local-cpu.yaml"
    path.write_text(local_cpu_cluster_yaml(profile, memory_bytes=16 * 2**30))
    cluster, _ = load_cluster(str(path))
    return profile, cluster


# --- the lookup ---------------------------------------------------------------------------------


@pytest.mark.parametrize("op", list(TIMES))
def test_measured_points_are_reproduced(op: str) -> None:
    table = lookup()
    for group, values in TIMES[op].items():
        for size, seconds in zip(SIZES, values, strict=True):
            assert at(table, op, size, group) == pytest.approx(seconds, rel=1e-12)
            assert not table.seconds(op, size, group)[1]


def test_between_points_it_is_linear_in_log_bytes_and_log_seconds() -> None:
    table = lookup()
    low, high = TIMES["all_reduce"][2][:2]
    middle = math.sqrt(SIZES[0] * SIZES[1])  # halfway in log bytes
    assert at(table, "all_reduce", middle, 2) == pytest.approx(math.sqrt(low * high), rel=1e-12)
    quarter = SIZES[1] * (SIZES[2] / SIZES[1]) ** 0.25
    low, high = TIMES["all_reduce"][2][1:]
    expected = math.exp(math.log(low) + 0.25 * (math.log(high) - math.log(low)))
    assert at(table, "all_reduce", quarter, 2) == pytest.approx(expected, rel=1e-12)


def test_below_the_smallest_message_is_its_latency() -> None:
    table = lookup()
    smallest = TIMES["all_reduce"][4][0]
    for size in (0.0, 1.0, 64.0, SIZES[0] - 1):
        assert at(table, "all_reduce", size, 4) == pytest.approx(smallest, rel=1e-12)
    assert table.seconds("all_reduce", 64.0, 4)[1]  # extrapolated


def test_above_the_largest_message_time_is_linear_in_bytes() -> None:
    table = lookup()
    largest = TIMES["send_recv"][2][-1]
    for times in (2.0, 10.0, 1000.0):
        got = at(table, "send_recv", times * SIZES[-1], 2)
        assert got == pytest.approx(times * largest, rel=1e-12)
    assert table.seconds("send_recv", 2.0 * SIZES[-1], 2)[1]


def test_an_unmeasured_group_scales_the_nearest_by_the_ring_volume() -> None:
    table = lookup()
    # all_reduce measured at 2 and 4: 8 takes 4's time x (2 * 7/8) / (2 * 3/4)
    measured = TIMES["all_reduce"][4][1]
    assert at(table, "all_reduce", SIZES[1], 8) == pytest.approx(measured * 1.75 / 1.5)
    # 3 is nearer 4 than 2 in log2 of the size: 4's time x (2 * 2/3) / (2 * 3/4)
    assert at(table, "all_reduce", SIZES[1], 3) == pytest.approx(measured * (4 / 3) / 1.5)
    assert table.seconds("all_reduce", SIZES[1], 8)[1]
    # all_gather measured at 2 only: (n-1)/n, so 4 is 2's time x (3/4) / (1/2)
    gather = TIMES["all_gather"][2][2]
    assert at(table, "all_gather", SIZES[2], 4) == pytest.approx(gather * 1.5)


def test_a_tie_between_measured_groups_takes_the_larger() -> None:
    table = lookup({"all_reduce": {2: (1e-4, 2e-4, 3e-4), 8: (5e-4, 6e-4, 7e-4)}})
    # 4 is one doubling from 2 and from 8: 8's time x (2 * 3/4) / (2 * 7/8)
    assert at(table, "all_reduce", SIZES[0], 4) == pytest.approx(5e-4 * 1.5 / 1.75)


def test_ring_volume_factors() -> None:
    assert ring_volume("all_reduce", 4) == pytest.approx(1.5)
    for op in ("all_gather", "reduce_scatter", "all_to_all"):
        assert ring_volume(op, 4) == pytest.approx(0.75)
    assert ring_volume("send_recv", 8) == 1.0


def test_unmeasured_ops_fall_back() -> None:
    table = lookup()  # no reduce_scatter
    for size in (100.0, SIZES[1], 3e6, 1e8):
        for group in (2, 4, 8):
            assert at(table, "reduce_scatter", size, group) == at(table, "all_reduce", size, group)
            assert table.seconds("reduce_scatter", size, group)[1]
    only_reduce = lookup({"all_reduce": TIMES["all_reduce"]})
    with_gather = lookup({"all_reduce": TIMES["all_reduce"], "all_gather": TIMES["all_gather"]})
    for size in (100.0, SIZES[1], 3e6, 1e8):
        for group in (2, 4):
            reduce = at(only_reduce, "all_reduce", size, group)
            assert at(only_reduce, "all_gather", size, group) == reduce
            assert at(only_reduce, "all_to_all", size, group) == reduce
            assert at(with_gather, "all_to_all", size, group) == \
                at(with_gather, "all_gather", size, group)
        send = at(only_reduce, "send_recv", size, 2)
        assert send == pytest.approx(SEND_RECV_FROM_ALL_REDUCE * at(only_reduce, "all_reduce",
                                                                    size, 2))
    assert SEND_RECV_FROM_ALL_REDUCE == 0.5


def test_a_table_without_all_reduce_is_not_a_lookup() -> None:
    profile = cpu_profile({"send_recv": TIMES["send_recv"]})
    assert MeasuredCollectives.from_table(profile.collectives) is None


def test_a_group_of_one_costs_nothing() -> None:
    table = lookup()
    for op in ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv"):
        seconds, _ = table.seconds(op, np.array([1e3, 1e6, 1e9]), 1)
        assert np.all(seconds == 0.0)


def test_vectorised_equals_one_by_one() -> None:
    table = lookup()
    sizes = np.array([0.0, 100.0, 4096.0, 5e4, 2**17, 3e6, 2**22, 1e9])
    groups = np.array([1, 2, 3, 4, 8, 2, 16, 4])
    for op in ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv"):
        seconds, outside = table.seconds(op, sizes, groups)
        for index, (size, group) in enumerate(zip(sizes, groups, strict=True)):
            one, one_outside = table.seconds(op, size, group)
            assert seconds[index] == one and outside[index] == one_outside
        grid, _ = table.seconds(op, sizes[:, None], groups[None, :])
        assert grid.shape == (len(sizes), len(groups))


# --- Efficiency and the collective functions ----------------------------------------------------


def test_a_cpu_profile_fills_measured_collectives_and_tracking_keeps_it(local_cpu) -> None:
    profile, cluster = local_cpu
    eff = Efficiency.from_profile(profile, cluster)
    assert isinstance(eff.measured_collectives, MeasuredCollectives)
    assert eff.tracking().measured_collectives is eff.measured_collectives
    assert "communication" not in eff.uncalibrated
    bare = profile.model_copy(update={"collectives": None})
    assert Efficiency.from_profile(bare, cluster).measured_collectives is None


def test_a_gpu_profile_leaves_measured_collectives_none() -> None:
    cluster, _ = load_cluster("dgx-h100")
    profile = bundled_for_gpu(cluster.gpu.name)
    assert profile is not None and profile.device.kind == "gpu"
    assert Efficiency.from_profile(profile, cluster).measured_collectives is None
    # a GPU profile with a collectives table keeps the ring formulas at measured fractions
    with_table = profile.model_copy(update={"collectives": cpu_profile().collectives})
    eff = Efficiency.from_profile(with_table, cluster)
    assert eff.measured_collectives is None
    ring = coll.all_reduce_time(cluster, 2**17, 2, 1, eff)
    assert float(ring) != pytest.approx(TIMES["all_reduce"][2][1])
    assert Efficiency.default(cluster).measured_collectives is None


def test_the_collective_functions_return_the_measured_times(local_cpu) -> None:
    profile, cluster = local_cpu
    eff = Efficiency.from_profile(profile, cluster)
    table = eff.measured_collectives
    sizes = np.array([1e3, 2**17, 1e6, 1e8])
    for function, op in ((coll.all_reduce_time, "all_reduce"),
                         (coll.reduce_scatter_time, "reduce_scatter"),
                         (coll.all_gather_time, "all_gather"),
                         (coll.all_to_all_time, "all_to_all")):
        for stride in (1, 2):  # one node: where the members sit does not matter
            got = function(cluster, sizes, 2, stride, eff)
            np.testing.assert_array_equal(got, table.seconds(op, sizes, 2)[0])
    np.testing.assert_array_equal(coll.p2p_time(cluster, sizes, 1, eff),
                                  table.seconds("send_recv", sizes, 2)[0])
    # all_gather is no longer reduce_scatter's alias: the table tells them apart
    assert coll.all_gather_time(cluster, 2**17, 2, 1, eff) == pytest.approx(2e-4)
    assert coll.reduce_scatter_time(cluster, 2**17, 2, 1, eff) == pytest.approx(4e-4)
    # without the table the same cluster is priced by the ring formulas
    ring = coll.all_reduce_time(cluster, 2**17, 2, 1, Efficiency.default(cluster))
    assert float(ring) != pytest.approx(4e-4)


def test_the_results_broadcast_like_the_ring_formulas(local_cpu) -> None:
    profile, cluster = local_cpu
    eff = Efficiency.from_profile(profile, cluster)
    bare = Efficiency.default(cluster)
    sizes, groups, strides = np.array([1e3, 1e6]), np.array([[1], [2], [4]]), np.ones((3, 2))
    for function in (coll.all_reduce_time, coll.reduce_scatter_time, coll.all_gather_time,
                     coll.all_to_all_time):
        assert function(cluster, sizes, groups, strides, eff).shape == \
            function(cluster, sizes, groups, strides, bare).shape
    assert coll.p2p_time(cluster, 1e6, np.array([1, 2, 3]), eff).shape == (3,)


def test_extrapolation_is_tracked_and_calibration_scales_the_time(local_cpu) -> None:
    profile, cluster = local_cpu
    eff = Efficiency.from_profile(profile, cluster).tracking()
    coll.all_reduce_time(cluster, 2**17, 2, 1, eff)
    assert eff.seen == set()
    coll.all_reduce_time(cluster, 1e9, 2, 1, eff)
    assert eff.seen == {"communication"}
    calibrated = profile.model_copy(update={"calibration": Calibration(comm_scale_node=2.0)})
    slower = Efficiency.from_profile(calibrated, cluster)
    assert coll.all_reduce_time(cluster, 2**17, 2, 1, slower) == pytest.approx(4e-4 / 2.0)


# --- price_training on a local-cpu cluster ------------------------------------------------------


def test_price_training_uses_the_table_on_a_local_cpu_cluster(local_cpu) -> None:
    profile, cluster = local_cpu
    assert cluster.gpu.gpu_class == "cpu" and len(cluster.tiers) == 1
    model, _ = resolve_model("gpt2")
    job = TrainJob(seq_len=1024, global_batch=1, precision="fp32")
    eff = Efficiency.from_profile(profile, cluster)
    configs = [ParallelConfig(tp=2, micro_batch=1, global_batch=1),
               ParallelConfig(pp=2, micro_batch=1, global_batch=1),
               ParallelConfig(micro_batch=1, global_batch=1)]
    priced = price_training(model, job, cluster, Candidates.from_configs(configs), eff)
    activation_bytes = 1024 * model.hidden_size * 4  # one micro-batch of fp32 activations
    reduce = at(eff.measured_collectives, "all_reduce", activation_bytes, 2)
    # 2 all-reduces forward + 2 backward per layer, one micro-batch (layer_cost._layer_comm),
    # one each for the embedding and the LM head's input, and the loss's three per-token ones
    # (layer_cost.end_tp_seconds)
    loss = 3 * at(eff.measured_collectives, "all_reduce", 1024 * 4, 2)
    assert priced.time["tp_comm"][0] == pytest.approx((model.num_layers * 4 + 2) * reduce + loss,
                                                      rel=1e-12)
    assert reduce != pytest.approx(float(coll.all_reduce_time(
        cluster, activation_bytes, 2, 1, Efficiency.default(cluster))))
    # pp = 2, m = 1: 2 (m + p - 1) sends of the activations (training._p2p_seconds)
    send = at(eff.measured_collectives, "send_recv", activation_bytes, 2)
    assert priced.time["pp_p2p"][1] == pytest.approx(2 * 2 * send, rel=1e-12)
    assert priced.time["tp_comm"][2] == 0.0 and priced.time["pp_p2p"][2] == 0.0


def test_a_measured_dip_is_pooled_with_its_neighbours() -> None:
    """A collective never moves more bytes in less time: rows that dip (a shared CPU's slow
    phase under a smaller message) are pooled into their least-squares non-decreasing fit."""
    from sysplan.costmodels.measured_collectives import nondecreasing

    assert list(nondecreasing([2.0, 4.0, 0.5, 1.5, 6.0])) == pytest.approx(
        [2.0, 2.0, 2.0, 2.0, 6.0])
    assert list(nondecreasing([1.0, 2.0, 3.0])) == [1.0, 2.0, 3.0]
    table = CollectiveTable(rows=(("all_reduce", "node", 2, 4096, 3e-3),
                                  ("all_reduce", "node", 2, 262144, 1e-3),
                                  ("all_reduce", "node", 2, 4194304, 5e-3)))
    seconds, _ = MeasuredCollectives.from_table(table).seconds("all_reduce", 262144, 2)
    assert float(seconds) == pytest.approx(2e-3)
