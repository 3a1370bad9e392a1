"""torchtitan: a config-function module plus its launch script, or a TOML job file.

The current release, torchtitan 0.3.0 (PyPI, 2026-08), reads no TOML: a run names a Python
config function (``-m torchtitan.train --module M --config FN``) that returns a
``Trainer.Config``. We write ``sysplan_torchtitan.py`` with one such function and the model as
a custom llama3 flavor with the plan's exact sizes; tests load it with torchtitan's own
ConfigManager. The module adapts to torchtitan main (b5bcd76c, 2026-08-21), which renamed the
batch fields to token counts. ``--torchtitan-format toml`` writes the TOML of torchtitan
<= 0.2.2 instead (``--job.config_file``), which can name only a shipped flavor.
"""

from __future__ import annotations

from sysplan.core.errors import InputError
from sysplan.costmodels.types import ParallelConfig
from sysplan.exporters.base import ExportFile, ExportRequest, check_runnable, comment_block
from sysplan.exporters.launch import Script, script_text
from sysplan.exporters.pipeline import chunk_layers, is_uniform
from sysplan.models.spec import ModelSpec

RUNTIME = "torchtitan"
MODULE = "sysplan_torchtitan"
CONFIG_FUNCTION = "sysplan_plan"

#: Pipeline schedule names (torch.distributed.pipelining get_schedule_class).
SCHEDULES = {"none": "1F1B", "1f1b": "1F1B", "interleaved-1f1b": "Interleaved1F1B"}

#: llama3 flavors shipped with torchtitan v0.2.2 (torchtitan/models/llama3/__init__.py
#: llama3_args): (dim, layers, heads, kv heads, ffn hidden, vocab) -> flavor.
TOML_FLAVORS = {
    (4096, 32, 32, 8, 14336, 128256): "8B",
    (8192, 80, 64, 8, 28672, 128256): "70B",
    (16384, 126, 128, 8, 53248, 128256): "405B",
}


def parallelism(p: ParallelConfig, model: ModelSpec) -> dict[str, object]:
    """ParallelismConfig fields: DDP or FSDP2 over dp, TP(+SP), PP split, CP, EP."""
    fields: dict[str, object] = {
        # ZeRO-0 = replicate (DDP-like HSDP with shard 1); ZeRO-2/3 = FSDP2 over dp
        "data_parallel_replicate_degree": p.dp if p.zero < 2 else 1,
        "data_parallel_shard_degree": p.dp if p.zero >= 2 else 1,
        # FSDP2 keeps gathered parameters from forward to backward: ZeRO-2 ("never"
        # reshard) or frees them after forward: ZeRO-3 ("always")
        "fsdp_reshard_after_forward": {2: "never", 3: "always"}.get(p.zero, "default"),
        "tensor_parallel_degree": p.tp,
        "enable_sequence_parallel": p.sequence_parallel or p.tp == 1,
        "pipeline_parallel_degree": p.pp,
        "context_parallel_degree": p.cp,
    }
    if model.moe is not None:
        fields["expert_parallel_degree"] = p.ep
    if p.pp > 1:
        fields["pipeline_parallel_schedule"] = SCHEDULES[p.schedule]
        fields.update(_pipeline_split(p, model))
    return fields


def _pipeline_split(p: ParallelConfig, model: ModelSpec) -> dict[str, object]:
    """Layers per virtual stage (even split), or each stage's module names (uneven)."""
    if is_uniform(p, model):
        # embedding and output are not counted as layers: the split is exactly the plan's
        return {"pipeline_parallel_layers_per_stage": model.num_layers // (p.pp * p.vpp),
                "pipeline_parallel_first_stage_less_layers": 0,
                "pipeline_parallel_last_stage_less_layers": 0}
    parts, start = [], 0
    for count in chunk_layers(p, model):
        parts.append([f"layers.{i}" for i in range(start, start + count)])
        start += count
    parts[0].insert(0, "tok_embeddings")
    parts[-1] += ["norm", "lm_head"]
    return {"module_fqns_per_model_part": parts}


def batch(p: ParallelConfig, seq_len: int) -> dict[str, int]:
    """Micro-batch, micro-batches per step and global batch, as sequences."""
    return {"micro_batch": p.micro_batch, "microbatches": p.num_microbatches,
            "global_batch": p.global_batch, "seq_len": seq_len}


def _python_literal(value: object, indent: int) -> str:
    if isinstance(value, list) and value and isinstance(value[0], list):
        pad = " " * (indent + 4)
        inner = ",\n".join(pad + repr(part) for part in value)
        return "[\n" + inner + ",\n" + " " * indent + "]"
    return repr(value)


def module_text(request: ExportRequest) -> str:
    """The Python config module (torchtitan 0.3.0 and main)."""
    p, model, job = request.plan.parallel, request.model, request.job
    rows = "\n".join(f"        {key!r}: {_python_literal(value, 8)},"
                     for key, value in parallelism(p, model).items())
    ac = {"none": "None", "selective": "SelectiveAC.Config()", "full": "FullAC.Config()"}
    converters = ('[Float8LinearConverter.Config(filter_fqns=["lm_head"])]'
                  if job.precision == "fp8" else "None")
    theta, scaling = ((500000.0, "llama") if model.family.startswith("llama3")
                      else (10000.0, "none"))
    values = {
        "header": comment_block(request, RUNTIME), "dim": model.hidden_size,
        "layers": model.num_layers, "heads": model.num_heads, "kv_heads": model.num_kv_heads,
        "ffn": model.ffn_hidden, "vocab": model.vocab_size, "tied": model.tied_embeddings,
        "context": max(model.max_seq_len, job.seq_len), "theta": theta, "scaling": scaling,
        "parallelism": rows, "ac": ac[p.recompute], "converters": converters,
        "float8_import": ("from torchtitan.components.quantization.float8 import "
                          "Float8LinearConverter\n" if job.precision == "fp8" else ""),
        "config": CONFIG_FUNCTION, **batch(p, job.seq_len), "pipelined": p.pp > 1,
        # 0.3.0 feeds a pipeline all of a step's micro-batches at once
        "local_batch": p.micro_batch * p.num_microbatches if p.pp > 1 else p.micro_batch,
        "pp_microbatches": _PP_MICROBATCHES.format(size=p.micro_batch, count=p.num_microbatches)
        if p.pp > 1 else "",
        "param_dtype": "float32" if job.precision in ("fp16", "fp32") else "bfloat16",
    }
    return _MODULE_TEMPLATE.format(**values)


def toml_text(request: ExportRequest) -> str:
    """The TOML job file of torchtitan <= 0.2.2 (a shipped llama3 flavor only)."""
    p, model, job = request.plan.parallel, request.model, request.job
    key = (model.hidden_size, model.num_layers, model.num_heads, model.num_kv_heads,
           model.ffn_hidden, model.vocab_size)
    flavor = TOML_FLAVORS.get(key)
    if flavor is None or _python_only(p):
        shipped = ", ".join(TOML_FLAVORS.values())
        raise InputError(
            f"--torchtitan-format toml: torchtitan <= 0.2.2 TOML names a shipped llama3 flavor "
            f"({shipped}) with an even pipeline split; {model.name} with this plan needs "
            "--torchtitan-format python")
    fields = parallelism(p, model)
    fields.pop("enable_sequence_parallel")  # v0.2.2 always pairs SP with TP
    micro = p.micro_batch
    fields["pipeline_parallel_microbatch_size"] = micro
    local = micro * p.num_microbatches if p.pp > 1 else micro
    lines = [comment_block(request, RUNTIME).rstrip("\n"), "", "[job]",
             'dump_folder = "./outputs"', 'description = "sysplan plan"', "", "[model]",
             'name = "llama3"', f'flavor = "{flavor}"', 'hf_assets_path = "./tests/assets/tokenizer"']
    if job.precision == "fp8":
        lines.append('converters = ["quantize.linear.float8"]')
    lines += ["", "[training]", f"local_batch_size = {local}",
              f"global_batch_size = {p.global_batch}", f"seq_len = {job.seq_len}",
              "steps = 50", 'dataset = "c4_test"', "", "[parallelism]"]
    lines += [f"{k} = {_toml(v)}" for k, v in fields.items()]
    mode = {"none": "none", "selective": "selective", "full": "full"}[p.recompute]
    lines += ["", "[activation_checkpoint]", f'mode = "{mode}"']
    if p.recompute == "selective":
        lines.append('selective_ac_option = "op"')
    lines += ["", "[compile]", "enable = true", 'components = ["model", "loss"]']
    return "\n".join(lines) + "\n"


def _python_only(p: ParallelConfig) -> bool:
    return p.stage_layers != () and len(set(p.stage_layers)) > 1


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def export(request: ExportRequest) -> list[ExportFile]:
    """The config (Python module or TOML) and ``torchtitan/train.sh``."""
    check_runnable(request, RUNTIME)
    if request.torchtitan_format == "toml":
        config = ExportFile("torchtitan/sysplan_torchtitan.toml", toml_text(request))
        selector = ("--job.config_file", "$EXPORT_DIR/sysplan_torchtitan.toml")
    else:
        config = ExportFile(f"torchtitan/{MODULE}.py", module_text(request))
        selector = ("--module", MODULE, "--config", CONFIG_FUNCTION)
    script = Script(
        runtime=RUNTIME,
        program=("-m", "torchtitan.train"),
        arguments=selector,
        preamble=(
            'EXPORT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)',
            ("# run from a torchtitan checkout: the default data (c4_test) and tokenizer "
            "(tests/assets) are read from it"),
            'cd "${TORCHTITAN_DIR:-$PWD}"',
            'export PYTHONPATH="$EXPORT_DIR${PYTHONPATH:+:$PYTHONPATH}"',
        ),
    )
    return [config, ExportFile("torchtitan/train.sh", script_text(request, script),
                               executable=True)]


_PP_MICROBATCHES = '''    # pipeline micro-batches: their size (torchtitan 0.3.0) or their count (main)
    if "pipeline_parallel_microbatch_size" in {{f.name for f in dataclasses.fields(ParallelismConfig)}}:
        fields["pipeline_parallel_microbatch_size"] = {size}
    else:
        fields["num_pp_microbatches"] = {count}
'''

_MODULE_TEMPLATE = '''{header}"""torchtitan config function for the sysplan plan above.

Run: torchrun ... -m torchtitan.train --module sysplan_torchtitan --config {config}
(this file's folder on PYTHONPATH; see train.sh). Reads on torchtitan 0.3.0 and on main
after the 2026-08 rename of the batch fields to token counts.
"""

import dataclasses
import os

{float8_import}from torchtitan.components.loss import ChunkedLossWrapper, CrossEntropyLoss
from torchtitan.components.optimizer import default_adamw
from torchtitan.config import CompileConfig, ParallelismConfig, TrainingConfig
from torchtitan.distributed.activation_checkpoint import FullAC, SelectiveAC
from torchtitan.hf_datasets.text_datasets import HuggingFaceTextDataLoader
from torchtitan.models.common import ComplexRoPE, Embedding, Linear, RMSNorm
from torchtitan.models.common.config_utils import decoder_vocab_size
from torchtitan.models.llama3 import (
    _EMBEDDING_INIT,
    _NORM_INIT,
    _build_llama3_layers,
    _output_linear_init,
    llama3_configs,
    model_registry,
)
from torchtitan.models.llama3.model import Llama3Model
from torchtitan.trainer import Trainer

FLAVOR = "sysplan"
DIM, LAYERS, HEADS, KV_HEADS, FFN, VOCAB = {dim}, {layers}, {heads}, {kv_heads}, {ffn}, {vocab}
STEPS = int(os.environ.get("TRAIN_STEPS", "50"))


def _rope_config():
    # the RoPE cache length field is max_seq_len in 0.3.0, max_context_length on main
    names = {{f.name for f in dataclasses.fields(ComplexRoPE.Config)}}
    length = "max_seq_len" if "max_seq_len" in names else "max_context_length"
    return ComplexRoPE.Config(dim=DIM // HEADS, theta={theta}, scaling="{scaling}",
                              **{{length: {context}}})


def _model(attn_backend: str, tp_gemm_backend: str = "default") -> Llama3Model.Config:
    """The plan's model as a llama3 flavor with its exact sizes."""
    return Llama3Model.Config(
        dim=DIM,
        vocab_size=VOCAB,
        enable_weight_tying={tied},
        tok_embeddings=Embedding.Config(
            num_embeddings=VOCAB, embedding_dim=DIM, param_init=_EMBEDDING_INIT),
        norm=RMSNorm.Config(normalized_shape=DIM, param_init=_NORM_INIT),
        lm_head=Linear.Config(
            in_features=DIM, out_features=VOCAB, param_init=_output_linear_init(DIM)),
        layers=_build_llama3_layers(
            n_layers=LAYERS, dim=DIM, n_heads=HEADS, n_kv_heads=KV_HEADS, hidden_dim=FFN,
            rope=_rope_config(), attn_backend=attn_backend, tp_gemm_backend=tp_gemm_backend),
    )


llama3_configs[FLAVOR] = _model


def _training() -> TrainingConfig:
    """Batch of the plan: {micro_batch} x {microbatches} micro-batches per DP rank, {global_batch}
    sequences of {seq_len} tokens per step."""
    names = {{f.name for f in dataclasses.fields(TrainingConfig)}}
    common = {{"steps": STEPS, "disable_cuda_graphs": {pipelined},  # CUDA graphs refuse PP
              "mixed_precision_param": "{param_dtype}"}}
    if "local_batch_size" in names:  # torchtitan 0.3.0: sequences per DP rank per step
        return TrainingConfig(local_batch_size={local_batch}, global_batch_size={global_batch},
                              seq_len={seq_len}, **common)
    return TrainingConfig(  # torchtitan main: token counts
        num_tokens_per_microbatch_per_dp_rank={micro_batch} * {seq_len},
        num_tokens_per_train_step={global_batch} * {seq_len},
        max_context_length={seq_len}, **common)


def _parallelism() -> ParallelismConfig:
    fields = {{
{parallelism}
    }}
{pp_microbatches}    return ParallelismConfig(**fields)


def {config}() -> Trainer.Config:
    """The plan as a torchtitan Trainer config."""
    model_spec = model_registry(FLAVOR, converters={converters})
    return Trainer.Config(
        model_spec=model_spec,
        loss=ChunkedLossWrapper.Config(
            loss_fn=CrossEntropyLoss.Config(global_vocab_size=decoder_vocab_size(model_spec))),
        hf_assets_path="./tests/assets/tokenizer",
        optimizer=default_adamw(lr=3e-4),
        training=_training(),
        dataloader=HuggingFaceTextDataLoader.Config(dataset="c4_test"),
        parallelism=_parallelism(),
        activation_checkpoint={ac},
        compile=CompileConfig(enable=True, components=["model", "loss"]),
    )
'''
