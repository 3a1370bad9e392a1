"""Sequence-parallel mixes for variable-length batches (FlexSP-style MILP, LP, greedy).

A step's sequences run on a pool of N GPU slots (each slot one model-parallel replica: tp
GPUs). The planner splits the pool into groups of power-of-two context-parallel degree d
(d slots each; sum of degrees <= N), gives every sequence to one group, and minimises the
step time = the slowest group's time, a group's time being the sum of its sequences' times
(each sequence one micro-batch; attention never crosses documents, so a packed varlen batch
costs the same sum). A sequence may join a group of degree d only if its per-GPU memory
there fits the budget. Formulation: Wang et al., "FlexSP: Accelerating Large Language Model
Training via Flexible Sequence Parallelism" (ASPLOS'25, arXiv 2412.01523), section 4 and
PKU-DAIR/Hetu-Galvatron branch flexsp ``solve_flexSP_bucket_seqs`` (planners notes 1.2 b):
integer counts x[k,p] of length bucket k in group slot p, binary u[p] "slot used",
makespan M. Methods: "milp" (CBC, time limit, warm start from the best of greedy and
uniform), "lp" (its LP relaxation, rounded), "greedy", "uniform" (best single CP degree).
The answer is never worse than the best uniform degree: that plan is returned instead.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from sysplan.core.errors import InputError, NoPlanFits
from sysplan.core.types import Frozen
from sysplan.core.units import GIB
from sysplan.costmodels.candidates import RECOMPUTE_CODES, Candidates
from sysplan.costmodels.efficiency import Efficiency
from sysplan.costmodels.training import price_training
from sysplan.hardware.types import Cluster
from sysplan.models.spec import ModelSpec
from sysplan.workloads.training import TrainJob

Comm = Literal["p2p", "a2a"]
Method = Literal["auto", "milp", "lp", "greedy", "uniform"]

#: Priced terms that belong to one sequence (a micro-batch with pp = 1); the DP gradient
#: reduction and the optimizer step are per step and the same for every mix.
SEQUENCE_TERMS = ("compute_gemm", "compute_attention", "compute_elementwise", "recompute",
                  "lm_head", "tp_comm", "cp_comm", "ep_comm")
#: "auto" solves the MILP up to this many bucket x slot variables, else the LP relaxation.
MILP_MAX_VARIABLES = 6000


@dataclass(frozen=True, eq=False)
class SequenceCosts:
    """Time and per-GPU memory of each sequence in a group of each degree."""

    lengths: np.ndarray  # (S,) tokens per sequence
    degrees: tuple[int, ...]  # (D,) CP degrees priced, ascending
    time_s: np.ndarray  # (S, D) forward + backward seconds; inf where the degree is not allowed
    memory_bytes: np.ndarray  # (S, D) peak bytes per GPU with this sequence in flight
    budget_bytes: float  # usable bytes per GPU

    @property
    def fits(self) -> np.ndarray:
        """(S, D) True where the sequence may run at that degree."""
        return (self.memory_bytes <= self.budget_bytes) & np.isfinite(self.time_s)


class Group(Frozen):
    """One sequence-parallel group of a step."""

    degree: int = Field(description="Context-parallel degree: slots (replicas) it occupies.")
    sequence_indices: tuple[int, ...] = Field(description="Sequences it runs, by input index.")
    time_s: float = Field(description="Sum of its sequences' times, seconds.")


class SpMixPlan(Frozen):
    """Groups of one step and how the step time compares with the baselines."""

    groups: tuple[Group, ...] = Field(description="Non-empty groups, largest degree first.")
    step_time_s: float = Field(description="Slowest group's time (sequence work only).")
    method: str = Field(description="What produced the groups: milp, lp, greedy or uniform.")
    status: str = Field(description="optimal (proven, exact buckets), feasible (MILP stopped "
                        "at its time limit, or rounded buckets) or heuristic.")
    gap: float = Field(description="(step time - lower bound) / step time.")
    lower_bound_s: float = Field(description="Best proven lower bound on the step time.")
    uniform_step_time_s: float | None = Field(description="Best single CP degree (None: none fits).")
    uniform_degree: int | None = Field(description="That degree.")
    greedy_step_time_s: float | None = Field(description="Greedy packing (None: it failed).")
    solve_time_s: float = Field(description="Wall seconds spent planning (volatile).")
    time_limit_s: float = Field(description="Solver time limit.")
    num_buckets: int = Field(description="Length buckets the MILP/LP used (0: none).")

    @property
    def speedup(self) -> float | None:
        """Best uniform degree's step time / this plan's."""
        return None if self.uniform_step_time_s is None else self.uniform_step_time_s / self.step_time_s


def sequence_costs(model: ModelSpec, job: TrainJob, cluster: Cluster, lengths, degrees,
                   comm: Comm, *, tp: int = 1, zero: int = 1,
                   recompute: tuple[str, ...] = ("selective", "full"),
                   pool_slots: int | None = None, memory_headroom_bytes: float = 4 * GIB,
                   efficiency: Efficiency | None = None) -> SequenceCosts:
    """Price every sequence at every CP degree with the training cost model.

    Each distinct length is one ``price_training`` call over degrees x recompute modes: a
    configuration tp x cp = d x dp = pool_slots / d with one sequence per micro-batch
    (pp = 1), so the time is its layers' forward + backward over len/d tokens, the LM head
    and the CP traffic of ``comm`` (ring p2p or Ulysses a2a, costmodels.training), and the
    memory its per-GPU peak. Per (length, degree) the fastest of ``recompute`` that fits is
    kept (the least memory if none fits). Ulysses splits heads: degrees with
    num_heads % (tp d) != 0 are not allowed.
    """
    if comm not in ("p2p", "a2a"):
        raise InputError(f"--cp-comm {comm}: choose p2p (ring) or a2a (Ulysses)")
    if not recompute or set(recompute) - set(RECOMPUTE_CODES):
        raise InputError(f"recompute {recompute}: choose from {', '.join(RECOMPUTE_CODES)}")
    lengths = np.asarray(lengths, dtype=np.int64)
    degrees = tuple(sorted(int(d) for d in degrees))
    slots = pool_slots or max(degrees)
    if any(d < 1 or d & (d - 1) or slots % d for d in degrees):
        raise InputError(f"degrees {degrees}: expected powers of two dividing {slots} slots")
    eff = efficiency or Efficiency.for_cluster(cluster)
    grid = [(d, mode) for mode in recompute for d in degrees]
    n = len(grid)
    cand = Candidates.from_arrays(
        tp=[tp] * n, pp=[1] * n, vpp=[1] * n, dp=[slots // d for d, _ in grid],
        cp=[d for d, _ in grid], ep=[1] * n, etp=[1] * n, sp=[int(tp > 1)] * n,
        zero=[zero] * n, mb=[1] * n, recompute=[RECOMPUTE_CODES[m] for _, m in grid],
        rc_layers=[0] * n, global_batch=[slots // d for d, _ in grid])
    distinct, inverse = np.unique(lengths, return_inverse=True)
    shape = (distinct.size, len(recompute), len(degrees))
    times, memory = np.empty(shape), np.empty(shape)
    for i, length in enumerate(distinct):
        one = job.model_copy(update={"seq_len": int(length), "global_batch": 1,
                                     "context_parallel_comm": comm})
        priced = price_training(model, one, cluster, cand, eff)
        times[i] = sum(priced.time[t] for t in SEQUENCE_TERMS).reshape(shape[1:])
        memory[i] = priced.memory_bytes.reshape(shape[1:])
    budget = float(cluster.gpu.memory_bytes - memory_headroom_bytes)
    # fastest fitting mode; the least-memory mode where none fits
    mode = np.where((memory <= budget).any(axis=1),
                    np.where(memory <= budget, times, np.inf).argmin(axis=1),
                    memory.argmin(axis=1))[:, None, :]
    times = np.take_along_axis(times, mode, axis=1)[:, 0]
    memory = np.take_along_axis(memory, mode, axis=1)[:, 0]
    if comm == "a2a":
        times[:, [model.num_heads % (tp * d) != 0 for d in degrees]] = np.inf
    return SequenceCosts(lengths, degrees, times[inverse], memory[inverse], budget)


@dataclass(frozen=True)
class _Assignment:
    """Group degrees and, per sequence, its group index."""

    degrees: tuple[int, ...]
    group_of: np.ndarray

    def loads(self, costs: SequenceCosts) -> np.ndarray:
        column = np.array([costs.degrees.index(d) for d in self.degrees], dtype=int)
        times = costs.time_s[np.arange(costs.lengths.size), column[self.group_of]]
        return np.bincount(self.group_of, weights=times, minlength=len(self.degrees))

    def makespan(self, costs: SequenceCosts) -> float:
        return float(self.loads(costs).max())


def _pack(costs: SequenceCosts, layout: tuple[int, ...], allowed: np.ndarray | None = None,
          ) -> _Assignment | None:
    """Longest sequence first into the group where it finishes earliest (memory permitting;
    ``allowed`` (S, G) restricts further). None if some sequence fits no group."""
    if not layout:
        return None
    column = [costs.degrees.index(d) for d in layout]
    times = np.where(costs.fits[:, column], costs.time_s[:, column], np.inf)
    if allowed is not None:
        times = np.where(allowed, times, np.inf)
    order = sorted(range(costs.lengths.size), key=lambda s: (-times[s].min(), s))
    loads = np.zeros(len(layout))
    group_of = np.zeros(costs.lengths.size, dtype=int)
    for s in order:
        finish = loads + times[s]
        g = int(np.argmin(finish))
        if not math.isfinite(finish[g]):
            return None
        loads[g], group_of[s] = finish[g], g
    return _Assignment(layout, group_of)


def _uniform(costs: SequenceCosts, slots: int) -> tuple[_Assignment | None, int | None]:
    """Best single degree: slots / d groups of degree d, packed longest first."""
    best, best_degree = None, None
    for d in costs.degrees:
        if d > slots:
            continue
        found = _pack(costs, (d,) * (slots // d))
        if found and (best is None or found.makespan(costs) < best.makespan(costs)):
            best, best_degree = found, d
    return best, best_degree


def _layout(work: dict[int, float], slots: int, usable: tuple[int, ...]) -> tuple[int, ...]:
    """Group degrees giving each degree class GPUs in proportion to its GPU-seconds: one
    group per class (largest first, while room), then a group at a time to the class with
    the most work per GPU; left-over slots become groups of the largest usable degree."""
    counts: dict[int, int] = {}
    free = slots
    for d in sorted(work, reverse=True):
        if d <= free and work[d] > 0:
            counts[d], free = 1, free - d
    while True:
        fitting = [d for d in counts if d <= free]
        if not fitting:
            fill = [d for d in usable if d <= free]
            if not fill:
                break
            counts[max(fill)] = counts.get(max(fill), 0)
            fitting = [max(fill)]
        d = max(fitting, key=lambda d: (work.get(d, 0.0) / max(1, counts[d] * d), -d))
        counts[d], free = counts[d] + 1, free - d
    return tuple(d for d in sorted(counts, reverse=True) for _ in range(counts[d]))


def _usable(costs: SequenceCosts, slots: int) -> tuple[int, ...]:
    return tuple(d for j, d in enumerate(costs.degrees) if d <= slots and costs.fits[:, j].any())


def _greedy(costs: SequenceCosts, slots: int) -> _Assignment | None:
    """Each sequence at the smallest degree that fits; GPUs split between degrees by work;
    longest first into the group where it finishes earliest."""
    fits = costs.fits & (np.array(costs.degrees) <= slots)
    smallest = fits.argmax(axis=1)
    rows = np.arange(costs.lengths.size)
    work: dict[int, float] = {}
    for s, j in zip(rows, smallest, strict=True):
        d = costs.degrees[j]
        work[d] = work.get(d, 0.0) + d * float(costs.time_s[s, j])
    return _pack(costs, _layout(work, slots, _usable(costs, slots)))


def _lower_bound(costs: SequenceCosts, slots: int) -> float:
    """Max of the longest sequence at its fastest degree and the GPU-seconds bound: every
    sequence takes at least min_d d t(s, d) slot-seconds of the slots x M available."""
    degree = np.array(costs.degrees, dtype=float)
    fits = costs.fits & (degree <= slots)
    fastest = np.where(fits, costs.time_s, np.inf).min(axis=1)
    area = np.where(fits, costs.time_s * degree, np.inf).min(axis=1)
    return float(max(fastest.max(), area.sum() / slots))


def plan_sp_mix(costs: SequenceCosts, slots: int, *, method: Method = "auto",
                time_limit_s: float = 2.0, max_buckets: int = 32,
                threads: int = 1) -> SpMixPlan:
    """The step's groups minimising the slowest group's time (see the module docstring).

    Raises NoPlanFits when a sequence fits no allowed degree within ``slots``.
    """
    started = time.perf_counter()
    if slots < 1 or method not in ("auto", "milp", "lp", "greedy", "uniform"):
        raise InputError(f"slots {slots} / method {method}: need slots >= 1 and one of "
                         "auto, milp, lp, greedy, uniform")
    fits = costs.fits & (np.array(costs.degrees) <= slots)
    if not fits.any(axis=1).all():
        worst = int(np.flatnonzero(~fits.any(axis=1))[0])
        raise NoPlanFits(f"a sequence of {costs.lengths[worst]:,} tokens fits no CP degree "
                         f"<= {slots} in {costs.budget_bytes / GIB:.1f} GiB per GPU")
    uniform, uniform_degree = _uniform(costs, slots)
    greedy = _greedy(costs, slots)
    bound = _lower_bound(costs, slots)
    # candidates in order of preference on ties; the uniform plan is always among them
    tried = [("greedy", "heuristic", greedy), ("uniform", "heuristic", uniform)]
    tried = [t for t in tried if t[2] is not None and (method != "uniform" or t[0] == "uniform")]
    if not tried:
        raise NoPlanFits(f"no single CP degree <= {slots} fits every sequence and the greedy "
                         "packing found no layout")
    buckets = 0
    if method in ("auto", "milp", "lp"):
        warm = min((t[2] for t in tried), key=lambda a: a.makespan(costs))
        left = time_limit_s - (time.perf_counter() - started)
        from sysplan.planners.sp_mix_solver import solve

        found = solve(costs, slots, warm, method, left, max_buckets, threads, bound)
        buckets, bound = found.buckets, max(bound, found.bound)
        tried.insert(0, (found.method, found.status, found.assignment))
    name, status, best = min(tried, key=lambda t: t[2].makespan(costs))
    step = best.makespan(costs)
    bound = step if status == "optimal" else min(bound, step)
    return SpMixPlan(
        groups=_groups(costs, best), step_time_s=step, method=name, status=status,
        gap=(step - bound) / step, lower_bound_s=bound,
        uniform_step_time_s=uniform.makespan(costs) if uniform else None,
        uniform_degree=uniform_degree,
        greedy_step_time_s=greedy.makespan(costs) if greedy else None,
        solve_time_s=time.perf_counter() - started, time_limit_s=time_limit_s,
        num_buckets=buckets)


def _groups(costs: SequenceCosts, assignment: _Assignment) -> tuple[Group, ...]:
    loads = assignment.loads(costs)
    groups = [Group(degree=d, sequence_indices=tuple(int(s) for s in
                                                     np.flatnonzero(assignment.group_of == g)),
                    time_s=float(loads[g])) for g, d in enumerate(assignment.degrees)]
    groups = [g for g in groups if g.sequence_indices]
    return tuple(sorted(groups, key=lambda g: (-g.degree, -g.time_s, g.sequence_indices)))


def mix_for_plan(model: ModelSpec, job: TrainJob, cluster: Cluster, parallel, lengths,
                 memory_headroom_bytes: float = 4 * GIB, seed: int = 0,
                 time_limit_s: float = 2.0) -> tuple[SpMixPlan, np.ndarray]:
    """One sampled step of variable-length data on a chosen plan's ranks: its sequences split
    into CP groups over the plan's dp x cp ranks (per TP group), against the best uniform CP.

    Returns the mix plan and the step's sequence lengths. Sequences are priced as one
    pipeline stage (sequence work only; a pipeline scales every group alike)."""
    from sysplan.workloads.lengths import parse_lengths, sample_step

    if parallel.pp > 1:
        raise InputError(f"--lengths: the top plan has pp {parallel.pp}; the sequence-parallel "
                         "mix is priced for pp 1 layouts only (pin --pp 1)")
    slots = parallel.dp * parallel.cp
    degrees = [d for d in (2**i for i in range(8)) if d <= slots and slots % d == 0]
    sample = sample_step(parse_lengths(lengths), job.tokens_per_step, seed=seed)
    costs = sequence_costs(model, job, cluster, sample, degrees, job.context_parallel_comm,
                           tp=parallel.tp, zero=max(parallel.zero, 1), pool_slots=slots,
                           memory_headroom_bytes=memory_headroom_bytes)
    return plan_sp_mix(costs, slots, time_limit_s=time_limit_s), sample
