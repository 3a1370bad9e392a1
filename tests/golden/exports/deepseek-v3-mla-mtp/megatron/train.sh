#!/usr/bin/env bash
# Written by sysplan X.Y.Z for NVIDIA/Megatron-LM d98e8a64 (2026-08-22).
# Plan #1: DeepSeek-V3 on dgx-h100, 1024 GPUs, 4096 tokens per sequence, bf16.
# Layout: tp=1 pp=16 vpp=1 dp=64 cp=1 ep=64 etp=1 sp=0 zero=1 micro_batch=1 global_batch=4096 recompute=none.
# Predicted: step 29.205 s, 561 tokens/s/GPU, MFU 0.159 of the bf16 peak, worst-stage memory 130.4 GiB of 80 GiB.
#SBATCH --nodes=128
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
  --pipeline-model-parallel-size 16
  --pipeline-model-parallel-layout 'Ettt|ttttt|ttt|tttt|tttt|tttt|tttt|tttt|tttt|tttt|tttt|tttt|tttt|tttt|tttt|ttmL'
  --expert-model-parallel-size 64
  --expert-tensor-parallel-size 1
  --use-distributed-optimizer
  --overlap-grad-reduce
  --overlap-param-gather
  --micro-batch-size 1
  --global-batch-size 4096
  --num-layers 61
  --hidden-size 7168
  --ffn-hidden-size 18432
  --num-attention-heads 128
  --seq-length 4096
  --max-position-embeddings 163840
  --position-embedding-type rope
  --normalization RMSNorm
  --swiglu
  --disable-bias-linear
  --untie-embeddings-and-output-weights
  --attention-dropout 0
  --hidden-dropout 0
  --num-experts 256
  --moe-router-topk 8
  --moe-ffn-hidden-size 2048
  --moe-grouped-gemm
  --moe-token-dispatcher-type flex
  --moe-flex-dispatcher-backend deepep
  --moe-router-num-groups 8
  --moe-router-group-topk 4
  --moe-shared-expert-intermediate-size 2048
  --moe-layer-freq '[0,0,0,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]'
  --multi-latent-attention
  --kv-lora-rank 512
  --qk-head-dim 128
  --qk-pos-emb-head-dim 64
  --v-head-dim 128
  --q-lora-rank 1536
  --mtp-num-layers 1
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
  --vocab-size 129280
  --log-throughput
  $DATA_ARGS
)

MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_ADDR
export MASTER_PORT=${MASTER_PORT:-29500}

srun --nodes=128 --ntasks-per-node=8 bash -c 'export RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS; exec python "$@"' python "$MEGATRON_DIR/pretrain_gpt.py" "${ARGS[@]}" "$@"
