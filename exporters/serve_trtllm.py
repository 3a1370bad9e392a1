"""TensorRT-LLM 4c05a748: ``trtllm-serve serve`` per replica plus the LLM API options YAML.

Command-line options are in tests/data/runtime-names/trtllm_serve.txt (click keeps
underscores). The nested options go in ``extra.yaml`` (``--extra_llm_api_options``), whose keys
were checked against ``tensorrt_llm/llmapi/llm_args.py`` of NVIDIA/TensorRT-LLM (stored
versions of 2025-2026): ``kv_cache_config`` (``KvCacheConfig.free_gpu_memory_fraction``,
``KvCacheConfig.dtype``, a PyTorch-backend field), ``enable_chunked_prefill`` and
``scheduler_config.capacity_scheduler_policy`` (``CapacitySchedulerPolicy.GUARANTEED_NO_EVICT``).
The options YAML overrides the command line; both carry the same KV fraction.

Refused: disaggregated serving (``trtllm-serve disaggregated`` and its context / generation
server configuration are outside the checked option list) and GPUs that are not NVIDIA's.
Several replicas get one server each and an nginx template (no router for ``serve``).
"""

from __future__ import annotations

from dataclasses import replace

from sysplan.core.errors import InputError
from sysplan.exporters.base import ExportFile
from sysplan.exporters.serve_common import (
    Command,
    Instance,
    ServeExportRequest,
    check_precision,
    launch_script,
    nginx_template,
    place,
    serve_comment_block,
    trtllm_free_gpu_memory_fraction,
)

#: FP8 (ModelOpt) checkpoints NVIDIA publishes; TensorRT-LLM reads fp8 weights from one (the
#: 8B one is the FP8 example of TensorRT-LLM's examples/pytorch/README.md).
FP8_CHECKPOINTS = {
    "meta-llama/Llama-3.1-8B-Instruct": "nvidia/Llama-3.1-8B-Instruct-FP8",
    "meta-llama/Llama-3.1-70B-Instruct": "nvidia/Llama-3.1-70B-Instruct-FP8",
    "meta-llama/Llama-3.1-405B-Instruct": "nvidia/Llama-3.1-405B-Instruct-FP8",
}
OPTIONS_FILE = "extra.yaml"


def options(request: ServeExportRequest) -> dict:
    """The LLM API options (``extra.yaml``) as data."""
    layout = request.deployment.replica
    kv_cache: dict = {"free_gpu_memory_fraction": trtllm_free_gpu_memory_fraction(request)}
    if layout.kv_precision == "fp8":
        kv_cache["dtype"] = "fp8"
    return {
        "kv_cache_config": kv_cache,
        "enable_chunked_prefill": request.deployment.engine.chunked_prefill,
        "scheduler_config": {"capacity_scheduler_policy":
                             request.deployment.engine.capacity_policy.upper()},
    }


def options_text(request: ServeExportRequest) -> str:
    """``extra.yaml``: provenance comments, then the options (fixed key order)."""
    data = options(request)
    kv = data["kv_cache_config"]
    lines = [serve_comment_block(request, "trtllm").rstrip("\n"),
             "# TensorRT-LLM reserves no more than this KV share of the memory left after weights",
             "# and activations; GUARANTEED_NO_EVICT admits a request only when its KV fits to",
             "# completion, MAX_UTILIZATION on its prompt (pausing requests when KV runs out).",
             "kv_cache_config:",
             f"  free_gpu_memory_fraction: {kv['free_gpu_memory_fraction']:.2f}"]
    if "dtype" in kv:
        lines.append(f"  dtype: {kv['dtype']}")
    lines += [f"enable_chunked_prefill: {str(data['enable_chunked_prefill']).lower()}",
              "scheduler_config:",
              "  capacity_scheduler_policy: "
              + data["scheduler_config"]["capacity_scheduler_policy"]]
    return "\n".join(lines) + "\n"


def model_path(request: ServeExportRequest) -> str:
    """The checkpoint: NVIDIA's FP8 one for fp8 weights when known."""
    if request.deployment.replica.weights_precision == "fp8":
        return FP8_CHECKPOINTS.get(request.model_path, request.model_path)
    return request.model_path


def arguments(request: ServeExportRequest, instance: Instance) -> list[str]:
    """``trtllm-serve serve`` arguments for one server (model as ``$MODEL``)."""
    layout, engine = instance.layout, request.deployment.engine
    return ["trtllm-serve", "serve", "$MODEL", "--backend", "pytorch",
            "--tp_size", str(layout.tp), "--pp_size", str(layout.pp),
            "--max_batch_size", str(engine.max_num_seqs),
            "--max_num_tokens", str(engine.max_num_batched_tokens),
            "--max_seq_len", str(request.max_model_len),
            "--kv_cache_free_gpu_memory_fraction",
            f"{trtllm_free_gpu_memory_fraction(request):.2f}",
            "--extra_llm_api_options", "$HERE/" + OPTIONS_FILE,
            "--host", "0.0.0.0", "--port", str(instance.port)]


def export(request: ServeExportRequest) -> list[ExportFile]:
    """``serve/trtllm/launch.sh`` and ``serve/trtllm/extra.yaml``."""
    if request.deployment.disaggregated:
        raise InputError("--export trtllm: disaggregated prefill/decode is not exported for "
                         "TensorRT-LLM (trtllm-serve disaggregated is outside the checked "
                         "options); export vllm or sglang, or serve aggregated")
    if request.cluster.gpu.vendor != "nvidia":
        raise InputError(f"--export trtllm: TensorRT-LLM runs on NVIDIA GPUs, not "
                         f"{request.cluster.gpu.name}")
    check_precision(request, "trtllm")
    resolved = _with_model_path(request)
    instances = place(resolved)
    nodes = instances[-1].node + 1
    commands = [Command(tuple(arguments(resolved, i)), (("CUDA_VISIBLE_DEVICES", i.devices),),
                        f"replica {i.index}: GPUs {i.devices}, port {i.port}", i.node)
                for i in instances]
    notes = ["extra.yaml (next to this script) holds the nested LLM API options."]
    if resolved.deployment.replica.weights_precision == "fp8":
        notes.append("fp8 weights: TensorRT-LLM loads them from an FP8-quantized (ModelOpt) "
                     "checkpoint; MODEL must name one.")
    if len(instances) > 1:
        notes += nginx_template(instances, resolved.deployment.routing, nodes,
                                "trtllm-serve serve has no multi-replica router")
    text = launch_script(resolved, "trtllm", commands, notes, nodes)
    text = text.replace("\nMODEL=", '\nHERE="$(cd "$(dirname "$0")" && pwd)"\nMODEL=', 1)
    return [ExportFile("serve/trtllm/launch.sh", text, executable=True),
            ExportFile(f"serve/trtllm/{OPTIONS_FILE}", options_text(resolved))]


def _with_model_path(request: ServeExportRequest) -> ServeExportRequest:
    return replace(request, model_path=model_path(request))
