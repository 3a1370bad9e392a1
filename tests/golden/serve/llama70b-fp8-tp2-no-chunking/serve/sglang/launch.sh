#!/usr/bin/env bash
# Written by sysplan X.Y.Z for SGLang 0.5.23.
# Serving Llama 3.1 70B (meta-llama/Llama-3.1-70B-Instruct) on dgx-h100, 2 GPUs, max_model_len 8192.
# Deployment: aggregated: 1 x (tp=2 pp=1 weights=fp8 kv=fp8), routing least-loaded.
# Simulated vllm scheduler: max_num_seqs=128 max_num_batched_tokens=8192 chunked_prefill=0 block_size=16.
# Memory per GPU: weights 16.48 GiB + KV cache 46.57 GiB of 80 GiB (activation reserve 4 GB).
# Predicted: max_rate_rps=3.25 output_tokens_per_s=1625 tpot_p90_s=0.0312 ttft_p90_s=0.1873.

set -euo pipefail

MODEL=${MODEL:-meta-llama/Llama-3.1-70B-Instruct}

# replica 0: GPUs 0,1, port 8100
CUDA_VISIBLE_DEVICES=0,1 python -m sglang.launch_server \
  --model-path "$MODEL" \
  --tp-size 2 \
  --pp-size 1 \
  --max-running-requests 128 \
  --chunked-prefill-size -1 \
  --mem-fraction-static 0.79 \
  --context-length 8192 \
  --kv-cache-dtype fp8_e4m3 \
  --quantization fp8 \
  --host 0.0.0.0 \
  --port 8100 &

wait
