#!/usr/bin/env bash
# Written by sysplan X.Y.Z for NVIDIA/Megatron-LM d98e8a64 (2026-08-22).
# Plan #1: Llama 3.1 8B on dgx-h100, 8 GPUs, 4096 tokens per sequence, fp8.
# Layout: tp=4 pp=1 vpp=1 dp=2 cp=1 ep=1 etp=1 sp=1 zero=0 micro_batch=1 global_batch=32 recompute=none.
# Predicted: step 2.240 s, 7314 tokens/s/GPU, MFU 0.380 of the bf16 peak, worst-stage memory 39.3 GiB of 80 GiB.

set -euo pipefail
MEGATRON_DIR=${MEGATRON_DIR:-$PWD}  # a Megatron-LM checkout
TRAIN_ITERS=${TRAIN_ITERS:-50}  # steps to run; compare the logged step time
DATA_ARGS=${DATA_ARGS:---mock-data}  # or: --data-path PREFIX (real tokens)

export CUDA_DEVICE_MAX_CONNECTIONS=1  # TP/CP communication kernels are scheduled ahead of compute so they overlap (Megatron arguments.py)

ARGS=(
  --tensor-model-parallel-size 4
  --pipeline-model-parallel-size 1
  --sequence-parallel
  --overlap-grad-reduce
  --micro-batch-size 1
  --global-batch-size 32
  --num-layers 32
  --hidden-size 4096
  --ffn-hidden-size 14336
  --num-attention-heads 32
  --seq-length 4096
  --max-position-embeddings 131072
  --group-query-attention
  --num-query-groups 8
  --position-embedding-type rope
  --normalization RMSNorm
  --swiglu
  --disable-bias-linear
  --untie-embeddings-and-output-weights
  --attention-dropout 0
  --hidden-dropout 0
  --bf16
  --fp8-format hybrid
  --fp8-recipe delayed
  --attention-backend flash
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
  --log-throughput
  $DATA_ARGS
)

torchrun --standalone --nproc-per-node 8 "$MEGATRON_DIR/pretrain_gpt.py" "${ARGS[@]}" "$@"
