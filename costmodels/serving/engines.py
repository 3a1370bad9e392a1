"""What each serving engine does by default, read from its source at the version we target.

The simulator's knobs (``EngineKnobs``) speak vLLM's vocabulary; this module says what each
engine sets when the user leaves a knob alone, so a simulated deployment behaves as the engine
would out of the box:

* vLLM V1 (0.8.5-0.10): ``vllm/engine/arg_utils.py`` ``_set_default_args_v1``: on GPUs of at
  least 70 GiB other than A100 (0.9.2+; 0.8.5 has no A100 exception) the OpenAI server takes
  ``max_num_batched_tokens`` 8192 (the offline ``LLM`` class 16384) and ``max_num_seqs`` 1024;
  otherwise 2048 (``LLM``: 8192) and 256. Chunked prefill is always on;
  ``gpu_memory_utilization`` 0.9 of total memory.
* SGLang 0.4.6: ``python/sglang/srt/server_args.py``: ``chunked_prefill_size`` 2048 below
  25 GB of GPU memory, else 8192; ``mem_fraction_static`` by TP x PP on GPUs up to 80 GB
  (>= 16: 0.79, >= 8: 0.81, >= 4: 0.85, >= 2: 0.87, else 0.88) and raised on larger ones to
  min(f + 48 GB (1 - f) / mem, (mem - 18 GB) / mem); ``max_running_requests`` left to the KV
  pool (we take vLLM's 1024 as the simulator's cap).
* TensorRT-LLM (``trtllm-serve``/``LLM`` API): ``BuildConfig`` ``max_batch_size`` 2048,
  ``max_num_tokens`` 8192; ``KvCacheConfig.free_gpu_memory_fraction`` 0.9
  (``executor.h`` ``kDefaultGpuMemFraction``); capacity scheduler GUARANTEED_NO_EVICT.
  ``trtllm-bench`` (the offline throughput benchmark) derives the engine's batch size and
  token budget from the dataset instead: ``trtllm_bench_settings``.
"""

from __future__ import annotations

import math

from sysplan.core.units import GIB
from sysplan.costmodels.serving.deployment import EngineKnobs
from sysplan.hardware.types import GPU
from sysplan.models.counting import param_counts
from sysplan.models.spec import ModelSpec

GB = 1e9

#: TensorRT-LLM perf-overview (v0.17): "--kv_cache_free_gpu_mem_fraction 0.95 ... better
#: performance than the default setting of 0.90" for its published throughput tables.
TRTLLM_BENCH_KV_FRACTION = 0.95


def _big_gpu(gpu: GPU) -> bool:
    """vLLM's "H100 and MI300x" rule: >= 70 GiB of memory and not an A100."""
    return gpu.memory_bytes >= 70 * GIB and "a100" not in gpu.name.lower()


def sglang_mem_fraction_static(gpu: GPU, gpus_per_replica: int) -> float:
    """SGLang 0.4.6 ``ServerArgs.__post_init__`` default of ``mem_fraction_static``."""
    parallel = gpus_per_replica
    f = (0.79 if parallel >= 16 else 0.81 if parallel >= 8 else 0.85 if parallel >= 4
         else 0.87 if parallel >= 2 else 0.88)
    memory = gpu.memory_bytes
    if memory > 96 * GB:  # "GPU memory is larger than 96GB": keep about 48 GB more for KV
        f = min(f + 48 * GB * (1 - f) / memory, (memory - 18 * GB) / memory)
    return round(f, 3)


def default_knobs(engine: str, gpu: GPU, gpus_per_replica: int = 1) -> EngineKnobs:
    """The engine's own defaults on ``gpu`` when serving (see the module docstring)."""
    if engine == "trtllm":
        return EngineKnobs(engine="trtllm", max_num_seqs=2048, max_num_batched_tokens=8192,
                           gpu_memory_utilization=0.9)
    if engine == "sglang":
        tokens = 2048 if gpu.memory_bytes < 25 * GB else 8192
        return EngineKnobs(engine="sglang", max_num_seqs=1024, max_num_batched_tokens=tokens,
                           gpu_memory_utilization=sglang_mem_fraction_static(
                               gpu, gpus_per_replica))
    big = _big_gpu(gpu)
    return EngineKnobs(engine="vllm", max_num_seqs=1024 if big else 256,
                       max_num_batched_tokens=8192 if big else 2048, gpu_memory_utilization=0.9)


def _round_up(raw: float, floor: int, tiers: tuple[tuple[float, int], ...]) -> int:
    """``finetune_setting``'s rounding (tuning.py): up to a multiple of the step of the first
    tier ``raw`` is below, never under ``floor``."""
    step = next((step for below, step in tiers if raw < below), tiers[-1][1])
    return max(floor, step * math.ceil(raw / step))


#: batch size: multiples of 32 below 256 (at least 64), of 128 below 1024, else of 256
_BATCH_TIERS = ((256, 32), (1024, 128), (math.inf, 256))
#: token budget: multiples of 256 below 4096 (at least 2048), of 512 below 8192, else of 1024
_TOKEN_TIERS = ((4096, 256), (8192, 512), (math.inf, 1024))


def trtllm_bench_settings(model: ModelSpec, gpu: GPU, tp: int, pp: int, weights_precision: str,
                          kv_precision: str, isl: float, osl: float) -> EngineKnobs:
    """The engine ``trtllm-bench build --dataset`` builds for a dataset of mean lengths
    (``isl``, ``osl``) and the knobs ``trtllm-bench throughput`` runs it with.

    TensorRT-LLM ``tensorrt_llm/bench/build/tuning.py`` (v0.17 era) ``calc_engine_setting``:
    KV bytes per token 2 L max(tp, n_kv) d_h b_kv (GiB), engine size params x b_w / 1000^3,
    cache memory 0.95 (NVML total GiB x tp x pp - engine size), requests it holds
    cache / (bytes per token x (ISL + OSL)); ``finetune_setting``: batch min(that, 4096) / pp
    and tokens min(batch x (1 + ISL / OSL), 32768), each rounded up (``_round_batch``,
    ``_round_tokens``). ``throughput`` runs GUARANTEED_NO_EVICT with chunked context on
    (``ExecutorSettingsConfig.chunking``) and the perf-overview's KV fraction 0.95."""
    kv_bytes = 1 if kv_precision == "fp8" else 2
    weight_bytes = 1 if weights_precision == "fp8" else 2
    per_token_gib = (2 * model.num_layers * max(tp, model.num_kv_heads) * model.head_dim
                     * kv_bytes / GIB)
    engine_gib = param_counts(model).total * weight_bytes / 1000**3
    available = gpu.memory_bytes / GIB * tp * pp - engine_gib
    requests = max(available * 0.95, 0.0) / (per_token_gib * max(isl + osl, 1.0))
    raw_batch = min(requests, 4096) / pp
    raw_tokens = min(raw_batch * (1 + isl / max(osl, 1.0)), 32768)
    return EngineKnobs(engine="trtllm", max_num_seqs=_round_up(raw_batch, 64, _BATCH_TIERS),
                       max_num_batched_tokens=_round_up(raw_tokens, 2048, _TOKEN_TIERS),
                       chunked_prefill=True,
                       gpu_memory_utilization=TRTLLM_BENCH_KV_FRACTION)


#: What the simulator models differently per engine (``sysplan serve --engine all`` prints it).
DIFFERENCES = (
    ("memory: vLLM's gpu_memory_utilization covers weights, activations and KV of total "
    "memory; SGLang's mem_fraction_static covers weights and the KV pool; TensorRT-LLM's "
    "free_gpu_memory_fraction is a share of what the weights and activations leave free"),
    ("scheduling: vLLM mixes decodes and prefill chunks under one token budget and preempts "
    "the newest request by recompute; SGLang runs a prefill batch before decoding and admits "
    "against its new_token_ratio estimate of future output; TensorRT-LLM reserves KV for a "
    "whole request before admitting it (GUARANTEED_NO_EVICT) and never preempts"),
    "defaults: each engine's own max_num_seqs, token budget and memory fraction on this GPU",
)
#: What the simulator has equal across engines.
EQUAL = ("the same kernels (one GEMM, attention, all-reduce and memory-bound model) and the "
         "same fixed time per iteration, fitted on TensorRT-LLM runs: vLLM's and SGLang's CPU "
         "overheads, CUDA-graph padding and SGLang's overlap scheduler are not modelled apart")
