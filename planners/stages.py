"""Pipeline stages: the per-layer problem, one priced assignment, and its plan.

The stage DP (``planners/pipeline_dp.py``) and the stage ILP (``planners/ilp_stages.py``) read
the same ``LayerProblem`` (built by ``layer_problem``, e.g. from ``stage_costs.layer_costs``),
price a stage with the same ``stage_cost`` and a whole assignment (layers per stage, recompute
per layer) with the same ``price_assignment``, and return the same ``StagePlan``: the two
planners cannot disagree on what an assignment costs.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sysplan.core.errors import InputError
from sysplan.core.types import Frozen
from sysplan.costmodels import schedules as sched
from sysplan.planners.ilp import IlpResult

Extra = tuple[float, float, float]  # (seconds, fixed bytes, activation bytes per micro-batch)


@dataclass(frozen=True)
class LayerProblem:
    """Per-layer costs, normalised: rows are recompute modes, columns layers."""

    fwd: np.ndarray  # (R, L) forward seconds per micro-batch
    bwd: np.ndarray  # (R, L) full backward incl. recompute
    wgrad: np.ndarray  # (L,) weight-gradient share of bwd (zero-bubble W)
    act: np.ndarray  # (R, L) stored bytes per micro-batch
    transient: np.ndarray  # (R, L) working set while one layer is recomputed
    state: np.ndarray  # (L,) weights + gradients + optimizer bytes
    modes: tuple[str, ...]  # recompute mode of each row, lightest first
    first: Extra  # the first stage also carries it (embedding)
    last: Extra  # the last stage also carries it (LM head, loss, MTP)
    fixed_bytes: float  # every stage: communicator buffers, ZeRO gather/reduce buffers

    @property
    def layers(self) -> int:
        return self.fwd.shape[1]

    def prefix(self):
        """Prefix sums over layers: forward and backward (R, L+1), wgrad (L+1), act (R, L+1),
        state (L+1)."""
        def cum(x):
            pad = np.zeros(x.shape[:-1] + (1,))
            return np.concatenate([pad, np.cumsum(x, axis=-1)], axis=-1)
        return (cum(self.fwd), cum(self.bwd), cum(self.wgrad), cum(self.act),
                cum(self.state))

    def range_max_transient(self) -> np.ndarray:
        """(R, L+1, L+1): the largest transient of layers a..b-1 (0 when empty)."""
        r, n = self.transient.shape
        out = np.zeros((r, n + 1, n + 1))
        for a in range(n):
            out[:, a, a + 1:] = np.maximum.accumulate(self.transient[:, a:], axis=1)
        return out

    def stage_extra(self, pp: int) -> np.ndarray:
        """(pp, 3): what each of ``pp`` stages carries beyond its layers (``Extra``)."""
        extra = np.zeros((pp, 3))
        extra[0] += self.first
        extra[-1] += self.last
        return extra


def _extra(name: str, value: Sequence[float]) -> Extra:
    items = tuple(float(x) for x in value)
    if len(items) not in (2, 3):
        raise InputError(f"{name} {value}: must be (seconds, bytes[, act bytes])")
    return items if len(items) == 3 else (*items, 0.0)


def layer_problem(layer_fwd_s, layer_bwd_s, layer_act_bytes, layer_state_bytes, *,
                  first_extra: Sequence[float] = (0.0, 0.0),
                  last_extra: Sequence[float] = (0.0, 0.0),
                  recompute_options: Sequence[str] = ("none",), layer_wgrad_s=None,
                  layer_transient_bytes=None, fixed_bytes: float = 0.0) -> LayerProblem:
    """The ``LayerProblem`` of per-layer arrays, each shape (L,) or (R, L) with one row per
    name in ``recompute_options`` (``LayerCosts.arrays()`` gives them, less ``fixed_bytes``).

    ``first_extra`` / ``last_extra``: (seconds, bytes[, activation bytes per micro-batch]) the
    first / last stage also carries. ``layer_wgrad_s``: weight-gradient part of backward (ZB
    schedules; none by default). ``layer_transient_bytes``: working set while a layer is
    recomputed (none by default). ``fixed_bytes``: on every stage. InputError for a shape that
    does not match the layers of ``layer_state_bytes`` and the modes.
    """
    modes = tuple(recompute_options)
    state = np.asarray(layer_state_bytes, dtype=float)
    shape = (len(modes), state.shape[0])

    def as_rows(name: str, value) -> np.ndarray:
        value = np.asarray(value, dtype=float)
        if value.shape not in (shape, shape[1:]):
            raise InputError(f"{name}: shape {value.shape}, expected {shape[1:]} or {shape}")
        return np.broadcast_to(value, shape).copy()

    wgrad = np.zeros(shape[1]) if layer_wgrad_s is None else np.asarray(layer_wgrad_s, float)
    if wgrad.shape != shape[1:]:
        raise InputError(f"layer_wgrad_s: shape {wgrad.shape}, expected {shape[1:]}")
    transient = as_rows("layer_transient_bytes",
                        np.zeros(shape[1]) if layer_transient_bytes is None
                        else layer_transient_bytes)
    return LayerProblem(as_rows("layer_fwd_s", layer_fwd_s), as_rows("layer_bwd_s", layer_bwd_s),
                        wgrad, as_rows("layer_act_bytes", layer_act_bytes), transient, state,
                        modes, _extra("first_extra", first_extra),
                        _extra("last_extra", last_extra), float(fixed_bytes))


def stage_cost(prob: LayerProblem, stage: int, pp: int, m: int, schedule: str, time_s,
               act_bytes, state_bytes, peak_bytes):
    """(seconds per micro-batch, peak bytes) of stage ``stage`` of ``pp`` for a contiguous
    schedule, from sums over its layers: forward + backward ``time_s``, stored ``act_bytes``
    per micro-batch, ``state_bytes``, and ``peak_bytes`` the largest transient of its layers.

    Elementwise: the DP passes tables over every (mode, first layer, end layer), the ILP linear
    expressions, ``price_assignment`` one stage's numbers.
    """
    extra = prob.stage_extra(pp)[stage]
    seconds = time_s + float(extra[0])
    # states + buffers + in-flight micro-batches x stored activations + one recomputed layer's
    # working set (Korthikanti et al. 2022, Table 2; in-flight: costmodels/schedules.py)
    memory = (state_bytes + prob.fixed_bytes + float(extra[1])
              + sched.in_flight(schedule, pp, m, stage) * (act_bytes + float(extra[2]))
              + peak_bytes)
    return seconds, memory


class StagePlan(Frozen):
    """Layers per pipeline stage and recompute per layer, with the pipeline time and per-stage
    memory they give; what the stage DP and the stage ILP return."""

    stage_layers: tuple[int, ...]  # per stage (rank for interleaved, ZB-V) as in ParallelConfig
    layer_recompute: tuple[str, ...]  # recompute mode of every layer, in layer order
    pipeline_time_s: float  # the schedule's time for m micro-batches (compute only)
    stage_time_s: tuple[float, ...]  # forward + backward per micro-batch, per stage (rank)
    stage_memory_bytes: tuple[float, ...]  # peak bytes per stage (rank), fixed bytes included
    exact: bool  # provably optimal for the stated objective
    note: str  # method, and what was approximated
    chunk_layers: tuple[int, ...] = ()  # per model chunk in schedule order (vpp, V, DualPipe)
    ilp: IlpResult | None = None  # the solve, for plans the stage ILP found

    @property
    def stage_recompute(self) -> tuple[str, ...]:
        """One recompute mode per stage (rank), as ``ParallelConfig.stage_recompute`` takes
        it; ValueError when a stage mixes modes (the ILP picks modes per layer)."""
        bounds = np.cumsum([0, *(self.chunk_layers or self.stage_layers)])
        chunks = [set(self.layer_recompute[a:b]) for a, b in itertools.pairwise(bounds)]
        if any(len(modes) > 1 for modes in chunks):
            raise ValueError(f"a stage mixes recompute modes: {self.layer_recompute}")
        # rank r's first chunk is chunk r in every chunked schedule (interleaved, ZB-V,
        # DualPipe), and a rank's chunks share its mode
        return tuple(modes.pop() for modes in chunks[:len(self.stage_layers)])


def price_assignment(prob: LayerProblem, stage_layers: Sequence[int], layer_modes,
                     m: int, schedule: str = "1f1b", *, exact: bool = False,
                     note: str = "given split") -> StagePlan:
    """Price one assignment for a contiguous schedule (GPipe, 1F1B, ZB-H1): ``stage_layers``
    layers per stage, ``layer_modes`` a row of ``prob.modes`` per layer. Memory is reported,
    not checked."""
    modes = np.asarray(layer_modes, dtype=int)
    assert len(modes) == sum(stage_layers) == prob.layers and min(stage_layers) >= 1, (
        stage_layers, len(modes), prob.layers)
    starts = np.cumsum([0, *stage_layers])[:-1]
    columns = np.arange(prob.layers)
    time = np.add.reduceat((prob.fwd + prob.bwd)[modes, columns], starts)
    act = np.add.reduceat(prob.act[modes, columns], starts)
    peak = np.maximum.reduceat(prob.transient[modes, columns], starts)
    state, wgrad = np.add.reduceat(prob.state, starts), np.add.reduceat(prob.wgrad, starts)
    pp = len(stage_layers)
    stage_t, memory = zip(*(stage_cost(prob, i, pp, m, schedule, time[i], act[i], state[i],
                                       peak[i]) for i in range(pp)))
    backward = np.zeros(pp)  # forward + backward enter as one time per stage
    # 1F1B / GPipe: Narayanan et al. 2021, 2.2; ZB-H1: Qi et al. 2023, 2.1 (costmodels/schedules)
    pipeline = (sched.step_time_zb_h1(stage_t, backward, wgrad, m) if schedule == "zb-h1"
                else sched.step_time_1f1b(stage_t, backward, m))
    return StagePlan(
        stage_layers=tuple(int(n) for n in stage_layers),
        layer_recompute=tuple(prob.modes[r] for r in modes), pipeline_time_s=pipeline,
        stage_time_s=tuple(float(t) for t in stage_t),
        stage_memory_bytes=tuple(float(b) for b in memory), exact=exact, note=note)
