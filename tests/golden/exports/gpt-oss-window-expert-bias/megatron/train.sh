#!/usr/bin/env bash
# Written by sysplan X.Y.Z for NVIDIA/Megatron-LM d98e8a64 (2026-08-22).
# Plan #1: GPT-OSS 120B on dgx-h100, 64 GPUs, 4096 tokens per sequence, bf16.
# Layout: tp=1 pp=1 vpp=1 dp=64 cp=1 ep=8 etp=1 sp=0 zero=1 micro_batch=1 global_batch=512 recompute=none.
# Predicted: step 7.376 s, 4443 tokens/s/GPU, MFU 0.171 of the bf16 peak, worst-stage memory 150.3 GiB of 80 GiB.
#SBATCH --nodes=8
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --time=02:00:00
#SBATCH --job-name=sysplan

set -euo pipefail
MEGATRON_DIR=${MEGATRON_DIR:-$PWD}  # a Megatron-LM checkout
TRAIN_ITERS=${TRAIN_ITERS:-50}  # steps to run; compare the logged step time
DATA_ARGS=${DATA_ARGS:---mock-data}  # or: --data-path PREFIX (real tokens)

ARGS=(
  --tensor-model-parallel-size 1
  --pipeline-model-parallel-size 1
  --expert-model-parallel-size 8
  --expert-tensor-parallel-size 1
  --use-distributed-optimizer
  --overlap-grad-reduce
  --overlap-param-gather
  --micro-batch-size 1
  --global-batch-size 512
  --num-layers 36
  --hidden-size 2880
  --ffn-hidden-size 2880
  --num-attention-heads 64
  --seq-length 4096
  --max-position-embeddings 131072
  --kv-channels 64
  --group-query-attention
  --num-query-groups 8
  --position-embedding-type rope
  --normalization RMSNorm
  --quick-geglu
  --glu-linear-offset 1.0
  --activation-func-clamp-value 7
  --untie-embeddings-and-output-weights
  --attention-dropout 0
  --hidden-dropout 0
  --add-qkv-bias
  --window-size 128,0
  --window-attn-skip-freq 2
  --num-experts 128
  --moe-router-topk 4
  --moe-ffn-hidden-size 2880
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
  --vocab-size 201088
  --log-throughput
  $DATA_ARGS
)

MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_ADDR
export MASTER_PORT=${MASTER_PORT:-29500}

srun --nodes=8 --ntasks-per-node=8 bash -c 'export RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS; exec python "$@"' python "$MEGATRON_DIR/pretrain_gpt.py" "${ARGS[@]}" "$@"
