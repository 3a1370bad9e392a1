"""The exporter contract: one plan in, the files a runtime takes out.

An exporter is a function ``files(request) -> list[ExportFile]`` registered under a runtime
name (``exporters.EXPORTERS``). Every exporter, whatever its target, promises the same
(tests/test_exporters.py runs one shared suite over all of them):

* it refuses, with an ``InputError`` naming the feature, a plan its runtime cannot run (the
  rules of ``planners.runtimes``, the same ones ``sysplan train --runtime`` searches with);
* every file says where it came from (``provenance_lines`` as comments, or a ``_sysplan``
  object in JSON), so a user can compare the prediction with what they measure;
* it is deterministic: the same request gives byte-identical files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sysplan.core.errors import InputError
from sysplan.core.units import GIB
from sysplan.core.version import __version__
from sysplan.hardware.types import Cluster
from sysplan.models.spec import ModelSpec
from sysplan.planners.runtimes import get_runtime
from sysplan.planners.types import Plan
from sysplan.workloads.training import TrainJob


@dataclass(frozen=True)
class ExportRequest:
    """A plan with everything an exporter needs to turn it into runnable files."""

    plan: Plan
    model: ModelSpec
    cluster: Cluster
    job: TrainJob
    torchtitan_format: Literal["python", "toml"] = "python"

    @property
    def nodes(self) -> int:
        """Nodes the plan occupies (whole nodes; a partial node counts as one)."""
        return -(-self.plan.num_gpus // self.cluster.gpus_per_node)

    @property
    def gpus_per_node(self) -> int:
        """GPUs (processes) started on each node."""
        return min(self.plan.num_gpus, self.cluster.gpus_per_node)


@dataclass(frozen=True)
class ExportFile:
    """One file to write, relative to the export folder."""

    path: str
    content: str
    executable: bool = False


Exporter = Callable[[ExportRequest], list[ExportFile]]


def check_runnable(request: ExportRequest, runtime_name: str) -> None:
    """InputError naming every feature of the plan the runtime lacks (exit 2)."""
    runtime = get_runtime(runtime_name)
    missing = runtime.unsupported(request.plan.parallel, request.model, request.job)
    if len(set(request.plan.parallel.stage_recompute)) > 1:
        # --recompute-granularity (Megatron), activation_checkpoint.mode (torchtitan) and
        # DeepSpeed's checkpointing each take one mode for every stage
        missing.append(f"a recompute mode per stage "
                       f"({'/'.join(request.plan.parallel.stage_recompute)})")
    if missing:
        raise InputError(
            f"--to {runtime_name}: {runtime.title} cannot run this plan: {'; '.join(missing)} "
            f"(re-plan with sysplan train --runtime {runtime_name})")


def provenance(request: ExportRequest, runtime_name: str) -> dict[str, Any]:
    """Where an export came from and what sysplan predicted, in SI units."""
    plan, estimate = request.plan, request.plan.estimate
    return {
        "sysplan_version": __version__,
        "runtime": runtime_name,
        "runtime_version": get_runtime(runtime_name).version,
        "model": request.model.name,
        "cluster": request.cluster.name,
        "num_gpus": plan.num_gpus,
        "rank": plan.rank,
        "parallel": plan.parallel.model_dump(mode="json"),
        "predicted": {
            "step_time_s": estimate.step_time_s,
            "tokens_per_s_per_gpu": estimate.tokens_per_s_per_gpu,
            "mfu": estimate.mfu,
            "memory_bytes": estimate.memory.total_bytes,
        },
    }


def provenance_lines(request: ExportRequest, runtime_name: str) -> list[str]:
    """The same facts as comment text (no comment marker), for scripts and config files."""
    info = provenance(request, runtime_name)
    p, predicted = request.plan.parallel, info["predicted"]
    layout = (f"tp={p.tp} pp={p.pp} vpp={p.vpp} dp={p.dp} cp={p.cp} ep={p.ep} etp={p.etp} "
              f"sp={int(p.sequence_parallel)} zero={p.zero} micro_batch={p.micro_batch} "
              f"global_batch={p.global_batch} recompute={p.recompute}")
    return [
        f"Written by sysplan {info['sysplan_version']} for {info['runtime_version']}.",
        (f"Plan #{info['rank']}: {info['model']} on {info['cluster']}, {info['num_gpus']} GPUs, "
        f"{request.job.seq_len} tokens per sequence, {request.job.precision}."),
        f"Layout: {layout}.",
        (f"Predicted: step {predicted['step_time_s']:.3f} s, "
        f"{predicted['tokens_per_s_per_gpu']:.0f} tokens/s/GPU, "
        f"MFU {predicted['mfu']:.3f} of the bf16 peak, "
        f"worst-stage memory {predicted['memory_bytes'] / GIB:.1f} GiB of "
        f"{request.cluster.gpu.memory_bytes / GIB:.0f} GiB."),
    ]


def comment_block(request: ExportRequest, runtime_name: str, marker: str = "#") -> str:
    """``provenance_lines`` as a comment block ending in a newline."""
    return "".join(f"{marker} {line}\n" for line in provenance_lines(request, runtime_name))


def json_text(data: dict[str, Any]) -> str:
    """Stable, readable JSON (sorted only where the caller sorted; two-space indent)."""
    return json.dumps(data, indent=2) + "\n"


def write_files(files: list[ExportFile], folder: Path) -> list[Path]:
    """Write ``files`` under ``folder`` (created); InputError if the folder is unusable."""
    written = []
    try:
        for item in files:
            target = folder / item.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(item.content, encoding="utf-8")
            if item.executable:
                target.chmod(0o755)
            written.append(target)
    except OSError as error:
        raise InputError(f"-o {folder}: cannot write ({error.strerror or error})") from None
    return written
