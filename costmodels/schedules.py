"""Pipeline schedules: step time and activation memory, as pure functions of per-stage costs.

Notation (per micro-batch, seconds): ``f[i]`` forward of stage ``i``, ``b[i]`` its full backward
(input gradient + weight gradient, what 1F1B runs as one B), ``w[i]`` the weight-gradient part
of ``b[i]`` (zero-bubble schedules split backward into B = b - w and W = w, Qi et al. 2023,
"Zero Bubble Pipeline Parallelism", section 2). ``p`` stages, ``m`` micro-batches.

Times with non-uniform stages use the critical-path form of Narayanan et al. 2021
(section 2.2; used by Alpa, Aceso, Metis): ``T = sum_i t_i + (m - 1) max_i t_i`` with
``t_i = f_i + b_i``; it reduces to ``(m + p - 1) t`` for uniform stages. The other schedules
are written the same way, their bubble term generalised from the uniform formula of their
paper; where that generalisation is ours the docstring says so.

Memory is "in-flight micro-batches": how many micro-batches' stored activations a stage (or
each chunk of a rank) holds at its peak, a multiplier on one micro-batch's activations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ScheduleInfo:
    """What the stage planner needs to know about a schedule."""

    name: str
    chunks_per_rank: int  # model chunks one rank holds (0: the configuration's vpp)
    contiguous: bool  # one contiguous stage per rank: the partition DP is exact
    parameter_copies: int  # DualPipe keeps two copies of the parameters
    source: str


SCHEDULES: dict[str, ScheduleInfo] = {s.name: s for s in (
    ScheduleInfo("gpipe", 1, True, 1, "Huang et al. 2019 (GPipe); time as Narayanan et al. 2021"),
    ScheduleInfo("1f1b", 1, True, 1, "Narayanan et al. 2021, section 2.2.1 (PipeDream-Flush)"),
    ScheduleInfo("zb-h1", 1, True, 1, "Qi et al. 2023, Zero Bubble PP, section 2.1 (ZB-H1)"),
    ScheduleInfo("interleaved-1f1b", 0, False, 1, "Narayanan et al. 2021, section 2.2.2"),
    ScheduleInfo("zb-v", 2, False, 1, "Qi et al. 2023, Zero Bubble PP, section 6 (ZB-V)"),
    ScheduleInfo("dualpipe", 2, False, 2, "DeepSeek-AI 2024, DeepSeek-V3 report, Table 2"),
)}


def schedule_info(name: str) -> ScheduleInfo:
    """The schedule called ``name``; ValueError naming the accepted ones otherwise."""
    if name not in SCHEDULES:
        raise ValueError(f"schedule {name!r}: accepted {', '.join(SCHEDULES)}")
    return SCHEDULES[name]


def _arrays(*values) -> list[np.ndarray]:
    return [np.asarray(v, dtype=float) for v in values]


def step_time_1f1b(f: Sequence[float], b: Sequence[float], m: int) -> float:
    """1F1B and GPipe: ``sum_i (f_i + b_i) + (m - 1) max_i (f_i + b_i)``
    (Narayanan et al. 2021, section 2.2; bubble ``(p - 1)/m`` of ideal when uniform)."""
    f, b = _arrays(f, b)
    t = f + b
    return float(t.sum() + (m - 1) * t.max())


def step_time_zb_h1(f: Sequence[float], b: Sequence[float], w: Sequence[float], m: int) -> float:
    """ZB-H1: uniform bubble ``(p - 1)(T_F + T_B - T_W)`` with the paper's ``T_B = b - w``
    (Qi et al. 2023, section 2.1), i.e. ``(p - 1)(f + b - 2 w)``; DeepSeek-V3 Table 2 writes
    the same ``(PP - 1)(F + B - 2W)`` with full-backward B.

    Non-uniform stages (our generalisation): the W passes deferred into the bubbles are
    credited evenly, ``T = max(m max_i t_i, sum_i (t_i - 2 (p - 1)/p w_i) + (m - 1) max_i t_i)``;
    equal to the paper's formula for uniform stages, and sum-separable so the stage DP stays
    exact for it.
    """
    f, b, w = _arrays(f, b, w)
    t = f + b
    p = len(t)
    bubble_form = (t - 2.0 * (p - 1) / p * w).sum() + (m - 1) * t.max()
    return float(max(m * t.max(), bubble_form))


def step_time_interleaved(rank_time: Sequence[float], m: int, vpp: int) -> float:
    """Interleaved 1F1B, ``vpp`` chunks per rank: uniform ``(m + (p - 1)/v) t``
    (Narayanan et al. 2021, section 2.2.2: bubble ``(p - 1)/(v m)``).

    Non-uniform ranks (our generalisation): ``m max_r t_r + (sum_r t_r - max_r t_r)/v``,
    ``t_r`` the rank's forward + backward over all of its chunks; ``vpp = 1`` gives 1F1B.
    """
    (t,) = _arrays(rank_time)
    return float(m * t.max() + (t.sum() - t.max()) / vpp)


def step_time_zb_v(rank_time: Sequence[float], chunk_f, chunk_b, chunk_w, m: int) -> float:
    """ZB-V: two chunks per rank in V order; the paper reports zero bubble when
    ``T_F = T_B = T_W`` at 1F1B's peak memory (Qi et al. 2023, section 6).

    Approximation (ours): the chunk-level ZB-H2 residue ``(p - 1) max(0, f + (b - w) - 2 w)``
    of the slowest chunk is left as bubble on top of ``m max_r t_r``.
    """
    (t,) = _arrays(rank_time)
    f, b, w = _arrays(chunk_f, chunk_b, chunk_w)
    residue = max(0.0, float(np.max(f + b - 3.0 * w)))
    return float(m * t.max() + (len(t) - 1) * residue)


def step_time_dualpipe(stage_f, stage_b, stage_w, m: int) -> float:
    """DualPipe: bubble ``(PP/2 - 1)(F&B + B - 3W)`` (DeepSeek-V3 report, Table 2), F, B, W
    of one stage, B the full backward.

    Approximations (ours): ``F&B`` (a forward and a backward chunk overlapped) is priced
    ``F + B`` with no overlap credit, the slowest stage's F, B, W set the bubble, and rank
    ``r`` runs stage ``r`` for the m/2 micro-batches fed from one end and stage ``p - 1 - r``
    for the m/2 fed from the other: ``m/2 (t_r + t_{p-1-r})`` of work.
    """
    f, b, w = _arrays(stage_f, stage_b, stage_w)
    p = len(f)
    t = f + b
    work = 0.5 * m * (t + t[::-1])
    bubble = (p / 2.0 - 1.0) * max(0.0, float(np.max(t + b - 3.0 * w)))
    return float(work.max() + bubble)


def in_flight_1f1b(p: int, m: int, stage: int) -> float:
    """1F1B (and ZB-H1, which keeps 1F1B's peak): stage ``i`` holds ``min(p - i, m)``
    micro-batches (Narayanan et al. 2021, section 2.2.1; Qi et al. 2023, section 2.1)."""
    return float(min(p - stage, m))


def in_flight_gpipe(p: int, m: int, stage: int) -> float:
    """GPipe: every stage stores all ``m`` micro-batches before backward (Huang et al. 2019)."""
    return float(m)


def in_flight(schedule: str, p: int, m: int, stage: int) -> float:
    """In-flight micro-batches of stage ``stage`` for the contiguous schedules."""
    if schedule == "gpipe":
        return in_flight_gpipe(p, m, stage)
    assert schedule in ("1f1b", "zb-h1"), schedule
    return in_flight_1f1b(p, m, stage)


def interleaved_trace(p: int, m: int, vpp: int, rank: int) -> np.ndarray:
    """(steps, vpp): micro-batches each of ``rank``'s chunks holds after every step of
    Megatron's interleaved order: ``2 (p - r - 1) + (v - 1) p`` warm-up forwards, then one
    forward one backward, forwards in groups of ``p`` micro-batches per chunk (chunk 0, 1,
    ...), backwards in the mirrored chunk order (``megatron/core/pipeline_parallel/
    schedules.py``, microbatch_group_size_per_vp_stage = p).

    The peak of the row sums over ``v`` is ``p + (p - 1)/v`` rank-micro-batches on the first
    rank with ``m >= p`` (Korthikanti et al. 2022, section 4.2.3).
    """
    total = m * vpp
    warmup = min(2 * (p - rank - 1) + (vpp - 1) * p, total)
    order = [1] * warmup + [1, -1] * (total - warmup) + [-1] * warmup
    held, rows, done = np.zeros(vpp), [], [0, 0]
    for op in order:
        backward = op < 0
        group = (done[backward] // p) % vpp
        held[vpp - 1 - group if backward else group] += op
        done[backward] += 1
        rows.append(held.copy())
    return np.array(rows)


def zb_v_chunk_peaks(p: int, m: int) -> tuple[float, float]:
    """ZB-V peak memory is ``p M_B`` on every rank, 1F1B's first-stage peak (Qi et al. 2023,
    section 6), ``M_B`` a rank's activations (both chunks) per micro-batch; we charge each
    chunk ``min(p, m)`` of its own micro-batches (exact for equal chunks)."""
    return float(min(p, m)), float(min(p, m))


def dualpipe_stage_peaks(p: int, m: int) -> tuple[float, float]:
    """DualPipe holds ``PP + 1`` micro-batches of activations per rank (DeepSeek-V3 report,
    Table 2); we charge each of the rank's two stages ``(p + 1)/2`` (exact for equal stages)."""
    return float(min(p + 1, m) / 2.0), float(min(p + 1, m) / 2.0)
