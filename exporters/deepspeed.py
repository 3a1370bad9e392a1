"""DeepSpeed: ``ds_config.json`` plus a Megatron-DeepSpeed launch script.

Targets DeepSpeed 0.19.6 (deepspeedai/DeepSpeed edaa7221; its config keys are in
tests/data/runtime-names/deepspeed_config_keys.txt and a test validates our file with
DeepSpeed's own ``DeepSpeedConfig`` when it is installed) and microsoft/Megatron-DeepSpeed
f4157bea, whose ``pretrain_gpt.py`` takes the TP/PP/ZeRO/Ulysses flags
(tests/data/runtime-names/megatron_deepspeed.txt). Megatron-DeepSpeed has no mock data: the
script asks for ``DATA_PATH`` (a preprocessed mmap dataset prefix).
"""

from __future__ import annotations

from typing import Any

from sysplan.core.errors import InputError
from sysplan.costmodels.estimate import balanced_stage_layers
from sysplan.costmodels.types import ParallelConfig
from sysplan.exporters import megatron
from sysplan.exporters.base import (
    ExportFile,
    ExportRequest,
    check_runnable,
    json_text,
    provenance,
)
from sysplan.exporters.launch import Script, script_text
from sysplan.exporters.pipeline import rank_layers
from sysplan.models.spec import ModelSpec
from sysplan.workloads.training import TrainJob

RUNTIME = "deepspeed"


def ds_config(request: ExportRequest) -> dict[str, Any]:
    """The DeepSpeed JSON config; ``_sysplan`` (ignored by DeepSpeed) says where it came from."""
    p, job, model = request.plan.parallel, request.job, request.model
    config: dict[str, Any] = {
        "_sysplan": provenance(request, RUNTIME),
        # train_batch_size = micro x accumulation x data-parallel ranks (DeepSpeed config docs)
        "train_batch_size": p.global_batch,
        "train_micro_batch_size_per_gpu": p.micro_batch,
        "gradient_accumulation_steps": p.num_microbatches,
        "gradient_clipping": 1.0,
        "steps_per_print": 1,
        "wall_clock_breakdown": False,
        "zero_optimization": zero_section(p, model, job),
    }
    if job.precision == "fp16":
        config["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16}
    elif job.precision != "fp32":  # fp32: neither section
        config["bf16"] = {"enabled": True}
    return config


def zero_section(p: ParallelConfig, model: ModelSpec, job: TrainJob) -> dict[str, Any]:
    """ZeRO stage and buckets sized from the hidden size, as the Hugging Face integration's
    "auto" values do (transformers integrations/deepspeed.py: reduce bucket h^2, stage-3
    prefetch 0.9 h^2, persistence threshold 10 h)."""
    h = model.hidden_size
    section: dict[str, Any] = {
        "stage": p.zero,
        "overlap_comm": job.overlap_grad_reduce,
        "contiguous_gradients": True,
        "reduce_scatter": True,
        "reduce_bucket_size": h * h,
        "allgather_partitions": True,
        "allgather_bucket_size": h * h,
    }
    if p.zero == 3:
        section |= {"stage3_prefetch_bucket_size": int(0.9 * h * h),
                    "stage3_param_persistence_threshold": 10 * h,
                    "stage3_gather_16bit_weights_on_model_save": True}
    return section


def megatron_deepspeed_arguments(request: ExportRequest) -> list[str]:
    """``pretrain_gpt.py`` flags of Megatron-DeepSpeed for the plan."""
    p, model, job = request.plan.parallel, request.model, request.job
    args = ["--tensor-model-parallel-size", str(p.tp),
            "--pipeline-model-parallel-size", str(p.pp)]
    if p.pp == 1:
        # without it a PipelineModule and DeepSpeed's pipeline engine are built even at PP 1,
        # and that engine refuses ZeRO-2/3 (deepspeed/runtime/pipe/engine.py)
        args.append("--no-pipeline-parallel")
    if p.cp > 1:
        args += ["--ds-sequence-parallel-size", str(p.cp)]
    if p.sequence_parallel:
        args.append("--sequence-parallel")
    args += ["--zero-stage", str(p.zero), "--deepspeed", "--deepspeed_config",
             "$EXPORT_DIR/ds_config.json"]
    # the block method (partial recompute) only at PP 1: the rules refuse it with PP
    args += megatron.recompute_arguments(p)
    args += ["--micro-batch-size", str(p.micro_batch), "--global-batch-size", str(p.global_batch)]
    args += _model(model, job)
    args += {"fp16": ["--fp16"], "fp32": []}.get(job.precision, ["--bf16"])
    args += ["--use-flash-attn-v2", *megatron.run_arguments(model), "--data-path", "$DATA_PATH",
             "--data-impl", "mmap", "--split", "100,0,0"]
    return args


def _model(model: ModelSpec, job: TrainJob) -> list[str]:
    """The architecture in Megatron-DeepSpeed's (older Megatron) flag names."""
    args = megatron.shape_arguments(model, job)
    if model.num_kv_heads < model.num_heads:
        args += ["--num-key-value-heads", str(model.num_kv_heads)]
    if not model.learned_positions:
        args += ["--use-rotary-position-embeddings", "--no-position-embedding"]
    return [*args, "--normalization", model.norm, *megatron.layer_arguments(model)]


def _environment(p: ParallelConfig) -> tuple[tuple[str, str, str], ...]:
    if not p.sequence_parallel:
        return ()
    # Megatron-DeepSpeed refuses --sequence-parallel without it (arguments.py)
    return (("CUDA_DEVICE_MAX_CONNECTIONS", "1", "TP collectives ordered ahead of compute"),)


def export(request: ExportRequest) -> list[ExportFile]:
    """``deepspeed/ds_config.json`` and ``deepspeed/train.sh``."""
    check_runnable(request, RUNTIME)
    layers = rank_layers(request.plan.parallel, request.model)
    if layers != balanced_stage_layers(request.model.num_layers, request.plan.parallel.pp):
        raise InputError(f"--to deepspeed: Megatron-DeepSpeed splits layers evenly over "
                         f"pipeline stages; this plan's split {list(layers)} needs megatron")
    script = Script(
        runtime=RUNTIME,
        program=("$MEGATRON_DEEPSPEED_DIR/pretrain_gpt.py",),
        arguments=tuple(megatron_deepspeed_arguments(request)),
        environment=_environment(request.plan.parallel),
        preamble=(
            'EXPORT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)',
            ('MEGATRON_DEEPSPEED_DIR=${MEGATRON_DEEPSPEED_DIR:-$PWD}  # a Megatron-DeepSpeed '
            'checkout; DeepSpeed <= 0.19.6 (0.19.8 dropped deepspeed.compression.compress)'),
            ': "${DATA_PATH:?set DATA_PATH to a dataset prefix made by tools/preprocess_data.py}"',
            "TRAIN_ITERS=${TRAIN_ITERS:-50}  # steps to run; compare the logged step time",
        ),
        launcher="deepspeed",
    )
    return [ExportFile("deepspeed/ds_config.json", json_text(ds_config(request))),
            ExportFile("deepspeed/train.sh", script_text(request, script), executable=True)]
