"""vLLM 0.33.0: ``vllm serve`` per replica, data parallelism or a proxy in front.

Every flag is in tests/data/runtime-names/vllm_serve.txt (vLLM 0.33.0's parser). Replicas of a
pipeline-free layout that share one node become one server with ``--data-parallel-size``; vLLM
then balances requests across its engines by their queue lengths (least-loaded). Otherwise each
replica is its own server and the script carries an nginx template. Disaggregated prefill /
decode use ``--kv-transfer-config`` with the NixlConnector (kv_producer on prefill, kv_consumer
on decode; each server its own ``VLLM_NIXL_SIDE_CHANNEL_PORT``) and the toy proxy of vLLM's
tests/v1/kv_connector/nixl_integration/toy_proxy_server.py (``--prefiller-hosts/-ports``,
``--decoder-hosts/-ports``; round-robin only), written as a clearly marked template: vLLM ships
no production disaggregation router.
"""

from __future__ import annotations

import json

from sysplan.exporters.base import ExportFile
from sysplan.exporters.serve_common import (
    ROUTER_PORT,
    Command,
    Instance,
    ServeExportRequest,
    check_precision,
    host,
    launch_script,
    nginx_template,
    place,
    vllm_gpu_memory_utilization,
)

NIXL_SIDE_CHANNEL_PORT = 5600  # vLLM's default; each server on a host needs its own
PROXY_SCRIPT = "tests/v1/kv_connector/nixl_integration/toy_proxy_server.py"


def arguments(request: ServeExportRequest, instance: Instance, data_parallel: int = 1,
              port: int | None = None) -> list[str]:
    """``vllm serve`` arguments for one server (model first, as ``$MODEL``)."""
    layout, knobs = instance.layout, request.deployment.engine
    args = ["vllm", "serve", "$MODEL",
            "--tensor-parallel-size", str(layout.tp),
            "--pipeline-parallel-size", str(layout.pp)]
    if data_parallel > 1:
        args += ["--data-parallel-size", str(data_parallel)]
    args += ["--max-num-seqs", str(knobs.max_num_seqs),
             "--max-num-batched-tokens", str(knobs.max_num_batched_tokens),
             "--gpu-memory-utilization", f"{vllm_gpu_memory_utilization(request):.2f}",
             "--max-model-len", str(request.max_model_len),
             "--block-size", str(knobs.block_size)]
    args.append("--enable-chunked-prefill" if knobs.chunked_prefill
                else "--disable-chunked-prefill")
    if layout.kv_precision == "fp8":
        args += ["--kv-cache-dtype", "fp8"]
    if layout.weights_precision == "fp8":
        args += ["--quantization", "fp8"]
    if instance.role != "replica":
        role = "kv_producer" if instance.role == "prefill" else "kv_consumer"
        config = {"kv_connector": "NixlConnector", "kv_role": role}
        args += ["--kv-transfer-config", json.dumps(config, separators=(",", ":"))]
    args += ["--port", str(instance.port if port is None else port)]
    return args


def export(request: ServeExportRequest) -> list[ExportFile]:
    """``serve/vllm/launch.sh``."""
    check_precision(request, "vllm")
    instances = place(request)
    nodes = instances[-1].node + 1
    deployment = request.deployment
    if _data_parallel(instances):
        devices = ",".join(str(gpu) for i in instances for gpu in i.gpus)
        first = instances[0]
        commands = [Command(tuple(arguments(request, first, len(instances), ROUTER_PORT)),
                            (("CUDA_VISIBLE_DEVICES", devices),),
                            f"{len(instances)} replicas as vLLM data parallelism, GPUs {devices}, "
                            f"port {ROUTER_PORT}")]
        notes = [f"Routing: vLLM balances its {len(instances)} data-parallel engines by queue "
                 "length (least-loaded)" + ("; the simulation assumed round-robin."
                                            if deployment.routing == "round-robin" else ".")]
        return [_file(request, commands, notes, nodes)]
    commands = [_server(request, instance, nodes) for instance in instances]
    notes: list[str] = []
    if deployment.disaggregated:
        commands.append(_proxy(instances, nodes))
        notes = _proxy_notes(deployment.routing)
    elif len(instances) > 1:
        notes = nginx_template(instances, deployment.routing, nodes,
                               "vLLM has no router across separate servers")
    return [_file(request, commands, notes, nodes)]


def _data_parallel(instances: list[Instance]) -> bool:
    return (len(instances) > 1 and all(i.role == "replica" for i in instances)
            and instances[-1].node == 0 and instances[0].layout.pp == 1)


def _server(request: ServeExportRequest, instance: Instance, nodes: int) -> Command:
    environment = [("CUDA_VISIBLE_DEVICES", instance.devices)]
    if instance.role != "replica":
        environment.append(("VLLM_NIXL_SIDE_CHANNEL_PORT",
                            str(NIXL_SIDE_CHANNEL_PORT + 100 * instance.number)))
        if nodes > 1:
            environment.append(("VLLM_NIXL_SIDE_CHANNEL_HOST", host(instance.node, nodes)))
    return Command(tuple(arguments(request, instance)), tuple(environment),
                   f"{instance.role} {instance.index}: GPUs {instance.devices}, port "
                   f"{instance.port}", instance.node)


def _proxy(instances: list[Instance], nodes: int) -> Command:
    words = ["python", (f"${{VLLM_SOURCE:?set VLLM_SOURCE to a vLLM 0.33.0 checkout}}/"
             f"{PROXY_SCRIPT}"), "--host", "0.0.0.0", "--port", str(ROUTER_PORT)]
    for role, prefix in (("prefill", "--prefiller"), ("decode", "--decoder")):
        chosen = [i for i in instances if i.role == role]
        words += [f"{prefix}-hosts", *(host(i.node, nodes) for i in chosen)]
        words += [f"{prefix}-ports", *(str(i.port) for i in chosen)]
    return Command(tuple(words), (), "Router (TEMPLATE from vLLM's tests; see the header)")


def _proxy_notes(routing: str) -> list[str]:
    notes = ["Router: TEMPLATE. vLLM 0.33.0 ships no disaggregated router; the last command runs",
             f"the toy proxy from vLLM's source tree ({PROXY_SCRIPT}),",
             "which sends each request to a prefill server (max_tokens=1) and then to a decode",
             "server, both round-robin. Replace it with a production router (e.g. llm-d, Dynamo)."]
    if routing != "round-robin":
        notes.append(f"The simulation assumed {routing} routing; the toy proxy is round-robin.")
    return notes


def _file(request: ServeExportRequest, commands: list[Command], notes: list[str],
          nodes: int) -> ExportFile:
    text = launch_script(request, "vllm", commands, notes, nodes)
    return ExportFile("serve/vllm/launch.sh", text, executable=True)
