"""Pipeline stages by dynamic programming: layers per stage and recompute per stage.

``optimal_stages`` splits an ordered layer sequence (dense and MoE layers of different cost,
the embedding as an extra on the first stage, LM head, loss and MTP on the last) into ``pp``
contiguous stages and picks each stage's recompute mode, minimising the schedule's step time
subject to every stage's memory (states + in-flight micro-batches x activations) fitting.

Exact for GPipe, 1F1B and ZB-H1 (``costmodels/schedules.py`` objectives): the bottleneck
threshold ``T`` runs over the candidate stage times in increasing order (Alpa's outer loop,
Zheng et al. 2022, section 5.2; planners.md 2.3), and for each ``T`` a DP over (stage, layer
prefix) minimises the sum of stage costs with every stage time <= T; the scan stops once
``(m - 1) T + min cost`` cannot beat the best. Stage index is a DP dimension because the
in-flight count depends on it (AdaPipe, Sun et al. 2024; planners.md 2.5).

Interleaved 1F1B, ZB-V and DualPipe put non-adjacent chunks on a rank: a steepest-descent
search over per-rank layer counts, with each rank's memory summed over its chunks and checked
exactly, returns ``exact=False`` and says so in ``note``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sysplan.core.errors import NoPlanFits
from sysplan.costmodels import schedules as sched
from sysplan.costmodels.layer_cost import RECOMPUTE_MODES, balanced_stage_layers
from sysplan.planners.stages import (
    LayerProblem,
    StagePlan,
    layer_problem,
    price_assignment,
    stage_cost,
)

__all__ = ["RECOMPUTE_MODES", "evaluate_ranks", "evaluate_stages", "optimal_stages"]


def optimal_stages(layer_fwd_s, layer_bwd_s, layer_act_bytes, layer_state_bytes, pp: int,
                   m: int, schedule: str = "1f1b", memory_limit_bytes: float = math.inf, *,
                   first_extra: Sequence[float] = (0.0, 0.0),
                   last_extra: Sequence[float] = (0.0, 0.0),
                   recompute_options: Sequence[str] = ("none",), vpp: int = 1,
                   layer_wgrad_s=None, layer_transient_bytes=None,
                   fixed_bytes: float = 0.0) -> StagePlan:
    """Best split of ``L`` layers into ``pp`` stages with a recompute mode per stage.

    Per-layer arrays are shape (L,) or (R, L), one row per name in ``recompute_options``
    (forward seconds, full-backward seconds incl. recompute, stored activation bytes per
    micro-batch). ``first_extra`` / ``last_extra``: (seconds, bytes[, activation bytes per
    micro-batch]) the first / last stage also carries (embedding; LM head, loss, MTP).
    ``layer_wgrad_s``: weight-gradient part of backward (ZB schedules); ``fixed_bytes``: on
    every rank (``stages.layer_problem``). Raises NoPlanFits when no split fits
    ``memory_limit_bytes``; ValueError for an unknown schedule.
    """
    info = sched.schedule_info(schedule)
    prob = layer_problem(layer_fwd_s, layer_bwd_s, layer_act_bytes, layer_state_bytes,
                         first_extra=first_extra, last_extra=last_extra,
                         recompute_options=recompute_options, layer_wgrad_s=layer_wgrad_s,
                         layer_transient_bytes=layer_transient_bytes, fixed_bytes=fixed_bytes)
    units = pp if info.contiguous else _ranks_or_stages(info, pp, vpp)
    if prob.layers < units * (vpp if schedule == "interleaved-1f1b" else info.chunks_per_rank):
        raise NoPlanFits(f"{prob.layers} layers cannot fill {pp} pipeline stages of the "
                         f"{schedule} schedule (every chunk needs a layer)")
    if info.contiguous:
        return _exact(prob, pp, m, schedule, memory_limit_bytes)
    return _heuristic(prob, pp, m, schedule, vpp, memory_limit_bytes)


def _ranks_or_stages(info: sched.ScheduleInfo, pp: int, vpp: int) -> int:
    if info.name == "interleaved-1f1b" and vpp < 2:
        raise ValueError("interleaved-1f1b needs vpp >= 2")
    if info.name == "dualpipe" and pp % 2:
        raise ValueError(f"dualpipe needs an even pp, got {pp}")
    return pp


# --- exact DP for contiguous schedules -------------------------------------------------------

def _stage_tables(prob: LayerProblem, pp: int, m: int, schedule: str, limit: float):
    """(time, cost, memory) of stage i over layers a..b-1 in mode r: (pp, R, L+1, L+1), each
    priced by ``stages.stage_cost``."""
    fwd_cum, bwd_cum, w_cum, act_cum, state_cum = prob.prefix()
    time_cum = fwd_cum + bwd_cum
    span = lambda c: c[..., None, :] - c[..., :, None]  # [.., a, b] = c[b] - c[a]
    time_ab, w_ab, act_ab, state_ab = span(time_cum), span(w_cum), span(act_cum), span(state_cum)
    peak = prob.range_max_transient()
    n = prob.layers
    a_idx, b_idx = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    times, costs, mems = [], [], []
    for i in range(pp):
        # stage i needs >= 1 layer and must leave one for every other stage
        valid = (a_idx < b_idx) & (a_idx >= i) & (n - b_idx >= pp - 1 - i)
        valid &= (a_idx == 0) if i == 0 else True
        valid &= (b_idx == n) if i == pp - 1 else True
        t, mem = stage_cost(prob, i, pp, m, schedule, time_ab, act_ab, state_ab, peak)
        ok = valid & (mem <= limit)
        cost = t - 2.0 * (pp - 1) / pp * w_ab if schedule == "zb-h1" else t
        times.append(np.where(ok, t, np.inf))
        costs.append(np.where(ok, cost, np.inf))
        mems.append(np.where(valid, mem, np.inf))
    return np.array(times), np.array(costs), np.array(mems)


def _dp(times, costs, threshold: float, want_path: bool = False):
    """min sum of stage costs with every stage time <= threshold; (value, path or None)."""
    pp = times.shape[0]
    allowed = np.where(times <= threshold, costs, np.inf)
    mode = allowed.argmin(axis=1)  # (pp, L+1, L+1)
    best = np.take_along_axis(allowed, mode[:, None], axis=1)[:, 0]
    g = np.full(times.shape[-1], np.inf)
    g[0] = 0.0
    spread = np.zeros_like(g)  # tie-breaker: sum of squared stage costs (the most even split)
    back, columns = [], np.arange(len(g))
    with np.errstate(invalid="ignore"):
        for i in range(pp):
            total = g[:, None] + best[i]
            low = total.min(axis=0)
            ties = total <= low + 1e-12 * np.abs(low)
            pick = np.where(ties, spread[:, None] + best[i] ** 2, np.inf).argmin(axis=0)
            back.append(pick)
            g, spread = total[pick, columns], (spread[:, None] + best[i] ** 2)[pick, columns]
    value = float(g[-1])
    if not want_path or not np.isfinite(value):
        return value, None
    cuts, b = [], times.shape[-1] - 1
    for i in reversed(range(pp)):
        a = int(back[i][b])
        cuts.append((a, b, int(mode[i, a, b])))
        b = a
    return value, cuts[::-1]


def _objective(schedule: str, m: int, threshold: float, cost: float) -> float:
    value = (m - 1) * threshold + cost
    return max(m * threshold, value) if schedule == "zb-h1" else value


def _exact(prob: LayerProblem, pp: int, m: int, schedule: str, limit: float) -> StagePlan:
    times, costs, mems = _stage_tables(prob, pp, m, schedule, limit)
    candidates = np.unique(times[np.isfinite(times)])
    if not len(candidates) or not np.isfinite(_dp(times, costs, candidates[-1])[0]):
        raise NoPlanFits(_no_fit_message(mems, pp, limit, prob.layers))
    lo, hi = 0, len(candidates) - 1  # smallest feasible bottleneck (binary search)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if np.isfinite(_dp(times, costs, candidates[mid])[0]) else (mid + 1, hi)
    floor = _dp(times, costs, candidates[-1])[0]  # min cost with no bottleneck limit
    best, best_t, evaluated = math.inf, candidates[lo], 0
    for threshold in candidates[lo:]:
        if _objective(schedule, m, threshold, floor) >= best:
            break
        value = _objective(schedule, m, threshold, _dp(times, costs, threshold)[0])
        evaluated += 1
        if value < best:
            best, best_t = value, threshold
    cuts = _dp(times, costs, best_t, want_path=True)[1]
    note = (f"exact: bottleneck threshold scan over {evaluated} of {len(candidates)} candidate "
            f"stage times, DP over {pp} stages x {prob.layers} layers")
    return price_assignment(prob, [b - a for a, b, _ in cuts],
                            [r for a, b, r in cuts for _ in range(a, b)], m, schedule,
                            exact=True, note=note)


def _no_fit_message(mems, pp: int, limit: float, layers: int) -> str:
    """NoPlanFits text with the least worst-stage memory any split reaches (min-max DP)."""
    best = mems.min(axis=1)
    g = np.full(best.shape[-1], np.inf)
    g[0] = 0.0
    for i in range(pp):
        g = np.maximum(g[:, None], best[i]).min(axis=0)
    gib = 2**30
    return (f"no split of {layers} layers into {pp} stages fits {limit / gib:.1f} GiB per GPU; "
            f"the best split needs {g[-1] / gib:.1f} GiB on its fullest stage")


def evaluate_stages(stage_layers: Sequence[int], stage_recompute: Sequence[str], m: int,
                    schedule: str = "1f1b", **layer_arrays) -> StagePlan:
    """Price a given contiguous split (e.g. the uniform baseline), one recompute mode per
    stage, with ``stages.price_assignment`` (what the DP's and the ILP's plans are priced by).

    ``layer_arrays``: the layer keyword arguments of ``optimal_stages`` (``layer_fwd_s`` ...
    ``fixed_bytes``; ``LayerCosts.arrays()`` gives them). Memory is reported, not checked.
    """
    prob = layer_problem(**layer_arrays)
    rows = [prob.modes.index(mode) for mode, n in zip(stage_recompute, stage_layers, strict=True)
            for _ in range(n)]
    return price_assignment(prob, stage_layers, rows, m, schedule)


def evaluate_ranks(rank_layers: Sequence[int], m: int, schedule: str, vpp: int = 2,
                   **layer_arrays) -> StagePlan:
    """Price given layers per rank for a schedule whose ranks hold non-adjacent chunks
    (interleaved 1F1B, ZB-V, DualPipe), each rank in the fastest of the given recompute
    options (one option: that mode everywhere). Memory is reported, not checked."""
    prob = layer_problem(**layer_arrays)
    lay = _Layout(schedule, len(rank_layers), vpp if schedule == "interleaved-1f1b" else 2, m)
    assert sum(rank_layers) == prob.layers, (rank_layers, prob.layers)
    return _layout_plan(prob, lay, list(rank_layers), math.inf, "given split", exact=False)


# --- heuristic for schedules whose ranks hold non-adjacent chunks ------------------------------

@dataclass(frozen=True)
class _Layout:
    """How per-unit layer counts become chunks, and which chunks each rank holds."""

    schedule: str
    pp: int
    vpp: int
    m: int

    @property
    def min_per_unit(self) -> int:
        return {"interleaved-1f1b": self.vpp, "zb-v": 2}.get(self.schedule, 1)

    def chunks(self, counts: Sequence[int]) -> list[int]:
        """Layers per chunk in layer order."""
        p = self.pp
        if self.schedule == "interleaved-1f1b":
            # the exporters' rule (exporters/pipeline.py chunk_layers): chunk v * pp + r
            split = [[n // self.vpp + (1 if v < n % self.vpp else 0) for v in range(self.vpp)]
                     for n in counts]
            return [split[r][v] for v in range(self.vpp) for r in range(p)]
        if self.schedule == "zb-v":  # chunk r and chunk 2p - 1 - r on rank r (V shape)
            return [counts[c] - counts[c] // 2 if c < p else counts[2 * p - 1 - c] // 2
                    for c in range(2 * p)]
        return list(counts)  # dualpipe: p stages

    def rank_chunks(self) -> list[list[int]]:
        p = self.pp
        if self.schedule == "interleaved-1f1b":
            return [[v * p + r for v in range(self.vpp)] for r in range(p)]
        if self.schedule == "zb-v":
            return [[r, 2 * p - 1 - r] for r in range(p)]
        return [[r, p - 1 - r] for r in range(p)]  # dualpipe: stage r and stage p - 1 - r

    def charge(self) -> list[np.ndarray]:
        """Per rank: rows of in-flight counts per chunk; the activation peak is the max row
        of counts @ chunk activations (interleaved: every step of the simulated order)."""
        p, m = self.pp, self.m
        if self.schedule == "interleaved-1f1b":
            return [np.unique(sched.interleaved_trace(p, m, self.vpp, r), axis=0) for r in range(p)]
        if self.schedule == "zb-v":
            return [np.array([sched.zb_v_chunk_peaks(p, m)])] * p
        return [np.array([sched.dualpipe_stage_peaks(p, m)])] * p


def _evaluate_layout(prob: LayerProblem, lay: _Layout, counts, cum, peaks, charge, limit):
    """(overflow bytes, step time, modes, rank times, rank memory, chunk counts)."""
    chunks = lay.chunks(counts)
    bounds = np.concatenate([[0], np.cumsum(chunks)])
    a, b = bounds[:-1], bounds[1:]
    fwd_cum, bwd_cum, w_cum, act_cum, state_cum = cum
    f = fwd_cum[:, b] - fwd_cum[:, a]  # (R, chunks)
    t = f + bwd_cum[:, b] - bwd_cum[:, a]
    w = w_cum[b] - w_cum[a]
    act = act_cum[:, b] - act_cum[:, a]
    state = state_cum[b] - state_cum[a]
    trans = peaks[:, a, b]
    for extra, c in ((prob.first, 0), (prob.last, len(chunks) - 1)):
        t[:, c] += extra[0]
        f[:, c] += extra[0] / 3.0  # backward = 2 x forward (Narayanan et al. 2021, 3.5)
        state[c] += extra[1]
        act[:, c] += extra[2]
    modes = np.zeros(len(chunks), dtype=int)
    overflow, rank_mem = 0.0, []
    for r, held in enumerate(lay.rank_chunks()):
        if lay.schedule == "dualpipe" and r > lay.pp - 1 - r:
            rank_mem.append(rank_mem[lay.pp - 1 - r])  # same two stages as its mirror rank
            continue
        options = _rank_options(prob, held, t, act, state, trans, charge[r], lay.schedule)
        fits = [o for o in options if o[1] <= limit]
        _, mem_r, choice = min(fits) if fits else min(options, key=lambda o: o[1])
        overflow += max(0.0, mem_r - limit)
        modes[held] = choice
        rank_mem.append(mem_r)
    idx = np.arange(len(chunks))
    fc, tc = f[modes, idx], t[modes, idx]  # chunk forward, forward + backward
    rank_t = np.array([tc[h].sum() for h in lay.rank_chunks()])
    if lay.schedule == "interleaved-1f1b":
        step = sched.step_time_interleaved(rank_t, lay.m, lay.vpp)
    elif lay.schedule == "zb-v":
        step = sched.step_time_zb_v(rank_t, fc, tc - fc, w, lay.m)
    else:
        step = sched.step_time_dualpipe(fc, tc - fc, w, lay.m)
    return overflow, step, modes, rank_t, rank_mem, chunks


def _rank_options(prob, held, t, act, state, trans, charge, schedule):
    """(time, memory, mode per held chunk) for every mode choice of one rank."""
    held = list(held)
    rows = range(len(prob.modes))
    # DualPipe's stages are shared by two ranks, so each keeps its own mode; elsewhere one
    # mode per rank (all its chunks)
    combos = ([(i, j) for i in rows for j in rows] if schedule == "dualpipe"
              else [(i,) * len(held) for i in rows])
    out = []
    for combo in combos:
        choice = np.array(combo)
        acts = act[choice, held]
        mem = (prob.fixed_bytes + state[held].sum() + float((charge @ acts).max())
               + trans[choice, held].max())
        out.append((float(t[choice, held].sum()), float(mem), choice))
    return [(o[0], o[1], tuple(o[2])) for o in out]


def _heuristic(prob: LayerProblem, pp: int, m: int, schedule: str, vpp: int,
               limit: float) -> StagePlan:
    lay = _Layout(schedule, pp, vpp if schedule == "interleaved-1f1b" else 2, m)
    cum, peaks, charge = prob.prefix(), prob.range_max_transient(), lay.charge()
    evaluate = lambda c: _evaluate_layout(prob, lay, c, cum, peaks, charge, limit)
    counts = list(balanced_stage_layers(prob.layers, pp))
    current = evaluate(counts)
    moves = 0
    while True:
        rank_t, rank_mem = current[3], current[4]
        sources = {int(np.argmax(rank_t)), int(np.argmax(rank_mem))}
        best = None
        for s in sorted(sources):
            for d in range(pp):
                if d == s or counts[s] - 1 < lay.min_per_unit:
                    continue
                trial = list(counts)
                trial[s] -= 1
                trial[d] += 1
                result = evaluate(trial)
                if result[:2] < (best or current)[:2]:
                    best, best_counts = result, trial
        if best is None:
            break
        current, counts, moves = best, best_counts, moves + 1
    if current[0] > 0:
        raise NoPlanFits(f"no split of {prob.layers} layers for {schedule} on {pp} ranks fits "
                         f"{limit / 2**30:.1f} GiB per GPU (best found is "
                         f"{max(current[4]) / 2**30:.1f} GiB on its fullest rank)")
    unit = "stages (rank r holds stages r and p-1-r)" if schedule == "dualpipe" else "ranks"
    return _layout_plan(
        prob, lay, counts, limit, exact=False,
        note=(f"heuristic: {schedule} places non-adjacent chunks on a rank; steepest descent "
              f"over layers per {unit} from the balanced split ({moves} moves), recompute per "
              "rank, each rank's memory summed over its chunks and checked exactly"))


def _layout_plan(prob: LayerProblem, lay: _Layout, counts, limit: float, note: str,
                 exact: bool) -> StagePlan:
    """The StagePlan of per-rank ``counts`` under ``lay`` (modes as _evaluate_layout picks)."""
    _, step, modes, rank_t, rank_mem, chunks = _evaluate_layout(
        prob, lay, counts, prob.prefix(), prob.range_max_transient(), lay.charge(), limit)
    return StagePlan(
        stage_layers=tuple(int(n) for n in counts),
        layer_recompute=tuple(prob.modes[r] for r, n in zip(modes, chunks) for _ in range(n)),
        pipeline_time_s=float(step), stage_time_s=tuple(float(x) for x in rank_t),
        stage_memory_bytes=tuple(float(x) for x in rank_mem), exact=exact, note=note,
        chunk_layers=tuple(int(n) for n in chunks))
