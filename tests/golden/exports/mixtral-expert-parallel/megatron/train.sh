#!/usr/bin/env bash
# Written by sysplan X.Y.Z for NVIDIA/Megatron-LM d98e8a64 (2026-08-22).
# Plan #1: Mixtral 8x7B on dgx-h100, 64 GPUs, 4096 tokens per sequence, bf16.
# Layout: tp=2 pp=2 vpp=1 dp=16 cp=1 ep=8 etp=1 sp=1 zero=1 micro_batch=1 global_batch=256 recompute=selective.
# Predicted: step 4.582 s, 3576 tokens/s/GPU, MFU 0.300 of the bf16 peak, worst-stage memory 43.4 GiB of 80 GiB.
#SBATCH --nodes=8
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --time=02:00:00
#SBATCH --job-name=sysplan

set -euo pipefail
MEGATRON_DIR=${MEGATRON_DIR:-$PWD}  # a Megatron-LM checkout
TRAIN_ITERS=${TRAIN_ITERS:-50}  # steps to run; compare the logged step time
DATA_ARGS=${DATA_ARGS:---mock-data}  # or: --data-path PREFIX (real tokens)

export CUDA_DEVICE_MAX_CONNECTIONS=1  # TP/CP communication kernels are scheduled ahead of compute so they overlap (Megatron arguments.py)

ARGS=(
  --tensor-model-parallel-size 2
  --pipeline-model-parallel-size 2
  --expert-model-parallel-size 8
  --expert-tensor-parallel-size 1
  --sequence-parallel
  --use-distributed-optimizer
  --overlap-grad-reduce
  --overlap-param-gather
  --recompute-granularity selective
  --micro-batch-size 1
  --global-batch-size 256
  --num-layers 32
  --hidden-size 4096
  --ffn-hidden-size 14336
  --num-attention-heads 32
  --seq-length 4096
  --max-position-embeddings 32768
  --group-query-attention
  --num-query-groups 8
  --position-embedding-type rope
  --normalization RMSNorm
  --swiglu
  --disable-bias-linear
  --untie-embeddings-and-output-weights
  --attention-dropout 0
  --hidden-dropout 0
  --num-experts 8
  --moe-router-topk 2
  --moe-ffn-hidden-size 14336
  --moe-grouped-gemm
  --moe-token-dispatcher-type alltoall
  --bf16
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
  --vocab-size 32000
  --log-throughput
  $DATA_ARGS
)

MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_ADDR
export MASTER_PORT=${MASTER_PORT:-29500}

srun --nodes=8 --ntasks-per-node=8 bash -c 'export RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS; exec python "$@"' python "$MEGATRON_DIR/pretrain_gpt.py" "${ARGS[@]}" "$@"
