"""Integer programs (PuLP + CBC) for parallelism choices that interact (issue 7, section 2).

1. Model-state sharding (AMSP: Chen et al., "AMSP: Reducing Communication Overhead of ZeRO for
   Efficient LLM Training", arXiv 2311.00257, 2024): for one fixed layout, parameters (P),
   gradients (G) and optimizer states (O) each pick a shard group among none / node (the DP
   ranks inside one node) / full DP, minimising step time under the per-GPU memory budget.
   Only 27 combinations exist, so **enumeration is exact and enough here**; the ILP is kept
   as the formulation AMSP describes and is tested equal to enumeration.
2. Per-layer recompute and pipeline-stage boundaries under one per-rank memory budget: the
   layer-to-stage assignment and each layer's recompute mode couple through the stage's
   in-flight activations (1F1B: p - k micro-batches on stage k), so no per-stage
   decomposition applies once layers differ (mixed dense/MoE models): one ILP.

Solver discipline (planners.md section 3.6): a time limit, a warm start from a feasible plan,
and the true status from ``sol_status`` (a time-limited CBC reports ``status`` Optimal for a
merely integer-feasible point); the gap comes from the best bound in CBC's log.
"""

from __future__ import annotations

import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Literal

from sysplan.core.errors import InputError, NoPlanFits
from sysplan.core.types import Frozen
from sysplan.costmodels.layer_cost import RECOMPUTE_MODES  # noqa: F401 (re-exported)

STATES = ("params", "grads", "optimizer")
SHARD_GROUPS = ("none", "node", "full")
#: ZeRO stage -> shard group of (params, grads, optimizer) (Rajbhandari et al. 2020, section 5).
ZERO_AS_GROUPS = {0: ("none", "none", "none"), 1: ("none", "none", "full"),
                  2: ("none", "full", "full"), 3: ("full", "full", "full")}
Status = Literal["optimal", "feasible", "infeasible", "no-solution", "unbounded"]


class IlpResult(Frozen):
    """How a solve ended: the status CBC proved, its gap and the time it took."""

    status: Literal["optimal", "feasible"]
    objective: float
    gap: float | None = None  # relative gap to CBC's best bound; 0 when optimal, None if unknown
    solve_time_s: float
    time_limit_s: float

    def describe(self) -> str:
        """'optimal' or 'best found in N s, gap G' (the solver limit is shown, house style 13)."""
        if self.status == "optimal":
            return f"optimal (solved in {self.solve_time_s:.2f} s)"
        gap = "unknown" if self.gap is None else f"{100 * self.gap:.2f} %"
        return f"best found in {self.solve_time_s:.1f} s (limit {self.time_limit_s:g} s), gap {gap}"


def true_status(status: int, sol_status: int) -> Status:
    """Map PuLP's (``status``, ``sol_status``) to what was proven: ``sol_status`` decides,
    since CBC stopped on a time limit with an incumbent gives status Optimal, sol_status
    LpSolutionIntegerFeasible (planners.md section 3.6)."""
    import pulp

    if sol_status == pulp.LpSolutionOptimal:
        return "optimal"
    if sol_status == pulp.LpSolutionIntegerFeasible:
        return "feasible"
    if sol_status == pulp.LpSolutionInfeasible or status == pulp.LpStatusInfeasible:
        return "infeasible"
    if sol_status == pulp.LpSolutionUnbounded or status == pulp.LpStatusUnbounded:
        return "unbounded"
    return "no-solution"


def _cbc_gap(log: str) -> float | None:
    """Relative gap |incumbent - best bound| / |incumbent| from CBC's closing summary."""
    value = re.search(r"^Objective value:\s+(\S+)", log, re.MULTILINE)
    bound = re.search(r"^(?:Lower|Upper) bound:\s+(\S+)", log, re.MULTILINE)
    if not (value and bound):
        return None
    incumbent, best = float(value.group(1)), float(bound.group(1))
    return abs(incumbent - best) / max(abs(incumbent), 1e-30)


def solve_ilp(problem, time_limit_s: float, warm_start: bool, what: str,
              gap_rel: float | None = None) -> IlpResult:
    """Solve the PuLP ``problem`` with CBC (one thread: deterministic) within
    ``time_limit_s`` and report what was proven (``IlpResult``); its variables hold the
    solution afterwards.

    ``warm_start``: the variables carry initial values (``setInitialValue``) to start from.
    ``what`` names the problem in errors. ``gap_rel`` stops the search once incumbent and
    bound are that close (then "optimal" means optimal within it). Raises InputError for a
    non-positive limit and NoPlanFits when CBC finds no feasible point or fails.
    """
    import pulp

    if time_limit_s <= 0:
        raise InputError(f"time_limit_s {time_limit_s}: must be positive (seconds)")
    with tempfile.TemporaryDirectory() as folder:
        log_path = Path(folder) / "cbc.log"
        with warnings.catch_warnings():  # PuLP 3.3 deprecates PULP_CBC_CMD for 4.0
            warnings.simplefilter("ignore", DeprecationWarning)
            solver = pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit_s, warmStart=warm_start,
                                       threads=1, timeMode="elapsed", logPath=str(log_path),
                                       gapRel=gap_rel)
        started = time.perf_counter()
        try:
            problem.solve(solver)
        except pulp.PulpSolverError:
            # CBC can exit non-zero when a sub-second limit falls in its preprocessing on a
            # loaded machine (seen with 0.5 s on 2 busy cores): one retry with twice the time
            solver.timeLimit = 2 * time_limit_s
            try:
                problem.solve(solver)
            except pulp.PulpSolverError as error:
                raise NoPlanFits(f"{what}: the CBC solver failed ({error}); raise the time "
                                 "limit") from None
        elapsed = time.perf_counter() - started
        log = log_path.read_text() if log_path.exists() else ""
    status = true_status(problem.status, problem.sol_status)
    if status not in ("optimal", "feasible"):
        limit = f" within the {time_limit_s:g} s limit" if status == "no-solution" else ""
        raise NoPlanFits(f"{what}: CBC found no feasible assignment{limit} ({status}); "
                         "raise the memory budget or the time limit")
    gap = 0.0 if status == "optimal" else _cbc_gap(log)
    return IlpResult(status=status, objective=float(pulp.value(problem.objective)), gap=gap,
                     solve_time_s=elapsed, time_limit_s=time_limit_s)


