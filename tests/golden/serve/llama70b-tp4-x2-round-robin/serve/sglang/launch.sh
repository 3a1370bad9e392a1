#!/usr/bin/env bash
# Written by sysplan X.Y.Z for SGLang 0.5.23.
# Serving Llama 3.1 70B (meta-llama/Llama-3.1-70B-Instruct) on dgx-h100, 8 GPUs, max_model_len 8192.
# Deployment: aggregated: 2 x (tp=4 pp=1 weights=bf16 kv=bf16), routing round-robin.
# Simulated vllm scheduler: max_num_seqs=256 max_num_batched_tokens=8192 chunked_prefill=1 block_size=16.
# Memory per GPU: weights 32.88 GiB + KV cache 27.94 GiB of 80 GiB (activation reserve 4 GB).
# Predicted: max_rate_rps=3.25 output_tokens_per_s=1625 tpot_p90_s=0.0312 ttft_p90_s=0.1873.
# Routing: sglang-router --policy round_robin for the simulated round-robin routing.

set -euo pipefail

MODEL=${MODEL:-meta-llama/Llama-3.1-70B-Instruct}

# replica 0: GPUs 0,1,2,3, port 8100
CUDA_VISIBLE_DEVICES=0,1,2,3 python -m sglang.launch_server \
  --model-path "$MODEL" \
  --tp-size 4 \
  --pp-size 1 \
  --max-running-requests 256 \
  --chunked-prefill-size 8192 \
  --mem-fraction-static 0.77 \
  --context-length 8192 \
  --host 0.0.0.0 \
  --port 8100 &

# replica 1: GPUs 4,5,6,7, port 8101
CUDA_VISIBLE_DEVICES=4,5,6,7 python -m sglang.launch_server \
  --model-path "$MODEL" \
  --tp-size 4 \
  --pp-size 1 \
  --max-running-requests 256 \
  --chunked-prefill-size 8192 \
  --mem-fraction-static 0.77 \
  --context-length 8192 \
  --host 0.0.0.0 \
  --port 8101 &

# Router on port 8000 (pip install sglang-router)
python -m sglang_router.launch_router \
  --worker-urls http://127.0.0.1:8100 http://127.0.0.1:8101 \
  --policy round_robin \
  --host 0.0.0.0 \
  --port 8000 &

wait
