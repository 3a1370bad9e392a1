#!/usr/bin/env bash
# Written by sysplan X.Y.Z for TensorRT-LLM 4c05a748.
# Serving Llama 3.1 70B (meta-llama/Llama-3.1-70B-Instruct) on dgx-h100, 8 GPUs, max_model_len 8192.
# Deployment: aggregated: 2 x (tp=4 pp=1 weights=bf16 kv=bf16), routing round-robin.
# Simulated vllm scheduler: max_num_seqs=256 max_num_batched_tokens=8192 chunked_prefill=1 block_size=16.
# Memory per GPU: weights 32.88 GiB + KV cache 27.94 GiB of 80 GiB (activation reserve 4 GB).
# Predicted: max_rate_rps=3.25 output_tokens_per_s=1625 tpot_p90_s=0.0312 ttft_p90_s=0.1873.
# extra.yaml (next to this script) holds the nested LLM API options.
# Router (TEMPLATE, not started): trtllm-serve serve has no multi-replica router.
# Put a proxy in front with the simulated round-robin policy, e.g. nginx (its default round-robin):
#   upstream sysplan { server 127.0.0.1:8100; server 127.0.0.1:8101; }
#   server { listen 8000; location / { proxy_pass http://sysplan; proxy_buffering off; } }

set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
MODEL=${MODEL:-meta-llama/Llama-3.1-70B-Instruct}

# replica 0: GPUs 0,1,2,3, port 8100
CUDA_VISIBLE_DEVICES=0,1,2,3 trtllm-serve serve "$MODEL" \
  --backend pytorch \
  --tp_size 4 \
  --pp_size 1 \
  --max_batch_size 256 \
  --max_num_tokens 8192 \
  --max_seq_len 8192 \
  --kv_cache_free_gpu_memory_fraction 0.65 \
  --extra_llm_api_options "$HERE/extra.yaml" \
  --host 0.0.0.0 \
  --port 8100 &

# replica 1: GPUs 4,5,6,7, port 8101
CUDA_VISIBLE_DEVICES=4,5,6,7 trtllm-serve serve "$MODEL" \
  --backend pytorch \
  --tp_size 4 \
  --pp_size 1 \
  --max_batch_size 256 \
  --max_num_tokens 8192 \
  --max_seq_len 8192 \
  --kv_cache_free_gpu_memory_fraction 0.65 \
  --extra_llm_api_options "$HERE/extra.yaml" \
  --host 0.0.0.0 \
  --port 8101 &

wait
