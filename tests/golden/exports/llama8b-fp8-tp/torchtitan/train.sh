#!/usr/bin/env bash
# Written by sysplan X.Y.Z for torchtitan 0.3.0 (PyPI; also main b5bcd76c, 2026-08-21).
# Plan #1: Llama 3.1 8B on dgx-h100, 8 GPUs, 4096 tokens per sequence, fp8.
# Layout: tp=4 pp=1 vpp=1 dp=2 cp=1 ep=1 etp=1 sp=1 zero=0 micro_batch=1 global_batch=32 recompute=none.
# Predicted: step 2.240 s, 7314 tokens/s/GPU, MFU 0.380 of the bf16 peak, worst-stage memory 39.3 GiB of 80 GiB.

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
