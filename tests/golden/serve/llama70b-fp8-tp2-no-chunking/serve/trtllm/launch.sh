#!/usr/bin/env bash
# Written by sysplan X.Y.Z for TensorRT-LLM 4c05a748.
# Serving Llama 3.1 70B (nvidia/Llama-3.1-70B-Instruct-FP8) on dgx-h100, 2 GPUs, max_model_len 8192.
# Deployment: aggregated: 1 x (tp=2 pp=1 weights=fp8 kv=fp8), routing least-loaded.
# Simulated vllm scheduler: max_num_seqs=128 max_num_batched_tokens=8192 chunked_prefill=0 block_size=16.
# Memory per GPU: weights 16.48 GiB + KV cache 46.57 GiB of 80 GiB (activation reserve 4 GB).
# Predicted: max_rate_rps=3.25 output_tokens_per_s=1625 tpot_p90_s=0.0312 ttft_p90_s=0.1873.
# extra.yaml (next to this script) holds the nested LLM API options.
# fp8 weights: TensorRT-LLM loads them from an FP8-quantized (ModelOpt) checkpoint; MODEL must name one.

set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
MODEL=${MODEL:-nvidia/Llama-3.1-70B-Instruct-FP8}

# replica 0: GPUs 0,1, port 8100
CUDA_VISIBLE_DEVICES=0,1 trtllm-serve serve "$MODEL" \
  --backend pytorch \
  --tp_size 2 \
  --pp_size 1 \
  --max_batch_size 128 \
  --max_num_tokens 8192 \
  --max_seq_len 8192 \
  --kv_cache_free_gpu_memory_fraction 0.78 \
  --extra_llm_api_options "$HERE/extra.yaml" \
  --host 0.0.0.0 \
  --port 8100 &

wait
