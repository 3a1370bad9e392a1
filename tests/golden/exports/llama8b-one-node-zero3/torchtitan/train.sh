#!/usr/bin/env bash
# Written by sysplan X.Y.Z for torchtitan 0.3.0 (PyPI; also main b5bcd76c, 2026-08-21).
# Plan #1: Llama 3.1 8B on dgx-h100, 8 GPUs, 4096 tokens per sequence, bf16.
# Layout: tp=1 pp=1 vpp=1 dp=8 cp=1 ep=1 etp=1 sp=0 zero=3 micro_batch=2 global_batch=64 recompute=full.
# Predicted: step 5.151 s, 6362 tokens/s/GPU, MFU 0.331 of the bf16 peak, worst-stage memory 34.1 GiB of 80 GiB.

set -euo pipefail
EXPORT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# run from a torchtitan checkout: the default data (c4_test) and tokenizer (tests/assets) are read from it
cd "${TORCHTITAN_DIR:-$PWD}"
export PYTHONPATH="$EXPORT_DIR${PYTHONPATH:+:$PYTHONPATH}"

ARGS=(
  --module sysplan_torchtitan
  --config sysplan_plan
)

torchrun --standalone --nproc-per-node 8 -m torchtitan.train "${ARGS[@]}" "$@"
