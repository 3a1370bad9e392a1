"""Exporters: turn a plan into the files a runtime takes (DESIGN.md, house style 9 and 10).

``export_plan(result, targets, folder)`` is what ``sysplan train --export`` and
``sysplan export`` call. Each target name maps to one exporter function in ``EXPORTERS``;
``json`` writes the plan document itself, narrowed to the exported plan, so the folder can be
re-exported later with ``sysplan export``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from sysplan.core.errors import InputError
from sysplan.exporters import deepspeed, megatron, plan_json, torchtitan
from sysplan.exporters.base import Exporter, ExportFile, ExportRequest, json_text, write_files
from sysplan.hardware import load_cluster
from sysplan.hardware.types import Cluster
from sysplan.models import resolve_model
from sysplan.models.spec import ModelSpec
from sysplan.planners.types import Plan, TrainingResult

#: Export target -> exporter (the three runtimes, plus the plan JSON itself).
EXPORTERS: dict[str, Exporter] = {
    "megatron": megatron.export,
    "deepspeed": deepspeed.export,
    "torchtitan": torchtitan.export,
}
TARGETS = (*EXPORTERS, "json")

__all__ = ["EXPORTERS", "TARGETS", "ExportFile", "ExportRequest", "export_plan", "parse_targets",
           "pick_plan", "request_for"]


def parse_targets(text: str, option: str = "--to") -> list[str]:
    """``megatron,deepspeed`` -> names, in order, without repeats; InputError for others."""
    return parse_names(text, option, TARGETS)


def parse_names(text: str, option: str, accepted) -> list[str]:
    """A comma-separated list of names from ``accepted``, in order, without repeats;
    InputError naming an unknown one, or when none is given (``--export ,``)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    choices = ", ".join(accepted)
    for name in names:
        if name not in accepted:
            raise InputError(f"{option} {name}: not accepted; choose from {choices} "
                             "(comma-separated)")
    if not names:
        raise InputError(f"{option} {text!r}: name at least one of {choices}")
    return list(dict.fromkeys(names))


def pick_plan(result: TrainingResult, rank: int | None, source: str) -> Plan:
    """The plan of ``rank`` (default: the best); InputError naming the ranks on offer."""
    wanted = 1 if rank is None else rank
    for plan in result.plans:
        if plan.rank == wanted:
            return plan
    ranks = ", ".join(str(plan.rank) for plan in result.plans) or "none"
    raise InputError(f"--rank {wanted}: {source} holds plans of rank {ranks}")


def request_for(result: TrainingResult, plan: Plan, source: str,
                torchtitan_format: Literal["python", "toml"] = "python") -> ExportRequest:
    """Everything an exporter needs; InputError naming what the plan file lacks."""
    if result.job is None:
        raise InputError(f"{source}: the plan has no 'job' block (sequence length, precision); "
                         "re-run sysplan train --json with sysplan 0.1 or later")
    model = result.model_spec or _catalog(resolve_model, result.model, source)
    cluster = result.cluster_spec or _catalog(load_cluster, result.cluster, source)
    return ExportRequest(plan=plan, model=model, cluster=cluster, job=result.job,
                         torchtitan_format=torchtitan_format)


def _catalog(resolve, name: str, source: str) -> ModelSpec | Cluster:
    """A plan file older than 1.1 names its model and cluster; find them in the catalog."""
    try:
        return resolve(name)[0]
    except InputError as error:
        raise InputError(f"{source}: has no model_spec/cluster_spec and {error}") from None


def runtime_pricings(result: TrainingResult, plan: Plan, targets: list[str], source: str,
                     option: str = "--export", efficiency=None,
                     ) -> dict[str, tuple[TrainingResult, Plan]] | None:
    """``export_plan``'s ``per_runtime``: every runtime target whose settings differ from
    those ``plan`` was priced with (the first searched runtime's: FP8 saved inputs,
    selective-recompute policy; ``runtimes.job_for``), with the plan priced again under its
    own by ``efficiency``, by default the one ``result.profile`` names where it needs no file
    (``planners.training.efficiency_named``); None when that profile is not at hand.
    InputError where the plan then does not fit."""
    from sysplan.core.units import GIB
    from sysplan.costmodels.estimate import estimate_config
    from sysplan.planners.runtimes import RUNTIMES, get_runtime, job_for
    from sysplan.planners.training import efficiency_named

    base = request_for(result, plan, source)
    if efficiency is None:
        efficiency = efficiency_named(result.profile.name, base.cluster)
        if efficiency is None:
            return None
    usable = base.cluster.gpu.memory_bytes - (result.memory_headroom_bytes or 0.0)
    pricings = {}
    for target in (t for t in targets if t in RUNTIMES):
        runtime = get_runtime(target)
        own = job_for([runtime], base.job)
        if own == base.job:
            continue
        estimate = estimate_config(base.model, own, base.cluster, plan.parallel, usable,
                                   efficiency)
        if estimate.memory.total_bytes > usable:
            raise InputError(
                f"{option} {target}: with {runtime.title}'s settings (FP8 inputs kept as "
                f"{own.fp8_saved_inputs}, selective recompute '{own.selective_policy}') the plan "
                f"needs {estimate.memory.total_bytes / GIB:.1f} GiB per GPU of {usable / GIB:.1f} "
                f"GiB usable; re-plan with --runtime {target}")
        pricings[target] = (result.model_copy(update={"job": own}),
                            plan.model_copy(update={"estimate": estimate}))
    return pricings


def export_plan(result: TrainingResult, plan: Plan, targets: list[str], folder: Path,
                source: str, torchtitan_format: Literal["python", "toml"] = "python",
                per_runtime: dict[str, tuple[TrainingResult, Plan]] | None = None,
                ) -> list[Path]:
    """Write every target's files for ``plan`` under ``folder``; nothing is written unless
    every target accepts the plan. ``per_runtime`` gives a runtime target its own (result,
    plan): the same layout priced with that runtime's settings (``runtimes.job_for``)."""
    files: list[ExportFile] = []
    for target in targets:
        if target == "json":
            narrowed = result.model_copy(update={"plans": (plan,)})
            files.append(ExportFile("plan.json", json_text(plan_json.training_document(narrowed))))
        else:
            own_result, own_plan = (per_runtime or {}).get(target, (result, plan))
            files += EXPORTERS[target](request_for(own_result, own_plan, source,
                                                   torchtitan_format))
    return write_files(files, folder)
