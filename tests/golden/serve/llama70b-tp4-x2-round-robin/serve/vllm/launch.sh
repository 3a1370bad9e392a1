#!/usr/bin/env bash
# Written by sysplan X.Y.Z for vLLM 0.33.0.
# Serving Llama 3.1 70B (meta-llama/Llama-3.1-70B-Instruct) on dgx-h100, 8 GPUs, max_model_len 8192.
# Deployment: aggregated: 2 x (tp=4 pp=1 weights=bf16 kv=bf16), routing round-robin.
# Simulated vllm scheduler: max_num_seqs=256 max_num_batched_tokens=8192 chunked_prefill=1 block_size=16.
# Memory per GPU: weights 32.88 GiB + KV cache 27.94 GiB of 80 GiB (activation reserve 4 GB).
# Predicted: max_rate_rps=3.25 output_tokens_per_s=1625 tpot_p90_s=0.0312 ttft_p90_s=0.1873.
# Routing: vLLM balances its 2 data-parallel engines by queue length (least-loaded); the simulation assumed round-robin.

set -euo pipefail

MODEL=${MODEL:-meta-llama/Llama-3.1-70B-Instruct}

# 2 replicas as vLLM data parallelism, GPUs 0,1,2,3,4,5,6,7, port 8000
CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 vllm serve "$MODEL" \
  --tensor-parallel-size 4 \
  --pipeline-parallel-size 1 \
  --data-parallel-size 2 \
  --max-num-seqs 256 \
  --max-num-batched-tokens 8192 \
  --gpu-memory-utilization 0.81 \
  --max-model-len 8192 \
  --block-size 16 \
  --enable-chunked-prefill \
  --port 8000 &

wait
