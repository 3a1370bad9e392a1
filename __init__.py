"""sysplan: plan and auto-tune parallel configurations for large-model training and serving.

``import sysplan`` stays light: the layers load when a function below is first called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sysplan.hardware.types import Cluster
    from sysplan.models.spec import ModelSpec
    from sysplan.planners.types import TrainingResult

from sysplan.core.version import __version__

__all__ = ["__version__", "plan_training"]


def plan_training(
    model: str | ModelSpec,
    cluster: str | Cluster,
    *,
    gpus: int | None = None,
    seq_len: int | None = None,
    global_batch: int | str | None = None,
    precision: str = "bf16",
    **options: Any,
) -> TrainingResult:
    """Rank parallel configurations for training ``model`` on ``cluster`` (as `sysplan train`).

    ``model`` and ``cluster`` are catalog names, file paths, or the typed objects.
    ``global_batch`` is sequences (1536) or tokens with a suffix ("4M"). Other keyword
    options are TrainJob runtime flags (``tp_comm_overlap=True``), pinned knobs (``tp=8``,
    ``recompute="full"``) or planner arguments (``objective``, ``top``,
    ``memory_headroom_bytes``, ``train_tokens``, ``gpu_hour_cost``, ``pins``). Example::

        result = sysplan.plan_training("70b", "dgx-h100", gpus=64)
        best = result.plans[0]  # a Plan: .parallel, .estimate, .why
    """
    from sysplan.hardware import load_cluster
    from sysplan.models import resolve_model
    from sysplan.planners import training
    from sysplan.planners.types import Pins
    from sysplan.workloads.training import TrainJob, make_train_job

    spec = resolve_model(model)[0] if isinstance(model, str) else model
    machine = load_cluster(cluster)[0] if isinstance(cluster, str) else cluster
    job_fields = set(TrainJob.model_fields) - {"seq_len", "global_batch", "precision"}
    flags = {key: options.pop(key) for key in list(options) if key in job_fields}
    pinned = {key: options.pop(key) for key in list(options) if key in Pins.model_fields}
    if pinned:
        base = options.pop("pins", Pins())
        options["pins"] = Pins(**{**base.model_dump(), **pinned})
    job, _notes = make_train_job(
        spec, seq_len=seq_len, global_batch=global_batch, precision=precision, **flags
    )
    return training.plan_training(spec, machine, job, num_gpus=gpus, **options)
