"""`--json`: the plan document (a public contract, exporters/plan_schema.json) and its reader.

Writers emit ``schema_version`` 1.3 (1.1 added ``runtimes``, ``model_spec`` and
``cluster_spec``; 1.2 ``parallel.stage_recompute`` from ``--stages dp``; 1.3
``memory_headroom_bytes``, ``train_tokens``, ``gpu_hour_cost`` and ``gpu_counts``, which the
pictures read, plus ``accuracy`` and each plan's ``mfu_fp8`` and ``overlapped``; 1.4
``parallel.chunk_layers`` from ``--pp-layout``). Readers accept any 1.x and ignore keys they do not know (later issues add
keys, never rename them); 2.x, a missing version or a garbled file is refused with an
InputError (exit 2). All values are SI: seconds, bytes, FLOPs, fractions.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from sysplan.core.errors import InputError
from sysplan.core.units import MAX_GPUS
from sysplan.core.version import __version__
from sysplan.costmodels.types import Estimate, MemoryBreakdown, ParallelConfig
from sysplan.hardware.types import Cluster
from sysplan.models.spec import ModelSpec
from sysplan.planners.types import Plan, ProfileInfo, TrainingResult
from sysplan.workloads.training import TrainJob

SCHEMA_VERSION = "1.4"
SCHEMA_PATH = Path(__file__).with_name("plan_schema.json")
_VERSION = re.compile(r"^(\d+)\.(\d+)$")


def load_schema() -> dict[str, Any]:
    """The published JSON Schema (draft 2020-12) of the plan document."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def training_document(result: TrainingResult) -> dict[str, Any]:
    """The one JSON object `sysplan train --json` writes."""
    profile = result.profile
    return {
        "schema_version": SCHEMA_VERSION,
        "sysplan_version": __version__,
        "model": result.model,
        "cluster": result.cluster,
        "num_gpus": result.num_gpus,
        "objective": result.objective,
        "searched": result.searched,
        "feasible": result.feasible,
        "search_time_s": result.search_time_s,
        "profile": {
            "name": profile.name,
            "calibrated": profile.calibrated,
            "extrapolated_terms": list(profile.extrapolated_terms),
            "uncalibrated_terms": list(profile.uncalibrated_terms),
            "fitted_on": profile.fitted_on,
        },
        "job": result.job.model_dump() if result.job else None,
        "runtimes": list(result.runtimes),
        "model_spec": _dump(result.model_spec),
        "cluster_spec": _dump(result.cluster_spec),
        "sequence_mix": result.sequence_mix,
        "notes": list(result.notes),
        "explanation": result.explanation,
        "accuracy": result.accuracy,
        "memory_headroom_bytes": result.memory_headroom_bytes,
        "train_tokens": result.train_tokens,
        "gpu_hour_cost": result.gpu_hour_cost,
        "gpu_counts": [dict(row) for row in result.gpu_counts],
        "plans": [plan_document(plan) for plan in result.plans],
    }


def _dump(value: BaseModel | None) -> dict[str, Any] | None:
    return value.model_dump(mode="json") if value is not None else None


def plan_document(plan: Plan) -> dict[str, Any]:
    """One ranked plan: its layout, predicted speed, memory and step-time breakdown."""
    estimate = plan.estimate
    return {
        "rank": plan.rank,
        "parallel": plan.parallel.model_dump(mode="json"),
        "num_gpus": plan.num_gpus,
        "objective_value": plan.objective_value,
        "step_time_s": estimate.step_time_s,
        "tokens_per_s": estimate.tokens_per_s,
        "tokens_per_s_per_gpu": estimate.tokens_per_s_per_gpu,
        "mfu": estimate.mfu,
        "hfu": estimate.hfu,
        "mfu_fp8": estimate.mfu_fp8,
        "model_flops_per_token": estimate.model_flops_per_token,
        "fits": estimate.fits,
        "near_tie": plan.near_tie,
        "why": plan.why,
        "memory": estimate.memory.model_dump(mode="json"),
        "breakdown": dict(estimate.breakdown),
        "overlapped": dict(estimate.overlapped),
        "extrapolated_terms": list(estimate.extrapolated_terms),
    }


def load_plan_json(path: str | Path) -> TrainingResult:
    """Read a plan document written by any sysplan 1.x; InputError for anything else."""
    data = _read_object(Path(path))
    if "parallel" in data and "plans" not in data:
        raise InputError(
            f"{path}: a single plan taken out of plans[] has no model, cluster or job; pass the "
            "whole sysplan train --json output (choose with --rank) or a plan.json from "
            "--export json")
    check_schema_version(data.get("schema_version"), str(path))
    try:
        result = _training_result(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InputError(f"{path}: not a valid sysplan plan ({where}: {first['msg']})") from None
    except (KeyError, TypeError, AttributeError) as error:
        raise InputError(f"{path}: not a valid sysplan plan (missing or bad {error})") from None
    _check_bounds(result, str(path))
    return result


#: Largest sequence length and global batch a plan file may hold (sysplan train's own limits).
_MAX_TOKENS_FIELD = 1_073_741_824


def _check_bounds(result: TrainingResult, source: str) -> None:
    """InputError for numbers no sysplan run writes: a degree or GPU count above MAX_GPUS, a
    sequence length or global batch above 2**30 (they overflowed int64 in the exporters)."""
    for plan in result.plans:
        parallel = plan.parallel
        for name in ("tp", "pp", "vpp", "dp", "cp", "ep", "etp", "micro_batch"):
            value = getattr(parallel, name)
            if value > MAX_GPUS:
                raise InputError(f"{source}: plan rank {plan.rank}: parallel.{name} {value} is "
                                 f"more than {MAX_GPUS:,}, the most GPUs sysplan plans for")
        if plan.num_gpus > MAX_GPUS:
            raise InputError(f"{source}: plan rank {plan.rank}: num_gpus {plan.num_gpus} is "
                             f"more than {MAX_GPUS:,}, the most GPUs sysplan plans for")
    if result.job is not None:
        for name in ("seq_len", "global_batch"):
            value = getattr(result.job, name)
            if value > _MAX_TOKENS_FIELD:
                raise InputError(f"{source}: job.{name} {value} is more than "
                                 f"{_MAX_TOKENS_FIELD:,}")


def check_schema_version(version: object, source: str) -> None:
    """Accept 1.x; refuse 2.x and anything that is not a version."""
    match = _VERSION.match(version) if isinstance(version, str) else None
    if match is None:
        shown = "no schema_version" if version is None else f"schema_version {version!r}"
        raise InputError(f"{source}: {shown}; expected a sysplan plan file (schema_version 1.x)")
    if int(match[1]) != 1:
        raise InputError(
            f"{source}: schema_version {version} is not readable by sysplan {__version__} "
            "(reads 1.x); use a sysplan release that writes it"
        )


def _read_object(path: Path) -> dict[str, Any]:
    """The top-level JSON object of ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read ({error})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not JSON ({error.msg} at line {error.lineno})") from None
    except RecursionError:  # e.g. 100,000 nested lists: a plan file is a few levels deep
        raise InputError(f"{path}: not a sysplan plan file: nested too deeply to read") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object (a sysplan plan file)")
    return data


def _known(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """The keys of ``data`` that ``model`` has: unknown (newer 1.x) keys are ignored."""
    return {key: value for key, value in data.items() if key in model.model_fields}


def _training_result(data: dict[str, Any]) -> TrainingResult:
    profile = ProfileInfo(**_known(ProfileInfo, data["profile"]))
    plans = tuple(_plan(plan) for plan in data["plans"])
    return TrainingResult(**{
        **_known(TrainingResult, data), "profile": profile, "plans": plans,
        "job": _optional(TrainJob, data.get("job")),
        "model_spec": _optional(ModelSpec, data.get("model_spec")),
        "cluster_spec": _optional(Cluster, data.get("cluster_spec")),
        "runtimes": tuple(data.get("runtimes") or ()),
        "gpu_counts": tuple(data.get("gpu_counts") or ()),
    })


def _optional(model: type[BaseModel], data: object) -> Any:
    """``model`` read from ``data`` (unknown keys ignored), or None when absent."""
    return model(**_known(model, data)) if isinstance(data, dict) else None


def _plan(data: dict[str, Any]) -> Plan:
    parallel = ParallelConfig(**_known(ParallelConfig, data["parallel"]))
    memory = MemoryBreakdown(**_known(MemoryBreakdown, data["memory"]))
    estimate = Estimate(**{**_known(Estimate, data), "memory": memory})
    fields = {"objective_value": estimate.tokens_per_s_per_gpu, **_known(Plan, data)}
    return Plan(**{**fields, "parallel": parallel, "estimate": estimate})
