#!/usr/bin/env bash
# Written by sysplan X.Y.Z for torchtitan 0.3.0 (PyPI; also main b5bcd76c, 2026-08-21).
# Plan #1: Llama 3.1 8B on dgx-h100, 16 GPUs, 4096 tokens per sequence, bf16.
# Layout: tp=1 pp=4 vpp=1 dp=4 cp=1 ep=1 etp=1 sp=0 zero=0 micro_batch=1 global_batch=64 recompute=none.
# Predicted: step 2.764 s, 5929 tokens/s/GPU, MFU 0.308 of the bf16 peak, worst-stage memory 56.2 GiB of 80 GiB.
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --time=02:00:00
#SBATCH --job-name=sysplan

set -euo pipefail
EXPORT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# run from a torchtitan checkout: the default data (c4_test) and tokenizer (tests/assets) are read from it
cd "${TORCHTITAN_DIR:-$PWD}"
export PYTHONPATH="$EXPORT_DIR${PYTHONPATH:+:$PYTHONPATH}"

ARGS=(
  --module sysplan_torchtitan
  --config sysplan_plan
)

MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_ADDR
export MASTER_PORT=${MASTER_PORT:-29500}

srun --nodes=2 --ntasks-per-node=8 bash -c 'export RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS; exec python "$@"' python -m torchtitan.train "${ARGS[@]}" "$@"
