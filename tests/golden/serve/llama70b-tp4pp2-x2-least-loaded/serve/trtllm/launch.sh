#!/usr/bin/env bash
# Written by sysplan X.Y.Z for TensorRT-LLM 4c05a748.
# Serving Llama 3.1 70B (meta-llama/Llama-3.1-70B-Instruct) on dgx-h100, 16 GPUs, max_model_len 8192.
# Deployment: aggregated: 2 x (tp=4 pp=2 weights=bf16 kv=bf16), routing least-loaded.
# Simulated vllm scheduler: max_num_seqs=256 max_num_batched_tokens=8192 chunked_prefill=1 block_size=16.
# Memory per GPU: weights 16.48 GiB + KV cache 51.22 GiB of 80 GiB (activation reserve 4 GB).
# Predicted: max_rate_rps=3.25 output_tokens_per_s=1625 tpot_p90_s=0.0312 ttft_p90_s=0.1873.
# extra.yaml (next to this script) holds the nested LLM API options.
# Router (TEMPLATE, not started): trtllm-serve serve has no multi-replica router.
# Put a proxy in front with the simulated least-loaded policy, e.g. nginx (least_conn):
#   upstream sysplan { least_conn; server ${NODE0_HOST}:8100; server ${NODE1_HOST}:8101; }
#   server { listen 8000; location / { proxy_pass http://sysplan; proxy_buffering off; } }

set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
MODEL=${MODEL:-meta-llama/Llama-3.1-70B-Instruct}

# 2 nodes: run `launch.sh NODE` on each (NODE = 0..1) with every
# node's address exported as NODE<k>_HOST; node 0 also starts the router.
NODE=${1:-0}
: "${NODE0_HOST:?export NODE0_HOST=<address of node 0>}"
: "${NODE1_HOST:?export NODE1_HOST=<address of node 1>}"

if [ "$NODE" = 0 ]; then
  # replica 0: GPUs 0,1,2,3,4,5,6,7, port 8100
  CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 trtllm-serve serve "$MODEL" \
    --backend pytorch \
    --tp_size 4 \
    --pp_size 2 \
    --max_batch_size 256 \
    --max_num_tokens 8192 \
    --max_seq_len 8192 \
    --kv_cache_free_gpu_memory_fraction 0.86 \
    --extra_llm_api_options "$HERE/extra.yaml" \
    --host 0.0.0.0 \
    --port 8100 &
fi

if [ "$NODE" = 1 ]; then
  # replica 1: GPUs 0,1,2,3,4,5,6,7, port 8101
  CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 trtllm-serve serve "$MODEL" \
    --backend pytorch \
    --tp_size 4 \
    --pp_size 2 \
    --max_batch_size 256 \
    --max_num_tokens 8192 \
    --max_seq_len 8192 \
    --kv_cache_free_gpu_memory_fraction 0.86 \
    --extra_llm_api_options "$HERE/extra.yaml" \
    --host 0.0.0.0 \
    --port 8101 &
fi

wait
