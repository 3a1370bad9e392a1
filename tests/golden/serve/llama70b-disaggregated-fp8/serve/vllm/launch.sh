#!/usr/bin/env bash
# Written by sysplan X.Y.Z for vLLM 0.33.0.
# Serving Llama 3.1 70B (meta-llama/Llama-3.1-70B-Instruct) on dgx-h100, 16 GPUs, max_model_len 8192.
# Deployment: disaggregated: prefill 2 x (tp=2 pp=1 weights=fp8 kv=fp8) + decode 3 x (tp=4 pp=1 weights=fp8 kv=fp8), routing least-loaded.
# Simulated vllm scheduler: max_num_seqs=256 max_num_batched_tokens=8192 chunked_prefill=1 block_size=16.
# Memory per GPU: weights 16.48 GiB + KV cache 27.94 GiB of 80 GiB (activation reserve 4 GB).
# Predicted: max_rate_rps=3.25 output_tokens_per_s=1625 tpot_p90_s=0.0312 ttft_p90_s=0.1873.
# Router: TEMPLATE. vLLM 0.33.0 ships no disaggregated router; the last command runs
# the toy proxy from vLLM's source tree (tests/v1/kv_connector/nixl_integration/toy_proxy_server.py),
# which sends each request to a prefill server (max_tokens=1) and then to a decode
# server, both round-robin. Replace it with a production router (e.g. llm-d, Dynamo).
# The simulation assumed least-loaded routing; the toy proxy is round-robin.

set -euo pipefail

MODEL=${MODEL:-meta-llama/Llama-3.1-70B-Instruct}

# 2 nodes: run `launch.sh NODE` on each (NODE = 0..1) with every
# node's address exported as NODE<k>_HOST; node 0 also starts the router.
NODE=${1:-0}
: "${NODE0_HOST:?export NODE0_HOST=<address of node 0>}"
: "${NODE1_HOST:?export NODE1_HOST=<address of node 1>}"

if [ "$NODE" = 0 ]; then
  # prefill 0: GPUs 0,1, port 8100
  CUDA_VISIBLE_DEVICES=0,1 VLLM_NIXL_SIDE_CHANNEL_PORT=5600 VLLM_NIXL_SIDE_CHANNEL_HOST="${NODE0_HOST}" vllm serve "$MODEL" \
    --tensor-parallel-size 2 \
    --pipeline-parallel-size 1 \
    --max-num-seqs 256 \
    --max-num-batched-tokens 8192 \
    --gpu-memory-utilization 0.61 \
    --max-model-len 8192 \
    --block-size 16 \
    --enable-chunked-prefill \
    --kv-cache-dtype fp8 \
    --quantization fp8 \
    --kv-transfer-config '{"kv_connector":"NixlConnector","kv_role":"kv_producer"}' \
    --port 8100 &

  # prefill 1: GPUs 2,3, port 8101
  CUDA_VISIBLE_DEVICES=2,3 VLLM_NIXL_SIDE_CHANNEL_PORT=5700 VLLM_NIXL_SIDE_CHANNEL_HOST="${NODE0_HOST}" vllm serve "$MODEL" \
    --tensor-parallel-size 2 \
    --pipeline-parallel-size 1 \
    --max-num-seqs 256 \
    --max-num-batched-tokens 8192 \
    --gpu-memory-utilization 0.61 \
    --max-model-len 8192 \
    --block-size 16 \
    --enable-chunked-prefill \
    --kv-cache-dtype fp8 \
    --quantization fp8 \
    --kv-transfer-config '{"kv_connector":"NixlConnector","kv_role":"kv_producer"}' \
    --port 8101 &

  # decode 0: GPUs 4,5,6,7, port 8102
  CUDA_VISIBLE_DEVICES=4,5,6,7 VLLM_NIXL_SIDE_CHANNEL_PORT=5800 VLLM_NIXL_SIDE_CHANNEL_HOST="${NODE0_HOST}" vllm serve "$MODEL" \
    --tensor-parallel-size 4 \
    --pipeline-parallel-size 1 \
    --max-num-seqs 256 \
    --max-num-batched-tokens 8192 \
    --gpu-memory-utilization 0.61 \
    --max-model-len 8192 \
    --block-size 16 \
    --enable-chunked-prefill \
    --kv-cache-dtype fp8 \
    --quantization fp8 \
    --kv-transfer-config '{"kv_connector":"NixlConnector","kv_role":"kv_consumer"}' \
    --port 8102 &

  # Router (TEMPLATE from vLLM's tests; see the header)
  python "${VLLM_SOURCE:?set VLLM_SOURCE to a vLLM 0.33.0 checkout}/tests/v1/kv_connector/nixl_integration/toy_proxy_server.py" \
    --host 0.0.0.0 \
    --port 8000 \
    --prefiller-hosts "${NODE0_HOST}" "${NODE0_HOST}" \
    --prefiller-ports 8100 8101 \
    --decoder-hosts "${NODE0_HOST}" "${NODE1_HOST}" "${NODE1_HOST}" \
    --decoder-ports 8102 8103 8104 &
fi

if [ "$NODE" = 1 ]; then
  # decode 1: GPUs 0,1,2,3, port 8103
  CUDA_VISIBLE_DEVICES=0,1,2,3 VLLM_NIXL_SIDE_CHANNEL_PORT=5900 VLLM_NIXL_SIDE_CHANNEL_HOST="${NODE1_HOST}" vllm serve "$MODEL" \
    --tensor-parallel-size 4 \
    --pipeline-parallel-size 1 \
    --max-num-seqs 256 \
    --max-num-batched-tokens 8192 \
    --gpu-memory-utilization 0.61 \
    --max-model-len 8192 \
    --block-size 16 \
    --enable-chunked-prefill \
    --kv-cache-dtype fp8 \
    --quantization fp8 \
    --kv-transfer-config '{"kv_connector":"NixlConnector","kv_role":"kv_consumer"}' \
    --port 8103 &

  # decode 2: GPUs 4,5,6,7, port 8104
  CUDA_VISIBLE_DEVICES=4,5,6,7 VLLM_NIXL_SIDE_CHANNEL_PORT=6000 VLLM_NIXL_SIDE_CHANNEL_HOST="${NODE1_HOST}" vllm serve "$MODEL" \
    --tensor-parallel-size 4 \
    --pipeline-parallel-size 1 \
    --max-num-seqs 256 \
    --max-num-batched-tokens 8192 \
    --gpu-memory-utilization 0.61 \
    --max-model-len 8192 \
    --block-size 16 \
    --enable-chunked-prefill \
    --kv-cache-dtype fp8 \
    --quantization fp8 \
    --kv-transfer-config '{"kv_connector":"NixlConnector","kv_role":"kv_consumer"}' \
    --port 8104 &
fi

wait
