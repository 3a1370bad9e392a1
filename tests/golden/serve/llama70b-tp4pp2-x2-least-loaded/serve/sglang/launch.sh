#!/usr/bin/env bash
# Written by sysplan X.Y.Z for SGLang 0.5.23.
# Serving Llama 3.1 70B (meta-llama/Llama-3.1-70B-Instruct) on dgx-h100, 16 GPUs, max_model_len 8192.
# Deployment: aggregated: 2 x (tp=4 pp=2 weights=bf16 kv=bf16), routing least-loaded.
# Simulated vllm scheduler: max_num_seqs=256 max_num_batched_tokens=8192 chunked_prefill=1 block_size=16.
# Memory per GPU: weights 16.48 GiB + KV cache 51.22 GiB of 80 GiB (activation reserve 4 GB).
# Predicted: max_rate_rps=3.25 output_tokens_per_s=1625 tpot_p90_s=0.0312 ttft_p90_s=0.1873.
# Routing: sglang-router --policy power_of_two for the simulated least-loaded routing (the lighter of two sampled workers).

set -euo pipefail

MODEL=${MODEL:-meta-llama/Llama-3.1-70B-Instruct}

# 2 nodes: run `launch.sh NODE` on each (NODE = 0..1) with every
# node's address exported as NODE<k>_HOST; node 0 also starts the router.
NODE=${1:-0}
: "${NODE0_HOST:?export NODE0_HOST=<address of node 0>}"
: "${NODE1_HOST:?export NODE1_HOST=<address of node 1>}"

if [ "$NODE" = 0 ]; then
  # replica 0: GPUs 0,1,2,3,4,5,6,7, port 8100
  CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 python -m sglang.launch_server \
    --model-path "$MODEL" \
    --tp-size 4 \
    --pp-size 2 \
    --max-running-requests 256 \
    --chunked-prefill-size 8192 \
    --mem-fraction-static 0.85 \
    --context-length 8192 \
    --host 0.0.0.0 \
    --port 8100 &

  # Router on port 8000 (pip install sglang-router)
  python -m sglang_router.launch_router \
    --worker-urls "http://${NODE0_HOST}:8100" "http://${NODE1_HOST}:8101" \
    --policy power_of_two \
    --host 0.0.0.0 \
    --port 8000 &
fi

if [ "$NODE" = 1 ]; then
  # replica 1: GPUs 0,1,2,3,4,5,6,7, port 8101
  CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 python -m sglang.launch_server \
    --model-path "$MODEL" \
    --tp-size 4 \
    --pp-size 2 \
    --max-running-requests 256 \
    --chunked-prefill-size 8192 \
    --mem-fraction-static 0.85 \
    --context-length 8192 \
    --host 0.0.0.0 \
    --port 8101 &
fi

wait
