#!/usr/bin/env bash
# Written by sysplan X.Y.Z for NVIDIA/Megatron-LM d98e8a64 (2026-08-22).
# Plan #1: Llama 3.1 8B on dgx-h100, 8 GPUs, 4096 tokens per sequence, bf16.
# Layout: tp=1 pp=1 vpp=1 dp=8 cp=1 ep=1 etp=1 sp=0 zero=1 micro_batch=1 global_batch=64 recompute=none.
# Predicted: step 4.091 s, 8010 tokens/s/GPU, MFU 0.417 of the bf16 peak, worst-stage memory 60.2 GiB of 80 GiB.

set -euo pipefail
MEGATRON_DIR=${MEGATRON_DIR:-$PWD}  # a Megatron-LM checkout
TRAIN_ITERS=${TRAIN_ITERS:-50}  # steps to run; compare the logged step time
DATA_ARGS=${DATA_ARGS:---mock-data}  # or: --data-path PREFIX (real tokens)

ARGS=(
  --tensor-model-parallel-size 1
  --pipeline-model-parallel-size 1
  --use-distributed-optimizer
  --overlap-grad-reduce
  --overlap-param-gather
  --micro-batch-size 1
  --global-batch-size 64
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
  --attention-backend flash
  --grad-reduce-in-bf16
  --cross-entropy-loss-fusion
  --cross-entropy-fusion-impl te
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
