"""What every serving export shares: the request, GPU placement, memory knobs, script text.

A serving deployment (``costmodels.serving.deployment.Deployment``) becomes one ``launch.sh`` per
engine. The script starts one server per replica (or per prefill / decode instance) on its own
GPUs (``CUDA_VISIBLE_DEVICES``) and port, packed into nodes first-fit in deployment order, and
the router the simulation assumed. A deployment on several nodes gets one script that is run on
every node with the node's index (``launch.sh 1``); node 0 also starts the router.

The one KV budget (``kv_cache_bytes_per_gpu``) is translated into each engine's memory knob here,
each rounded *up* to 0.01 so the engine reserves at least the budget (notes §4.1, issue #6):

* vLLM ``gpu_memory_utilization`` = (weights + KV + activation reserve) / GPU memory;
* SGLang ``mem_fraction_static`` = (weights + KV pool) / GPU memory;
* TensorRT-LLM ``free_gpu_memory_fraction`` = KV / (GPU memory - weights - activation reserve),
  the share of what is free once the weights are loaded and the activations profiled.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Literal

from sysplan.core.errors import InputError
from sysplan.core.units import GIB
from sysplan.core.version import __version__
from sysplan.costmodels.serving.deployment import Deployment, ReplicaLayout
from sysplan.hardware.types import Cluster
from sysplan.models.spec import ModelSpec

#: Engine release each export targets (the runtime-name lists in tests/data/runtime-names).
ENGINE_VERSIONS = {"vllm": "vLLM 0.33.0", "sglang": "SGLang 0.5.23",
                   "trtllm": "TensorRT-LLM 4c05a748"}
#: Activations, CUDA graphs, NCCL buffers and the CUDA context per GPU: the 4 GB "activations +
#: other" of the worked KV-capacity example in notes §4.1.
ACTIVATION_RESERVE_BYTES = 4e9
#: Highest memory fraction written (vLLM's auto_tune starts its search at 0.98, notes §3.9).
MAX_FRACTION = 0.98
FIRST_SERVER_PORT = 8100
ROUTER_PORT = 8000

#: Chat checkpoints served for catalog models (the catalog names the base model's config).
HF_CHECKPOINTS = {
    "Llama 3 8B": "meta-llama/Meta-Llama-3-8B-Instruct",
    "Llama 3 70B": "meta-llama/Meta-Llama-3-70B-Instruct",
    "Llama 3.1 8B": "meta-llama/Llama-3.1-8B-Instruct",
    "Llama 3.1 70B": "meta-llama/Llama-3.1-70B-Instruct",
    "Llama 3.1 405B": "meta-llama/Llama-3.1-405B-Instruct",
    "Mixtral 8x7B": "mistralai/Mixtral-8x7B-Instruct-v0.1",
    "Mixtral 8x22B": "mistralai/Mixtral-8x22B-Instruct-v0.1",
}


def default_model_path(model: ModelSpec) -> str:
    """The checkpoint to serve: a known chat checkpoint, else the Hugging Face repository the
    catalog read the architecture from, else the model's name."""
    if model.name in HF_CHECKPOINTS:
        return HF_CHECKPOINTS[model.name]
    found = re.match(r"huggingface\.co/([\w.-]+/[\w.-]+)", model.source)
    return found.group(1) if found else model.name


@dataclass(frozen=True, kw_only=True)
class ServeExportRequest:
    """A serving deployment with everything an engine export needs (SI units)."""

    deployment: Deployment
    model: ModelSpec
    cluster: Cluster
    model_path: str = ""  # Hugging Face id or local path; "" picks default_model_path(model)
    kv_cache_bytes_per_gpu: float
    weight_bytes_per_gpu: float
    max_model_len: int
    #: e.g. ttft_p90_s, max_rate_rps; None where the simulation has no value (a metric of
    #: no finished request, a TPOT of one-token outputs)
    predicted: dict[str, float | None] = field(default_factory=dict)
    sysplan_version: str = __version__

    def __post_init__(self) -> None:
        if not self.model_path:
            object.__setattr__(self, "model_path", default_model_path(self.model))


@dataclass(frozen=True)
class Instance:
    """One engine server: its role, layout, node, GPUs and port."""

    role: Literal["replica", "prefill", "decode"]
    index: int  # within its role
    number: int  # across the deployment (0, 1, ...), for unique side ports
    layout: ReplicaLayout
    node: int
    gpus: tuple[int, ...]
    port: int

    @property
    def devices(self) -> str:
        """``CUDA_VISIBLE_DEVICES`` value."""
        return ",".join(str(gpu) for gpu in self.gpus)


def place(request: ServeExportRequest) -> list[Instance]:
    """Servers in deployment order, packed first-fit into nodes; InputError for a server
    larger than a node (multi-node replicas are not exported)."""
    deployment, per_node = request.deployment, request.cluster.gpus_per_node
    if deployment.disaggregated:
        groups = [("prefill", deployment.prefill, deployment.prefill_replicas),
                  ("decode", deployment.decode, deployment.decode_replicas)]
    else:
        groups = [("replica", deployment.replica, deployment.replicas)]
    instances: list[Instance] = []
    node, used = 0, 0
    for role, layout, count in groups:
        if layout.gpus > per_node:
            raise InputError(
                f"{role} layout tp={layout.tp} pp={layout.pp}: {layout.gpus} GPUs span nodes of "
                f"{per_node} on {request.cluster.name}; multi-node servers are not exported "
                "(choose tp*pp <= GPUs per node)")
        for index in range(count):
            if used + layout.gpus > per_node:
                node, used = node + 1, 0
            gpus = tuple(range(used, used + layout.gpus))
            used += layout.gpus
            number = len(instances)
            instances.append(Instance(role, index, number, layout, node, gpus,
                                      FIRST_SERVER_PORT + number))
    return instances


def check_precision(request: ServeExportRequest, engine: str) -> None:
    """InputError for fp8 weights on a GPU without fp8 tensor cores."""
    layouts = _layouts(request.deployment)
    gpu = request.cluster.gpu
    if any(layout.weights_precision == "fp8" for layout in layouts) and "fp8" not in gpu.peak_flops:
        raise InputError(f"--export {engine}: fp8 weights need fp8 tensor cores; {gpu.name} lists "
                         f"none (peaks: {', '.join(sorted(gpu.peak_flops))}); use bf16 weights")


def _layouts(deployment: Deployment) -> list[ReplicaLayout]:
    if deployment.disaggregated:
        return [deployment.prefill, deployment.decode]
    return [deployment.replica]


# --- memory knobs -----------------------------------------------------------------------------


def round_up_fraction(needed_bytes: float, of_bytes: float) -> float:
    """needed/of rounded up to 0.01, so that fraction * of >= needed."""
    fraction = math.ceil(needed_bytes / of_bytes * 100) / 100
    while fraction * of_bytes < needed_bytes:
        fraction = round(fraction + 0.01, 2)
    return fraction


def _check_fits(engine: str, knob: str, fraction: float, needed: str) -> float:
    if fraction > MAX_FRACTION:
        raise InputError(f"--export {engine}: {knob} would be {fraction:.2f} ({needed}); more "
                         f"than {MAX_FRACTION} of the GPU, lower the KV budget")
    return fraction


def vllm_gpu_memory_utilization(request: ServeExportRequest) -> float:
    """(weights + KV + ACTIVATION_RESERVE_BYTES) / GPU memory, rounded up, at most 0.98; the
    reserve is squeezed (never the budget) when the sum exceeds 0.98."""
    memory = request.cluster.gpu.memory_bytes
    static = request.weight_bytes_per_gpu + request.kv_cache_bytes_per_gpu
    _check_fits("vllm", "gpu_memory_utilization", round_up_fraction(static, memory),
                "weights + KV")
    return min(round_up_fraction(static + ACTIVATION_RESERVE_BYTES, memory), MAX_FRACTION)


def sglang_mem_fraction_static(request: ServeExportRequest) -> float:
    """(weights + KV pool) / GPU memory, rounded up."""
    static = request.weight_bytes_per_gpu + request.kv_cache_bytes_per_gpu
    return _check_fits("sglang", "mem_fraction_static",
                       round_up_fraction(static, request.cluster.gpu.memory_bytes),
                       "weights + KV")


def trtllm_free_memory_bytes(request: ServeExportRequest) -> float:
    """What TensorRT-LLM finds free after loading weights and profiling activations."""
    return (request.cluster.gpu.memory_bytes - request.weight_bytes_per_gpu
            - ACTIVATION_RESERVE_BYTES)


def trtllm_free_gpu_memory_fraction(request: ServeExportRequest) -> float:
    """KV / (GPU memory - weights - activation reserve), rounded up."""
    free = trtllm_free_memory_bytes(request)
    if free <= 0:
        raise InputError("--export trtllm: the weights and activation reserve fill the GPU")
    return _check_fits("trtllm", "free_gpu_memory_fraction",
                       round_up_fraction(request.kv_cache_bytes_per_gpu, free),
                       "KV / memory free after weights")


# --- provenance -------------------------------------------------------------------------------


def layout_text(layout: ReplicaLayout) -> str:
    return (f"tp={layout.tp} pp={layout.pp} weights={layout.weights_precision} "
            f"kv={layout.kv_precision}")


def deployment_text(deployment: Deployment) -> str:
    """``2 x (tp=4 ...)`` or ``prefill 1 x (...) + decode 2 x (...)``, with the routing."""
    if deployment.disaggregated:
        shape = (f"disaggregated: prefill {deployment.prefill_replicas} x "
                 f"({layout_text(deployment.prefill)}) + decode {deployment.decode_replicas} x "
                 f"({layout_text(deployment.decode)})")
    else:
        shape = f"aggregated: {deployment.replicas} x ({layout_text(deployment.replica)})"
    return f"{shape}, routing {deployment.routing}"


def serve_provenance(request: ServeExportRequest, engine: str) -> dict[str, Any]:
    """Where a serving export came from and what sysplan predicted (SI units)."""
    knobs = request.deployment.engine
    return {
        "sysplan_version": request.sysplan_version,
        "engine": engine,
        "engine_version": ENGINE_VERSIONS[engine],
        "model": request.model.name,
        "model_path": request.model_path,
        "cluster": request.cluster.name,
        "num_gpus": request.deployment.num_gpus,
        "deployment": request.deployment.model_dump(mode="json"),
        "simulated_engine": knobs.engine,
        "kv_cache_bytes_per_gpu": request.kv_cache_bytes_per_gpu,
        "weight_bytes_per_gpu": request.weight_bytes_per_gpu,
        "max_model_len": request.max_model_len,
        "predicted": dict(sorted(request.predicted.items())),
    }


def serve_provenance_lines(request: ServeExportRequest, engine: str) -> list[str]:
    """The same facts as comment text (no comment marker)."""
    info, knobs = serve_provenance(request, engine), request.deployment.engine
    predicted = " ".join(f"{key}={_number(value)}" for key, value in info["predicted"].items())
    return [
        f"Written by sysplan {info['sysplan_version']} for {info['engine_version']}.",
        (f"Serving {info['model']} ({info['model_path']}) on {info['cluster']}, "
         f"{info['num_gpus']} GPUs, max_model_len {request.max_model_len}."),
        f"Deployment: {deployment_text(request.deployment)}.",
        (f"Simulated {knobs.engine} scheduler: max_num_seqs={knobs.max_num_seqs} "
         f"max_num_batched_tokens={knobs.max_num_batched_tokens} "
         f"chunked_prefill={int(knobs.chunked_prefill)} block_size={knobs.block_size}."),
        (f"Memory per GPU: weights {request.weight_bytes_per_gpu / GIB:.2f} GiB + KV cache "
         f"{request.kv_cache_bytes_per_gpu / GIB:.2f} GiB of "
         f"{request.cluster.gpu.memory_bytes / GIB:.0f} GiB (activation reserve "
         f"{ACTIVATION_RESERVE_BYTES / 1e9:.0f} GB)."),
        f"Predicted: {predicted or 'nothing recorded'}.",
    ]


def _number(value: float | None) -> str:
    """A predicted value in 4 significant digits, or "unknown" for a missing one."""
    return "unknown" if value is None or not math.isfinite(value) else f"{value:.4g}"


def serve_comment_block(request: ServeExportRequest, engine: str, marker: str = "#") -> str:
    return "".join(f"{marker} {line}\n" for line in serve_provenance_lines(request, engine))


# --- script text ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One process: environment, words (``$VAR`` words stay live), why, node, background."""

    words: tuple[str, ...]
    environment: tuple[tuple[str, str], ...] = ()
    comment: str = ""
    node: int = 0


def quote(word: str) -> str:
    """Shell-quote a word; words with ``$VAR`` references stay live inside double quotes."""
    return f'"{word}"' if "$" in word else shlex.quote(word)


def command_text(command: Command) -> list[str]:
    """``ENV=.. program args \\`` then one ``--flag values`` group per line, in background."""
    groups: list[list[str]] = []
    for word in command.words:
        if word.startswith("--") or not groups:
            groups.append([word])
        else:
            groups[-1].append(word)
    head = [f"{name}={quote(value)}" for name, value in command.environment]
    rendered = [" ".join(quote(word) for word in group) for group in groups]
    lines = [" ".join([*head, rendered[0]])] + [f"  {text}" for text in rendered[1:]]
    lines = [f"{line} \\" for line in lines[:-1]] + [f"{lines[-1]} &"]
    return ([f"# {command.comment}"] if command.comment else []) + lines


def host(instance_node: int, nodes: int) -> str:
    """Address the router uses for a server on ``instance_node``."""
    return f"${{NODE{instance_node}_HOST}}" if nodes > 1 else "127.0.0.1"


def launch_script(request: ServeExportRequest, engine: str, commands: list[Command],
                  notes: list[str], nodes: int) -> str:
    """The bash script: provenance, the model, then each node's servers (and node 0's router),
    each started in the background, and ``wait``."""
    lines = ["#!/usr/bin/env bash", *serve_comment_block(request, engine).splitlines()]
    lines += [f"# {note}" if note else "#" for note in notes]
    lines += ["", "set -euo pipefail", ""]
    lines.append(f"MODEL=${{MODEL:-{shlex.quote(request.model_path)}}}")
    if nodes > 1:
        lines += [
            "",
            f"# {nodes} nodes: run `launch.sh NODE` on each (NODE = 0..{nodes - 1}) with every",
            "# node's address exported as NODE<k>_HOST; node 0 also starts the router.",
            "NODE=${1:-0}",
        ]
        lines += [f': "${{NODE{k}_HOST:?export NODE{k}_HOST=<address of node {k}>}}"'
                  for k in range(nodes)]
    for node in range(nodes):
        block = [line for command in commands if command.node == node
                 for line in ["", *command_text(command)]]
        if nodes > 1:
            lines += ["", f'if [ "$NODE" = {node} ]; then']
            lines += [f"  {line}" if line else "" for line in block[1:]]
            lines.append("fi")
        else:
            lines += block
    lines += ["", "wait"]
    return "\n".join(lines) + "\n"


def nginx_template(instances: list[Instance], routing: str, nodes: int, why: str) -> list[str]:
    """Comment lines: an nginx front end with the simulated policy (template, not started)."""
    policy = "least_conn; " if routing == "least-loaded" else ""
    servers = " ".join(f"server {host(i.node, nodes)}:{i.port};" for i in instances)
    return [
        f"Router (TEMPLATE, not started): {why}.",
        (f"Put a proxy in front with the simulated {routing} policy, e.g. nginx "
        f"({'least_conn' if policy else 'its default round-robin'}):"),
        f"  upstream sysplan {{ {policy}{servers} }}",
        (f"  server {{ listen {ROUTER_PORT}; location / {{ proxy_pass http://sysplan; "
        "proxy_buffering off; } }"),
    ]

