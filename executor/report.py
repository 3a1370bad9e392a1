"""``sysplan run``: execute plans here, measure them, put the cost model's prediction beside.

``run_plans`` maps each plan onto this machine (``executor.scale``), runs them all with
``executor.runner.run_cases`` (one process spawn per world size), prices the same layouts with
``executor.predict`` and returns measured against predicted per plan and per term, and, for
several plans, whether the two rankings by step time agree.
"""

from __future__ import annotations

from collections.abc import Callable
from statistics import fmean

from pydantic import Field

from sysplan.core.types import Frozen
from sysplan.costmodels.efficiency import Efficiency
from sysplan.executor.layout import ExecLayout, RunCase, RunResult
from sysplan.executor.model import TinyConfig
from sysplan.executor.predict import TERM_GROUPS, Prediction, predict
from sysplan.executor.runner import run_cases
from sysplan.executor.scale import ScaledPlan, as_written, scale_down
from sysplan.hardware.types import Cluster
from sysplan.planners.types import Plan
from sysplan.workloads.training import TrainJob


class Term(Frozen):
    """One separable part of the step: predicted and measured seconds per step."""

    name: str = Field(description="compute, tp, cp, dp or pipeline (p2p + bubble).")
    predicted_s: float
    measured_s: float = Field(description="Mean over ranks of the measured seconds per step.")


class PlanRun(Frozen):
    """One plan as it ran here, with the prediction for the same layout."""

    name: str = Field(description="FILE #rank of the plan.")
    source_layout: str = Field(description="The plan's layout as sysplan train printed it.")
    tiny: TinyConfig = Field(description="The model that ran.")
    layout: ExecLayout = Field(description="The layout that ran.")
    notes: tuple[str, ...] = Field(default=(), description="What differs from the plan.")
    measured: RunResult
    predicted_step_s: float
    predicted_tokens_per_s: float
    predicted_memory_bytes: float = Field(description="Worst stage, cost model.")
    terms: tuple[Term, ...]

    @property
    def step_error(self) -> float:
        """(predicted - measured) / measured median step time."""
        return self.predicted_step_s / self.measured.median_step_s - 1.0


class RunReport(Frozen):
    """Every plan run, and whether measured and predicted rank them alike."""

    backend: str
    cluster: str = Field(description="Cluster the predictions are priced on.")
    profile: str = Field(description="Efficiency (profile) the predictions use.")
    steps: int
    warmup: int
    runs: tuple[PlanRun, ...]
    measured_order: tuple[str, ...] = Field(description="Plan names, fastest measured first.")
    predicted_order: tuple[str, ...] = Field(description="Plan names, fastest predicted first.")

    @property
    def rankings_agree(self) -> bool:
        return self.measured_order == self.predicted_order


PlanSource = tuple[str, Plan, object, TrainJob]  # (name, plan, ModelSpec, job)


def run_plans(sources: list[PlanSource], *, nproc: int, scale: bool, steps: int, warmup: int,
              cluster: Cluster, efficiency: Efficiency, backend: str = "auto",
              progress: Callable[[str], None] | None = None) -> RunReport:
    """Run every plan (scaled down onto one shared tiny model, or as written) and compare;
    ``progress`` gets a line of counts and an ETA before each group of runs."""
    if scale:
        scaled = scale_down(sources, nproc)
    else:
        scaled = [as_written(*source, nproc) for source in sources]
    results = run_cases([RunCase(tiny=s.tiny, layout=s.layout) for s in scaled], steps, warmup,
                        backend, max_procs=nproc, progress=progress)
    runs = tuple(_plan_run(s, r, predict(s.tiny, s.layout, cluster, efficiency))
                 for s, r in zip(scaled, results, strict=True))
    return RunReport(
        backend=results[0].backend, cluster=cluster.name, profile=efficiency.name, steps=steps,
        warmup=warmup, runs=runs,
        measured_order=tuple(r.name for r in sorted(runs, key=lambda r: r.measured.median_step_s)),
        predicted_order=tuple(r.name for r in sorted(runs, key=lambda r: r.predicted_step_s)))


def _plan_run(scaled: ScaledPlan, result: RunResult, prediction: Prediction) -> PlanRun:
    ranks = result.ranks
    measured = {
        "compute": fmean(r.compute_s for r in ranks),
        "pipeline": fmean(r.pipeline_wait_s for r in ranks),
        **{group: fmean(r.comm_s.get(group, 0.0) for r in ranks) for group in ("tp", "cp", "dp")},
    }
    terms = tuple(Term(name=name, predicted_s=prediction.terms_s[name], measured_s=measured[name])
                  for name in TERM_GROUPS
                  if prediction.terms_s[name] > 0 or measured[name] > 0)
    return PlanRun(
        name=scaled.name, source_layout=_layout_text(scaled.plan), tiny=scaled.tiny,
        layout=scaled.layout, notes=scaled.notes, measured=result,
        predicted_step_s=prediction.step_time_s, predicted_tokens_per_s=prediction.tokens_per_s,
        predicted_memory_bytes=prediction.memory_bytes, terms=terms)


def _layout_text(plan: Plan) -> str:
    p = plan.parallel
    parts = [f"tp{p.tp}", f"pp{p.pp}"] + ([f"vpp{p.vpp}"] if p.vpp > 1 else []) + [f"dp{p.dp}"]
    parts += [f"cp{p.cp}"] if p.cp > 1 else []
    parts += [f"ep{p.ep}"] if p.ep > 1 else []
    parts += ["sp"] if p.sequence_parallel else []
    return " ".join([*parts, f"zero{p.zero}", f"mb{p.micro_batch}", p.recompute])
