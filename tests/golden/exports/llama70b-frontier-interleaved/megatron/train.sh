#!/usr/bin/env bash
# Written by sysplan X.Y.Z for NVIDIA/Megatron-LM d98e8a64 (2026-08-22).
# Plan #1: Llama 3.1 70B on frontier, 1024 GPUs, 4096 tokens per sequence, bf16.
# Layout: tp=8 pp=8 vpp=2 dp=16 cp=1 ep=1 etp=1 sp=1 zero=1 micro_batch=1 global_batch=1024 recompute=none.
# Predicted: step 24.748 s, 166 tokens/s/GPU, MFU 0.388 of the bf16 peak, worst-stage memory 23.7 GiB of 64 GiB.
#SBATCH --nodes=128
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --time=02:00:00
#SBATCH --job-name=sysplan
#SBATCH --network=disable_rdzv_get

set -euo pipefail
MEGATRON_DIR=${MEGATRON_DIR:-$PWD}  # a Megatron-LM checkout (ROCm/Megatron-LM on AMD GPUs)
TRAIN_ITERS=${TRAIN_ITERS:-50}  # steps to run; compare the logged step time
DATA_ARGS=${DATA_ARGS:---mock-data}  # or: --data-path PREFIX (real tokens)

module load PrgEnv-gnu/8.7.0 cpe/26.03 miniforge3/23.11.0-0 rocm/7.1.1 rccl-net-plugin craype-accel-amd-gfx90a  # OLCF PyTorch guide, batch script
export LD_LIBRARY_PATH=$CRAY_LD_LIBRARY_PATH:$LD_LIBRARY_PATH  # non-default CPE (same)

export CUDA_DEVICE_MAX_CONNECTIONS=1  # TP/CP communication kernels are scheduled ahead of compute so they overlap (Megatron arguments.py)
export NCCL_SOCKET_IFNAME=hsn0,hsn1,hsn2,hsn3  # RCCL on the Slingshot NICs (OLCF guide; use hsn0 alone if it hangs)
export MIOPEN_USER_DB_PATH="/tmp/miopen-cache-$SLURM_JOB_ID"  # MIOpen cache on node-local /tmp avoids disk I/O errors (OLCF guide)
export MIOPEN_CUSTOM_CACHE_DIR="$MIOPEN_USER_DB_PATH"  # same (OLCF guide)
export OMP_NUM_THREADS=7  # the 7 cores per GCD srun -c7 gives each rank

ARGS=(
  --tensor-model-parallel-size 8
  --pipeline-model-parallel-size 8
  --num-layers-per-virtual-pipeline-stage 5
  --sequence-parallel
  --use-distributed-optimizer
  --overlap-grad-reduce
  --overlap-param-gather
  --micro-batch-size 1
  --global-batch-size 1024
  --num-layers 80
  --hidden-size 8192
  --ffn-hidden-size 28672
  --num-attention-heads 64
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

MASTER_ADDR=$(hostname -i)  # this script runs on the first node
export MASTER_ADDR
export MASTER_PORT=${MASTER_PORT:-3442}  # OLCF's recommended port
export NCCL_NET=OFI  # fail if the RCCL plugin did not load (OLCF guide)

srun --nodes=128 --ntasks-per-node=8 -c7 --gpus-per-task=1 --gpu-bind=closest bash -c 'export RANK=$SLURM_PROCID LOCAL_RANK=0 WORLD_SIZE=$SLURM_NTASKS; exec python "$@"' python "$MEGATRON_DIR/pretrain_gpt.py" "${ARGS[@]}" "$@"
