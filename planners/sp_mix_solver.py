"""The MILP / LP part of the sequence-parallel mix planner (``planners/sp_mix.py``).

FlexSP's bucketed model solved with PuLP's CBC: integer (time-limited, warm-started from the
best heuristic, true status read from ``sol_status``) or relaxed and rounded, then improved by
a move/swap local search. PuLP is imported inside the functions that use it.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sysplan.planners.sp_mix import (
    MILP_MAX_VARIABLES,
    SequenceCosts,
    _Assignment,
    _layout,
    _pack,
    _usable,
)


@dataclass(frozen=True)
class _Buckets:
    """Sequences grouped for the MILP; a bucket's cost is its slowest member's."""

    members: tuple[np.ndarray, ...]  # sequence indices, slowest first
    time_s: np.ndarray  # (K, D) max over members
    fits: np.ndarray  # (K, D) identical for all members
    exact: bool  # every member has the bucket's costs (no rounding)


def _bucket(costs: SequenceCosts, max_buckets: int) -> _Buckets:
    """Exact buckets (identical cost rows) when there are few, else log-spaced buckets of
    each sequence's GPU-seconds inside each memory-feasibility class (FlexSP buckets by
    length and rounds up to the bucket's longest; planners notes 1.2 c)."""
    degree = np.array(costs.degrees, dtype=float)
    fits = costs.fits
    area = np.where(fits, costs.time_s * degree, np.inf).min(axis=1)
    rows = np.column_stack([fits, np.where(fits, costs.time_s, -1.0)])
    keys = np.unique(rows, axis=0, return_inverse=True)[1].ravel()
    exact = keys.max() + 1 <= max_buckets
    edges = max_buckets
    while not exact:
        scaled = np.log(area / area.min()) / max(np.log(area.max() / area.min()), 1e-12)
        level = np.minimum((scaled * edges).astype(int), edges - 1)
        classes = np.unique(fits, axis=0, return_inverse=True)[1].ravel()
        keys = np.unique(classes * edges + level, return_inverse=True)[1].ravel()
        if keys.max() + 1 <= max_buckets or edges == 1:
            break
        edges -= 1
    members = []
    for k in range(keys.max() + 1):
        index = np.flatnonzero(keys == k)
        members.append(index[np.lexsort((index, -area[index]))])
    time_s = np.array([np.where(fits[m], costs.time_s[m], 0.0).max(axis=0) for m in members])
    return _Buckets(tuple(members), time_s, np.array([fits[m[0]] for m in members]), bool(exact))


@dataclass(frozen=True)
class _Solved:
    assignment: _Assignment
    method: str
    status: str
    bound: float  # lower bound valid for the exact problem (0 when buckets round)
    buckets: int


def _slot_degrees(costs: SequenceCosts, b: _Buckets, slots: int) -> list[int]:
    """Candidate groups: per usable degree d, min(slots / d, sequences that fit at d)."""
    sizes = np.array([m.size for m in b.members])
    out: list[int] = []
    for j, d in enumerate(costs.degrees):
        if d <= slots:
            out += [d] * min(slots // d, int(sizes[b.fits[:, j]].sum()))
    return out


def solve(costs: SequenceCosts, slots: int, warm: _Assignment, method: str, limit_s: float,
           max_buckets: int, threads: int, lower: float) -> _Solved:
    """LP relaxation rounded and improved; then (milp, or auto when small enough) the
    bucketed MILP with CBC, warm-started from the best assignment so far."""
    import pulp

    deadline = time.perf_counter() + limit_s
    b = _bucket(costs, max_buckets)
    slot_deg = _slot_degrees(costs, b, slots)
    pairs = sum(int(b.fits[:, costs.degrees.index(d)].sum()) for d in slot_deg)
    if method == "auto":
        method = "milp" if pairs <= MILP_MAX_VARIABLES else "lp"
    counts, lp_status, objective, _ = _run_cbc(pulp, costs, b, slot_deg, slots, warm, lower,
                                               False, limit_s, threads)
    bound = objective if lp_status == 1 and b.exact else 0.0
    rounded = _round_lp(costs, b, slot_deg, counts, slots) if lp_status == 1 else None
    best = _improve(costs, _better(costs, warm, rounded))
    if method == "lp":
        return _Solved(best, "lp", "heuristic", bound, len(b.members))
    left = deadline - time.perf_counter()
    counts, status, objective, log = _run_cbc(pulp, costs, b, slot_deg, slots, best, lower,
                                              True, left, threads)
    proven = status == pulp.LpSolutionOptimal
    if b.exact:
        bound = max(bound, objective if proven else _cbc_bound(log))
    found = _from_milp(costs, b, slot_deg, counts) if status in (1, 2) else None
    found = _better(costs, best, _improve(costs, found) if found else None)
    return _Solved(found, "milp", "optimal" if proven and b.exact else "feasible", bound,
                   len(b.members))


def _better(costs: SequenceCosts, first: _Assignment, second: _Assignment | None) -> _Assignment:
    """The faster of two assignments (the first on ties)."""
    if second is not None and second.makespan(costs) < first.makespan(costs):
        return second
    return first


def _run_cbc(pulp, costs, b, slot_deg, slots, warm, lower, integer, limit_s, threads):
    """Build and solve; (counts per (bucket, slot), sol_status, objective, CBC log).

    PuLP's ``status`` says "Optimal" when a time-limited CBC stops with a merely feasible
    point; ``sol_status`` (1 optimal, 2 integer feasible) does not."""
    start, upper = _warm_values(costs, b, slot_deg, warm)
    prob, x, u = _model(pulp, costs, b, slot_deg, slots, upper, lower, integer)
    for (k, p), var in x.items():
        var.setInitialValue(start.get((k, p), 0))
    for p, var in enumerate(u):
        var.setInitialValue(int(any(start.get((k, p), 0) for k in range(len(b.members)))))
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "cbc.log"
        solver = pulp.PULP_CBC_CMD(msg=False, timeLimit=max(0.1, limit_s), warmStart=integer,
                                   threads=threads, logPath=str(log),
                                   options=["randomSeed 20240521", "randomCbcSeed 20240521"])
        prob.solve(solver)
        text = log.read_text(errors="replace") if log.exists() else ""
    counts = {key: round(var.value() or 0.0, 6) for key, var in x.items()}
    return counts, prob.sol_status, float(prob.objective.value() or 0.0), text


def _improve(costs: SequenceCosts, assignment: _Assignment, rounds: int = 2000) -> _Assignment:
    """Local search on the slowest group: the best single move, else the best swap, that
    lowers the larger of the two groups' new loads below the current maximum."""
    column = [costs.degrees.index(d) for d in assignment.degrees]
    times = np.where(costs.fits[:, column], costs.time_s[:, column], np.inf)
    group_of = assignment.group_of.copy()
    rows = np.arange(group_of.size)
    loads = np.bincount(group_of, weights=times[rows, group_of], minlength=len(column))
    for _ in range(rounds):
        g = int(np.argmax(loads))
        mine = np.flatnonzero(group_of == g)
        own = times[mine, g]
        moved = np.maximum((loads[g] - own)[:, None], loads[None, :] + times[mine])
        moved[:, g] = np.inf
        other = np.flatnonzero(group_of != g)
        h = group_of[other]
        swap = np.maximum(loads[g] - own[:, None] + times[other, g][None, :],
                          loads[h][None, :] - times[other, h][None, :] + times[mine][:, h])
        if moved.size and moved.min() < loads[g] * (1 - 1e-12) and moved.min() <= swap.min(
                initial=np.inf):
            i, target = np.unravel_index(int(np.argmin(moved)), moved.shape)
            s = mine[i]
        elif swap.size and swap.min() < loads[g] * (1 - 1e-12):
            i, j = np.unravel_index(int(np.argmin(swap)), swap.shape)
            s, r, target = mine[i], other[j], h[j]
            group_of[r] = g
            loads[g] += times[r, g]
            loads[target] -= times[r, target]
        else:
            break
        loads[g] -= times[s, g]
        loads[target] += times[s, target]
        group_of[s] = target
    return _Assignment(assignment.degrees, group_of)


def _cbc_bound(log: str) -> float:
    """CBC's best bound from its final report ("Lower bound: ..."), 0 if absent."""
    import re

    found = re.findall(r"Lower bound:\s*([-+0-9.eE]+)", log)
    return float(found[-1]) if found else 0.0


def _model(pulp, costs, b: _Buckets, slot_deg, slots, upper, lower, integer):
    """min M s.t. every bucket placed, slot loads <= M, x only in used slots that fit,
    sum of used slots' degrees <= slots; slots of one degree used in order."""
    cat = "Integer" if integer else "Continuous"
    prob = pulp.LpProblem("sp_mix", pulp.LpMinimize)
    makespan = pulp.LpVariable("M", lowBound=lower, upBound=upper)
    u = [pulp.LpVariable(f"u{p}", 0, 1, cat) for p in range(len(slot_deg))]
    x = {}
    for k, m in enumerate(b.members):
        for p, d in enumerate(slot_deg):
            if b.fits[k, costs.degrees.index(d)]:
                x[k, p] = pulp.LpVariable(f"x{k}_{p}", 0, m.size, cat)
    prob += makespan
    for k, m in enumerate(b.members):
        prob += pulp.lpSum(x[k, p] for p in range(len(slot_deg)) if (k, p) in x) == m.size
    for p, d in enumerate(slot_deg):
        column = costs.degrees.index(d)
        mine = [(k, var) for (k, q), var in x.items() if q == p]
        load = pulp.lpSum(float(b.time_s[k, column]) * var for k, var in mine)
        prob += load <= makespan
        prob += load <= upper * u[p]
        for k, var in mine:
            prob += var <= b.members[k].size * u[p]
        if p and slot_deg[p - 1] == d:
            prob += u[p - 1] >= u[p]
    prob += pulp.lpSum(d * u[p] for p, d in enumerate(slot_deg)) <= slots
    return prob, x, u


def _warm_values(costs, b: _Buckets, slot_deg, warm: _Assignment):
    """Bucket counts per slot of the warm assignment, and its bucketed makespan."""
    bucket_of = np.empty(costs.lengths.size, dtype=int)
    for k, m in enumerate(b.members):
        bucket_of[m] = k
    loads = warm.loads(costs)
    used = [g for g in np.argsort(-loads, kind="stable") if (warm.group_of == g).any()]
    start: dict[tuple[int, int], int] = {}
    upper = 0.0
    for g in used:
        d = warm.degrees[g]
        p = next(q for q, e in enumerate(slot_deg) if e == d and
                 not any(key[1] == q for key in start))
        column = costs.degrees.index(d)
        load = 0.0
        for s in np.flatnonzero(warm.group_of == g):
            start[bucket_of[s], p] = start.get((bucket_of[s], p), 0) + 1
            load += b.time_s[bucket_of[s], column]
        upper = max(upper, load)
    return start, upper * (1 + 1e-9)


def _from_milp(costs, b: _Buckets, slot_deg, counts) -> _Assignment | None:
    """Sequences into the MILP's slots (slowest members first), then a re-pack of the same
    groups longest first; the better of the two."""
    used = sorted({p for (_, p), c in counts.items() if c > 0.5})
    group_of = np.zeros(costs.lengths.size, dtype=int)
    for k, m in enumerate(b.members):
        queue = list(m)
        for g, p in enumerate(used):
            for _ in range(round(counts.get((k, p), 0))):
                group_of[queue.pop(0)] = g
        assert not queue, "MILP left sequences unplaced"
    layout = tuple(slot_deg[p] for p in used)
    direct = _Assignment(layout, group_of)
    repacked = _pack(costs, layout)
    if repacked and repacked.makespan(costs) < direct.makespan(costs):
        return repacked
    return direct


def _round_lp(costs, b: _Buckets, slot_deg, counts, slots) -> _Assignment | None:
    """LP rounding: each bucket's members split between degrees as the LP splits it
    (largest remainder, slowest members to the largest degree), GPUs split between
    degrees by the LP's GPU-seconds, then packed; also a free re-pack of that layout."""
    share = np.zeros((len(b.members), len(costs.degrees)))
    for (k, p), c in counts.items():
        share[k, costs.degrees.index(slot_deg[p])] += c
    preferred = np.zeros(costs.lengths.size, dtype=int)
    work: dict[int, float] = {}
    for k, m in enumerate(b.members):
        whole = np.floor(share[k] + 1e-9).astype(int)
        order = np.argsort(-(share[k] - whole), kind="stable")
        whole[order[: m.size - whole.sum()]] += 1
        columns = np.repeat(np.arange(len(costs.degrees))[::-1], whole[::-1])
        preferred[m] = columns[: m.size]
        for j in np.unique(columns):
            d = costs.degrees[j]
            work[d] = work.get(d, 0.0) + d * float(b.time_s[k, j]) * int((columns == j).sum())
    layout = _layout(work, slots, _usable(costs, slots))
    allowed = np.array(costs.degrees)[preferred][:, None] == np.array(layout)[None, :]
    found = [a for a in (_pack(costs, layout, allowed), _pack(costs, layout)) if a]
    return min(found, key=lambda a: a.makespan(costs)) if found else None
