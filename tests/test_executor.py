"""The reference executor: every layout trains to the single-process losses, in fp32.

Each layout starts from the same weights and sees the same data as one process, so its
per-step global loss over 20 Adam steps must match the reference within 1e-4 relative;
gradients that are wrong (a missing reduction, a wrong mask) drift the trajectory after the
first step. All multi-process cases run in one spawn per world size (start-up dominates).
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from sysplan.core.errors import InputError
from sysplan.executor.layout import ExecLayout, RunCase, RunResult
from sysplan.executor.model import TinyConfig
from sysplan.executor.pipeline import plan_rounds, stage_actions
from sysplan.executor.runner import run_cases, run_layout, run_reference

STEPS = 20  # the single-process references: long enough for the loss to fall
CASE_STEPS = 10  # the parallel layouts, checked step by step against the references' first ones
BATCH = 8
TOLERANCE = 1e-4
DENSE = TinyConfig(layers=5)
MOE = TinyConfig(layers=3, moe_experts=4, moe_top_k=2)


def layout(**fields: object) -> ExecLayout:
    """A layout of the global batch used throughout."""
    return ExecLayout(global_batch=BATCH, **fields)


CASES = {
    "tp2": RunCase(tiny=DENSE, layout=layout(tp=2, micro_batch=8)),
    "tp2-pp2-1f1b": RunCase(tiny=DENSE, layout=layout(tp=2, pp=2, micro_batch=4,
                                                      stage_layers=(3, 2))),
    "dp2-zero1": RunCase(tiny=DENSE, layout=layout(dp=2, zero=1, micro_batch=2)),
    "dp2-tp2-zero1": RunCase(tiny=DENSE, layout=layout(dp=2, tp=2, zero=1, micro_batch=4)),
    "tp2-sp": RunCase(tiny=DENSE, layout=layout(tp=2, sequence_parallel=True, micro_batch=4)),
    "pp2-vpp2-interleaved-uneven": RunCase(tiny=DENSE, layout=layout(
        pp=2, vpp=2, schedule="interleaved", stage_layers=(2, 1, 1, 1), micro_batch=2)),
    "pp2-gpipe": RunCase(tiny=DENSE, layout=layout(pp=2, schedule="gpipe",
                                                   stage_layers=(2, 3), micro_batch=2)),
    "cp2": RunCase(tiny=DENSE, layout=layout(cp=2, micro_batch=4)),
    "dp2-zero2": RunCase(tiny=DENSE, layout=layout(dp=2, zero=2, micro_batch=2)),
    "dp2-zero3": RunCase(tiny=DENSE, layout=layout(dp=2, zero=3, micro_batch=2)),
    "tp2-full-recompute": RunCase(tiny=DENSE, layout=layout(tp=2, recompute="full",
                                                            micro_batch=8)),
    "pp2-recompute-first-layer": RunCase(tiny=DENSE, layout=layout(
        pp=2, recompute="full", recompute_layers=1, stage_layers=(3, 2), micro_batch=4)),
    "cp2-selective-recompute": RunCase(tiny=DENSE, layout=layout(
        cp=2, recompute="selective", micro_batch=8)),
    "moe-tp2": RunCase(tiny=MOE, layout=layout(tp=2, micro_batch=8)),
    "moe-dp2-zero1": RunCase(tiny=MOE, layout=layout(dp=2, zero=1, micro_batch=4)),
    "tp2-fault": RunCase(tiny=DENSE, layout=layout(tp=2, micro_batch=8),
                         faults=frozenset({"skip_tp_allreduce"})),
}


@pytest.fixture(scope="module")
def runs() -> dict[str, RunResult]:
    """Every case, run once for the module."""
    return dict(zip(CASES, run_cases(list(CASES.values()), CASE_STEPS, warmup=2), strict=True))


@pytest.fixture(scope="module")
def references() -> dict[TinyConfig, RunResult]:
    """The single-process run of each model."""
    return {tiny: run_reference(tiny, BATCH, STEPS, warmup=2) for tiny in (DENSE, MOE)}


def worst_gap(losses: tuple[float, ...], reference: tuple[float, ...]) -> float:
    """Largest relative loss difference over the layout's steps (a constant learning rate and
    the same batch per step: the reference's first steps are the same trajectory)."""
    assert len(losses) == CASE_STEPS and len(reference) == STEPS
    return max(abs(a - b) / abs(b) for a, b in zip(losses, reference[:CASE_STEPS], strict=True))


@pytest.mark.parametrize("name", [name for name in CASES if name != "tp2-fault"])
def test_layout_matches_single_process(name: str, runs: dict[str, RunResult],
                                       references: dict[TinyConfig, RunResult]) -> None:
    reference = references[CASES[name].tiny]
    assert worst_gap(runs[name].losses, reference.losses) < TOLERANCE


def test_reference_learns(references: dict[TinyConfig, RunResult]) -> None:
    """The losses move, so a wrong gradient changes the trajectory."""
    for result in references.values():
        assert result.losses[-1] < 0.8 * result.losses[0]


def test_dropped_tp_allreduce_is_caught(runs: dict[str, RunResult],
                                        references: dict[TinyConfig, RunResult]) -> None:
    assert worst_gap(runs["tp2"].losses, references[DENSE].losses) < TOLERANCE
    assert worst_gap(runs["tp2-fault"].losses, references[DENSE].losses) > 100 * TOLERANCE


def test_result_reports_times_memory_and_split(runs: dict[str, RunResult]) -> None:
    result = runs["tp2-pp2-1f1b"]
    assert (result.world_size, result.backend, len(result.ranks)) == (4, "gloo", 4)
    assert len(result.step_times_s) == CASE_STEPS and min(result.step_times_s) > 0
    assert result.min_step_s <= result.p10_step_s <= result.median_step_s
    assert result.median_step_s <= result.p90_step_s <= result.max_step_s
    assert result.tokens_per_s == pytest.approx(BATCH * DENSE.seq_len / result.median_step_s)
    assert len(result.peak_memory_bytes) == 4 and min(result.peak_memory_bytes) >= 0
    for stats in result.ranks:
        assert stats.comm_s["tp"] > 0 and stats.comm_s["cp"] == 0
        assert stats.pipeline_wait_s > 0 and stats.compute_s > 0
    assert all(stats.pipeline_wait_s == 0 for stats in runs["dp2-zero3"].ranks)
    assert all(stats.comm_s["dp"] > 0 for stats in runs["dp2-zero3"].ranks)


@pytest.mark.parametrize(("schedule", "pp", "vpp", "micro_batches"), [
    ("1f1b", 4, 1, 8), ("gpipe", 3, 1, 5), ("interleaved", 2, 2, 4), ("interleaved", 4, 3, 8),
])
def test_schedules_run_every_micro_batch_once(schedule: str, pp: int, vpp: int,
                                              micro_batches: int) -> None:
    for stage in range(pp):
        actions = stage_actions(schedule, pp, vpp, micro_batches, stage)
        chunks = range(stage, pp * vpp, pp)  # Megatron: local chunk v is chunk v * pp + stage
        expected = {(kind, c, i) for kind in "FB" for c in chunks for i in range(micro_batches)}
        assert len(actions) == len(expected) and set(actions) == expected
        assert all(actions.index(("F", c, i)) < actions.index(("B", c, i))
                   for _, c, i in actions)
        if schedule == "1f1b":  # at most pp - stage micro-batches in flight (1F1B's point)
            in_flight = [sum(1 if kind == "F" else -1 for kind, _, _ in actions[:n + 1])
                         for n in range(len(actions))]
            assert max(in_flight) == min(pp - stage, micro_batches)
    assert plan_rounds(schedule, pp, vpp, micro_batches)


@pytest.mark.parametrize(("fields", "named"), [
    ({"tp": 3}, "tp 3"),
    ({"tp": 2, "dp": 8}, "16 processes"),
    ({"dp": 3}, "global_batch 8"),
    ({"pp": 2, "stage_layers": (5,)}, "stage_layers (5,)"),
    ({"pp": 2, "stage_layers": (2, 2)}, "sum to 4"),
    ({"pp": 2}, "layers 5"),
    ({"pp": 2, "vpp": 2, "stage_layers": (2, 1, 1, 1)}, "schedule '1f1b'"),
    ({"schedule": "zigzag"}, "zigzag"),
    ({"zero": 4}, "zero 4"),
    ({"recompute_layers": 1}, "recompute_layers 1"),
    ({"cp": 3}, "cp 3"),
    ({"vpp": 2, "schedule": "interleaved"}, "vpp 2 with pp 1"),
    ({"pp": 2, "vpp": 2, "schedule": "interleaved", "stage_layers": (2, 1, 1, 1),
      "micro_batch": 8}, "micro-batches 1"),
])
def test_bad_layouts_are_one_line_input_errors(fields: dict[str, object], named: str) -> None:
    with pytest.raises(InputError) as error:
        run_layout(DENSE, layout(**fields), steps=2, warmup=0, max_procs=8)
    assert named in str(error.value) and "accepted" in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("tiny", [TinyConfig(layers=1), TinyConfig(layers=1, kv_heads=4),
                                  TinyConfig(layers=1, hidden=96, heads=6, kv_heads=3)])
def test_eager_op_count_is_what_autograd_records(tiny: TinyConfig) -> None:
    """costmodels.compute.layer_ops charges the per-op overhead for as many ops as one
    executor block records: the autograd nodes of its output, less the input's."""
    import torch

    from sysplan.costmodels.compute import layer_ops
    from sysplan.costmodels.layers import layer_shapes
    from sysplan.executor import model as tiny_model
    from sysplan.executor.predict import tiny_model_spec
    from sysplan.workloads.training import TrainJob

    class Alone:  # one process: every communication op is the identity
        tp, tp_rank, cp, cp_rank, sequence_parallel = 1, 0, 1, 0, False

        def enter(self, x):
            return x

        def exit(self, x, skip_reduce=False):
            return x

        def sp_param(self, w):
            return w

        def cp_gather(self, x, dim):
            return x

    specs = tiny_model.param_specs(tiny, "layer0")
    params = {n: tiny_model.local_tensor(tiny, n, s, 1, 0).requires_grad_()
              for n, s in specs.items()}
    h = torch.randn(2, tiny.seq_len, tiny.hidden, requires_grad=True)
    out = tiny_model.block(tiny, params, h, Alone(), "none")
    seen, stack = set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and node not in seen:
            seen.add(node)
            stack.extend(n for n, _ in node.next_functions)
    model = tiny_model_spec(tiny)
    job = TrainJob(seq_len=tiny.seq_len, global_batch=2, kernel_fusion="eager")
    assert layer_ops(model, job, layer_shapes(model, False)) == len(seen) - 1


class _TwoRankStub:
    """DP group of two whose other rank holds the same shard: all-gather concatenates two
    copies, reduce-scatter sums the two halves' copies (as two equal ranks would); counts
    the gathers."""

    def __init__(self) -> None:
        self.gathers = 0

    def size(self, axis: str) -> int:
        return 2 if axis == "dp" else 1

    def rank(self, axis: str) -> int:
        return 0

    def all_gather(self, t, axis: str, dim: int):
        import torch

        self.gathers += 1
        return torch.cat([t, t], dim)

    def reduce_scatter(self, t, axis: str, dim: int):
        return 2 * t.chunk(2, dim)[0]


def test_zero3_frees_the_gathered_parameters_after_forward_and_gathers_them_again():
    """ZeRO-3 without a pipeline: 3 Psi traffic (Rajbhandari et al. 2020, section 7.2), one
    gather in forward and one in backward, with the gradient the kept copy gives."""
    import torch

    from sysplan.executor.model import block
    from sysplan.executor.parallel import TensorOps
    from sysplan.executor.zero import ParamUnit

    tiny = TinyConfig(layers=1)
    x = torch.randn(2, tiny.seq_len, tiny.hidden, generator=torch.Generator().manual_seed(0))
    grads = []
    for resharded in (False, True):
        comm = _TwoRankStub()
        unit = ParamUnit(tiny, "layer0", comm, 3, torch.device("cpu"))
        ops = TensorOps(comm, sequence_parallel=False)
        with unit.resharded() if resharded else torch.enable_grad():
            out = block(tiny, unit.params(), x, ops, "none")
        assert comm.gathers == 1
        out.square().sum().backward()
        assert comm.gathers == (2 if resharded else 1)
        assert unit._regathered is None  # dropped once the gradient was reduced
        grads.append(unit.data.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])
