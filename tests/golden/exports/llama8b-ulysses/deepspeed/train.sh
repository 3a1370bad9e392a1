#!/usr/bin/env bash
# Written by sysplan X.Y.Z for DeepSpeed 0.19.6 (edaa7221, 2026-08-22) with Megatron-DeepSpeed f4157bea (2024-12-24).
# Plan #1: Llama 3.1 8B on dgx-h100, 16 GPUs, 32768 tokens per sequence, bf16.
# Layout: tp=1 pp=1 vpp=1 dp=4 cp=4 ep=1 etp=1 sp=0 zero=2 micro_batch=1 global_batch=64 recompute=none.
# Predicted: step 42.424 s, 3090 tokens/s/GPU, MFU 0.302 of the bf16 peak, worst-stage memory 71.6 GiB of 80 GiB.
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --time=02:00:00
#SBATCH --job-name=sysplan

set -euo pipefail
EXPORT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MEGATRON_DEEPSPEED_DIR=${MEGATRON_DEEPSPEED_DIR:-$PWD}  # a Megatron-DeepSpeed checkout; DeepSpeed <= 0.19.6 (0.19.8 dropped deepspeed.compression.compress)
: "${DATA_PATH:?set DATA_PATH to a dataset prefix made by tools/preprocess_data.py}"
TRAIN_ITERS=${TRAIN_ITERS:-50}  # steps to run; compare the logged step time

ARGS=(
  --tensor-model-parallel-size 1
  --pipeline-model-parallel-size 1
  --no-pipeline-parallel
  --ds-sequence-parallel-size 4
  --zero-stage 2
  --deepspeed
  --deepspeed_config "$EXPORT_DIR/ds_config.json"
  --micro-batch-size 1
  --global-batch-size 64
  --num-layers 32
  --hidden-size 4096
  --ffn-hidden-size 14336
  --num-attention-heads 32
  --seq-length 32768
  --max-position-embeddings 131072
  --num-key-value-heads 8
  --use-rotary-position-embeddings
  --no-position-embedding
  --normalization rmsnorm
  --swiglu
  --disable-bias-linear
  --untie-embeddings-and-output-weights
  --attention-dropout 0
  --hidden-dropout 0
  --bf16
  --use-flash-attn-v2
  --train-iters "$TRAIN_ITERS"
  --lr 3e-4
  --min-lr 3e-5
  --lr-decay-style cosine
  --lr-warmup-iters 10
  --weight-decay 0.1
  --adam-beta1 0.9
  --adam-beta2 0.95
  --clip-grad 1.0
  --init-method-std 0.02
  --log-interval 1
  --eval-iters 0
  --tokenizer-type NullTokenizer
  --vocab-size 128256
  --data-path "$DATA_PATH"
  --data-impl mmap
  --split 100,0,0
)

MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_ADDR
export MASTER_PORT=${MASTER_PORT:-29500}

srun --nodes=2 --ntasks-per-node=8 bash -c 'export RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS; exec python "$@"' python "$MEGATRON_DEEPSPEED_DIR/pretrain_gpt.py" "${ARGS[@]}" "$@"
