"""A pipeline schedule laid out in time, for the timeline picture (no matplotlib here).

The cost model prices a schedule by a closed form (``costmodels.schedules``) and keeps no
per-micro-batch order, so the picture builds one with a small list scheduler:

* each rank runs its operations in the order of the schedule (below), each starting as soon
  as the rank is free and its inputs are there: the forward of virtual stage ``s`` after the
  forward of ``s - 1`` on its rank plus one point-to-point hop, the backward after its own
  forward and the backward of ``s + 1`` plus a hop, the weight-gradient pass (W) after its
  backward;
* orders: GPipe all forwards then all backwards; 1F1B ``p - r - 1`` warm-up forwards, then one
  forward one backward, then the remaining backwards (Narayanan et al. 2021, section 2.2.1);
  interleaved 1F1B Megatron's order, ``2 (p - r - 1) + (v - 1) p`` warm-up forwards, forwards
  in groups of ``p`` micro-batches per chunk (``costmodels.schedules.interleaved_trace``);
  ZB-H1 the 1F1B order with the backward split into B (input gradient) and W (weight gradient),
  each W run whenever the rank would otherwise wait (Qi et al. 2023, section 2.1: W fills the
  bubbles); DualPipe (our approximation of DeepSeek-AI 2024) two 1F1B pipelines fed from the
  two ends, rank ``r`` holding stage ``r`` of one and stage ``p - 1 - r`` of the other, each
  rank running whichever of its two next operations can start first, W as in ZB-H1.

Per-stage times come from the plan's step-time terms (``stage_times``): the plan document
keeps the slowest stage's terms and the bubble, not every stage's, so the stages' times are
split by their layer counts (the LM head on the last), matching the document's sum of stage
times; backward is twice forward plus the recompute, and W half the backward (Qi et al. 2023
take ``T_B = T_W``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: The schedules the timeline draws.
SCHEDULES = ("none", "gpipe", "1f1b", "interleaved-1f1b", "zb-h1", "dualpipe")
#: Micro-batches drawn at most (more only repeat the steady state); at least 2 p are drawn.
MAX_DRAWN = 16
#: Terms that run inside every micro-batch of a stage (the rest: bubble, p2p, DP, optimizer).
STAGE_TERMS = ("compute_gemm", "compute_attention", "compute_elementwise", "recompute",
               "lm_head", "tp_comm", "cp_comm", "ep_comm")
COMM_TERMS = ("tp_comm", "cp_comm", "ep_comm")


@dataclass(frozen=True)
class StageTimes:
    """Seconds per micro-batch of each pipeline rank (all of its chunks together)."""

    forward: tuple[float, ...]
    backward: tuple[float, ...]  # input and weight gradient together, with recompute
    weight: tuple[float, ...]  # the weight-gradient part of backward
    comm_share: float  # share of forward and backward that is exposed TP/CP/EP communication
    hop_s: float  # one point-to-point send between ranks
    tail_s: dict[str, float]  # after the last backward: exposed DP communication, optimizer


@dataclass(frozen=True)
class Op:
    """One operation of the timeline: rank, kind (F, B or W), micro-batch, chunk, times."""

    rank: int
    kind: str
    microbatch: int
    chunk: int
    start: float
    end: float
    comm_s: float = 0.0  # exposed communication at the end of this operation


def stage_times(breakdown: Mapping[str, float], stage_layers: Sequence[int], m: int,
                vpp: int) -> StageTimes:
    """Per-rank times from a plan's named step-time terms (see the module docstring)."""
    pp = max(len(stage_layers), 1)
    layers = list(stage_layers) or [1]
    slowest = sum(breakdown.get(k, 0.0) for k in STAGE_TERMS) / m
    # pp_bubble = (sum_i t_i - max_i t_i) / v (costmodels.training): the stages' sum
    total = slowest + vpp * breakdown.get("pp_bubble", 0.0) if pp > 1 else slowest
    head = breakdown.get("lm_head", 0.0) / m
    recompute_share = breakdown.get("recompute", 0.0) / m / max(slowest, 1e-30)
    per_layer = max(total - head, 0.0) / sum(layers)
    times = [per_layer * n + (head if s == pp - 1 else 0.0) for s, n in enumerate(layers)]
    forward = tuple(t * (1 - recompute_share) / 3 for t in times)
    backward = tuple(t - f for t, f in zip(times, forward, strict=True))
    comm = sum(breakdown.get(k, 0.0) for k in COMM_TERMS) / m / max(slowest, 1e-30)
    hops = 2 * m * vpp  # a forward and a backward send per micro-batch and chunk
    return StageTimes(
        forward=forward, backward=backward, weight=tuple(f for f in forward),
        comm_share=min(comm, 1.0), hop_s=breakdown.get("pp_p2p", 0.0) / hops if pp > 1 else 0.0,
        tail_s={"dp_comm": breakdown.get("dp_comm", 0.0),
                "optimizer": breakdown.get("optimizer", 0.0)})


def drawn_microbatches(m: int, pp: int, schedule: str) -> int:
    """Micro-batches the timeline draws: all up to MAX_DRAWN, else at least 2 p (a multiple
    of p for interleaved, as Megatron requires; even for DualPipe)."""
    if m <= MAX_DRAWN:
        shown = m
    else:
        shown = min(m, max(MAX_DRAWN, 2 * pp))
    if schedule == "interleaved-1f1b" and shown >= pp:
        shown -= shown % pp
    if schedule == "dualpipe":
        shown = max(2, shown - shown % 2)
    return shown


def _orders(schedule: str, p: int, m: int, v: int) -> list[list[list[tuple]]]:
    """Per rank, its queues of (kind, direction, micro-batch, virtual stage) in order."""
    ranks = []
    for r in range(p):
        if schedule == "interleaved-1f1b":
            ranks.append([_interleaved(p, m, v, r)])
        elif schedule == "dualpipe":
            half = m // 2
            ranks.append([_one_f_one_b(p, half, r, 0, r, 0),
                          _one_f_one_b(p, m - half, p - 1 - r, 1, p - 1 - r, half)])
        elif schedule == "gpipe":
            ranks.append([[("F", 0, i, r) for i in range(m)] + [("B", 0, i, r) for i in range(m)]])
        else:  # 1f1b, zb-h1, none
            ranks.append([_one_f_one_b(p, m, r, 0, r, 0)])
    return ranks


def _one_f_one_b(p: int, m: int, position: int, direction: int, stage: int,
                 first: int) -> list[tuple]:
    warmup = min(p - position - 1, m)
    order = [("F", direction, first + i, stage) for i in range(warmup)]
    for i in range(m - warmup):
        order += [("F", direction, first + warmup + i, stage), ("B", direction, first + i, stage)]
    order += [("B", direction, first + i, stage) for i in range(m - warmup, m)]
    return order


def _interleaved(p: int, m: int, v: int, r: int) -> list[tuple]:
    total = m * v
    warmup = min(2 * (p - r - 1) + (v - 1) * p, total)
    kinds = ["F"] * warmup + ["F", "B"] * (total - warmup) + ["B"] * warmup
    done = {"F": 0, "B": 0}
    order = []
    for kind in kinds:
        k = done[kind]
        group = (k // p) % v
        chunk = v - 1 - group if kind == "B" else group
        microbatch = (k // (p * v)) * p + k % p
        order.append((kind, 0, microbatch, chunk * p + r))
        done[kind] += 1
    return order


def simulate(schedule: str, times: StageTimes, m: int, vpp: int = 1) -> list[Op]:
    """Every operation of one step of ``schedule`` with ``m`` micro-batches, start to end."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule {schedule!r}: accepted {', '.join(SCHEDULES)}")
    p = len(times.forward)
    v = vpp if schedule == "interleaved-1f1b" else 1
    split = schedule in ("zb-h1", "dualpipe")
    stages = p * v
    queues = _orders(schedule, p, m, v)
    done: dict[tuple, float] = {}
    free = [0.0] * p
    pending_w: list[list[tuple]] = [[] for _ in range(p)]
    ops: list[Op] = []

    def rank_of(direction: int, stage: int) -> int:
        return p - 1 - stage if direction == 1 else stage % p

    def duration(kind: str, rank: int) -> float:
        f, b, w = times.forward[rank] / v, times.backward[rank] / v, times.weight[rank] / v
        return {"F": f, "B": b - w if split else b, "W": w}[kind]

    def ready(op: tuple) -> float | None:
        kind, direction, mb, stage = op
        rank = rank_of(direction, stage)
        deps = []
        if kind == "F" and stage > 0:
            deps.append((("F", direction, mb, stage - 1), rank_of(direction, stage - 1)))
        if kind == "B":
            deps.append((("F", direction, mb, stage), rank))
            if stage < stages - 1:
                deps.append((("B", direction, mb, stage + 1), rank_of(direction, stage + 1)))
        start = 0.0
        for dep, where in deps:
            if dep not in done:
                return None
            start = max(start, done[dep] + (times.hop_s if where != rank else 0.0))
        return start

    remaining = sum(len(q) for rank in queues for q in rank)
    while remaining:
        best = None
        for r in range(p):
            head = None
            for qi, queue in enumerate(queues[r]):
                at = ready(queue[0]) if queue else None
                if at is not None and (head is None or max(at, free[r]) < head[0]):
                    head = (max(at, free[r]), r, qi)
            if pending_w[r] and (head is None or head[0] > free[r] + 1e-12):
                head = (free[r], r, -1)  # W fills the wait (zero bubble)
            if head is not None and (best is None or head[0] < best[0]):
                best = head
        assert best is not None, "schedule order deadlocked"
        start, r, qi = best
        if qi < 0:
            _, direction, mb, stage = pending_w[r].pop(0)
            end = start + duration("W", r)
            ops.append(Op(r, "W", mb, direction, start, end))
            free[r] = end
            continue
        kind, direction, mb, stage = queues[r][qi].pop(0)
        remaining -= 1
        end = start + duration(kind, r)
        done[(kind, direction, mb, stage)] = end
        chunk = stage // p if schedule == "interleaved-1f1b" else direction
        ops.append(Op(r, kind, mb, chunk, start, end, (end - start) * times.comm_share))
        free[r] = end
        if split and kind == "B":
            pending_w[r].append(("W", direction, mb, stage))
    for r in range(p):
        for w_op in pending_w[r]:
            end = free[r] + duration("W", r)
            ops.append(Op(r, "W", w_op[2], w_op[1], free[r], end))
            free[r] = end
    return ops


def step_span(ops: Sequence[Op]) -> float:
    """Seconds from the first operation's start to the last one's end."""
    return max((op.end for op in ops), default=0.0) - min((op.start for op in ops), default=0.0)


def bubble_share(ops: Sequence[Op], ranks: int) -> float:
    """Share of ranks x span the ranks spend idle."""
    span = step_span(ops)
    busy = sum(op.end - op.start for op in ops)
    return 0.0 if span <= 0 else max(0.0, 1.0 - busy / (ranks * span))
