# Written by sysplan X.Y.Z for torchtitan 0.3.0 (PyPI; also main b5bcd76c, 2026-08-21).
# Plan #1: Llama 3.1 8B on dgx-h100, 8 GPUs, 4096 tokens per sequence, fp8.
# Layout: tp=4 pp=1 vpp=1 dp=2 cp=1 ep=1 etp=1 sp=1 zero=0 micro_batch=1 global_batch=32 recompute=none.
# Predicted: step 2.240 s, 7314 tokens/s/GPU, MFU 0.380 of the bf16 peak, worst-stage memory 39.3 GiB of 80 GiB.
"""torchtitan config function for the sysplan plan above.

Run: torchrun ... -m torchtitan.train --module sysplan_torchtitan --config sysplan_plan
(this file's folder on PYTHONPATH; see train.sh). Reads on torchtitan 0.3.0 and on main
after the 2026-08 rename of the batch fields to token counts.
"""

import dataclasses
import os

from torchtitan.components.quantization.float8 import Float8LinearConverter
from torchtitan.components.loss import ChunkedLossWrapper, CrossEntropyLoss
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
DIM, LAYERS, HEADS, KV_HEADS, FFN, VOCAB = 4096, 32, 32, 8, 14336, 128256
STEPS = int(os.environ.get("TRAIN_STEPS", "50"))


def _rope_config():
    # the RoPE cache length field is max_seq_len in 0.3.0, max_context_length on main
    names = {f.name for f in dataclasses.fields(ComplexRoPE.Config)}
    length = "max_seq_len" if "max_seq_len" in names else "max_context_length"
    return ComplexRoPE.Config(dim=DIM // HEADS, theta=500000.0, scaling="llama",
                              **{length: 131072})


def _model(attn_backend: str, tp_gemm_backend: str = "default") -> Llama3Model.Config:
    """The plan's model as a llama3 flavor with its exact sizes."""
    return Llama3Model.Config(
        dim=DIM,
        vocab_size=VOCAB,
        enable_weight_tying=False,
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
    """Batch of the plan: 1 x 16 micro-batches per DP rank, 32
    sequences of 4096 tokens per step."""
    names = {f.name for f in dataclasses.fields(TrainingConfig)}
    common = {"steps": STEPS, "disable_cuda_graphs": False,  # CUDA graphs refuse PP
              "mixed_precision_param": "bfloat16"}
    if "local_batch_size" in names:  # torchtitan 0.3.0: sequences per DP rank per step
        return TrainingConfig(local_batch_size=1, global_batch_size=32,
                              seq_len=4096, **common)
    return TrainingConfig(  # torchtitan main: token counts
        num_tokens_per_microbatch_per_dp_rank=1 * 4096,
        num_tokens_per_train_step=32 * 4096,
        max_context_length=4096, **common)


def _parallelism() -> ParallelismConfig:
    fields = {
        'data_parallel_replicate_degree': 2,
        'data_parallel_shard_degree': 1,
        'fsdp_reshard_after_forward': 'default',
        'tensor_parallel_degree': 4,
        'enable_sequence_parallel': True,
        'pipeline_parallel_degree': 1,
        'context_parallel_degree': 1,
    }
    return ParallelismConfig(**fields)


def sysplan_plan() -> Trainer.Config:
    """The plan as a torchtitan Trainer config."""
    model_spec = model_registry(FLAVOR, converters=[Float8LinearConverter.Config(filter_fqns=["lm_head"])])
    return Trainer.Config(
        model_spec=model_spec,
        loss=ChunkedLossWrapper.Config(
            loss_fn=CrossEntropyLoss.Config(global_vocab_size=decoder_vocab_size(model_spec))),
        hf_assets_path="./tests/assets/tokenizer",
        optimizer=default_adamw(lr=3e-4),
        training=_training(),
        dataloader=HuggingFaceTextDataLoader.Config(dataset="c4_test"),
        parallelism=_parallelism(),
        activation_checkpoint=None,
        compile=CompileConfig(enable=True, components=["model", "loss"]),
    )
