"""sysplan: plan and auto-tune parallel configurations for large-model training and serving.

``import sysplan`` stays light: the layers load when a function below is first called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sysplan.hardware.types import Cluster
    from sysplan.models.spec import ModelSpec
    from sysplan.planners.serving.types import ServeResult
    from sysplan.planners.types import TrainingResult

from sysplan.core.version import __version__

__all__ = ["__version__", "plan_serving", "plan_training"]


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


def plan_serving(
    model: str | ModelSpec,
    cluster: str | Cluster,
    *,
    gpus: int | None = None,
    isl: int | str = 4000,
    osl: int | str = 500,
    rate: float | str | None = None,
    slo: str | list[str] = (),
    engine: str = "vllm",
    **options: Any,
) -> ServeResult:
    """Rank deployments serving a workload within its SLO (as `sysplan serve`, one engine).

    ``model`` and ``cluster`` are catalog names, file paths, or the typed objects; ``gpus``
    the budget (default: one node). ``isl``/``osl`` take the --isl/--osl forms (4000,
    "lognormal:4000,0.5"); ``rate`` requests/s (``"inf"``: offline; None: the highest rate
    within the SLO); ``slo`` one or more "ttft=200ms"-style bounds. Other keyword options are
    workload fields (``arrival``, ``concurrency``, ``num_requests``, ``trace``), pinned
    dimensions (``tp=2``, ``disagg=True``, ``max_num_seqs=64``) or search arguments (``top``,
    ``trials`` (default 0: no Optuna tuning), ``gpu_hour_cost``, ``routing``, ``timeout_s``,
    ``storage``). Example::

        result = sysplan.plan_serving("8b", "dgx-h100", isl=2000, osl=200, rate=20,
                                      slo=["ttft=500ms", "tpot=50ms"])
        best = result.plans[0]  # a ServePlan: .deployment, .summary, .num_gpus
        print(result.explanation)
    """
    import math

    from sysplan.hardware import load_cluster
    from sysplan.models import resolve_model
    from sysplan.planners.serving.search import ServeQuestion, check_question
    from sysplan.planners.serving.search import plan_serving as search
    from sysplan.planners.serving.types import ServePins
    from sysplan.workloads.serving import ServeWorkload
    from sysplan.workloads.slo import parse_slos

    spec = resolve_model(model)[0] if isinstance(model, str) else model
    machine = load_cluster(cluster)[0] if isinstance(cluster, str) else cluster
    fields = {key: options.pop(key) for key in list(options)
              if key in ServeWorkload.model_fields}
    if "trace" not in fields:
        fields |= {"isl": str(isl), "osl": str(osl)}
    if isinstance(rate, str):
        rate = math.inf if rate.strip().lower() == "inf" else float(rate)
    pins = ServePins(**{key: options.pop(key) for key in list(options)
                        if key in ServePins.model_fields})
    question = ServeQuestion(
        model=spec, cluster=machine, workload=ServeWorkload(rate=rate, **fields),
        slos=tuple(parse_slos([slo] if isinstance(slo, str) else list(slo))),
        max_gpus=gpus or machine.gpus_per_node, engine=engine, pins=pins, **options)
    check_question(question)
    return search(question)
