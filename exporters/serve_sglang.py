"""SGLang 0.5.23: ``python -m sglang.launch_server`` per replica and the SGLang router.

Every server flag is in tests/data/runtime-names/sglang_server.txt. The router is the separate
``sglang-router`` package (SGLang Model Gateway); its flags were checked against
docs/advanced_features/router.md and pd_disaggregation.md of sgl-project/sglang and its
``router_args.py`` (``--worker-urls``, ``--policy random|round_robin|cache_aware|power_of_two``,
``--pd-disaggregation``, repeatable ``--prefill URL [BOOTSTRAP_PORT]`` and ``--decode URL``).
Round-robin routing maps to ``round_robin``; least-loaded to ``power_of_two`` (the lighter of two
sampled workers), the closest policy the router has. Disaggregated servers use
``--disaggregation-mode prefill|decode`` with the Mooncake transfer backend (SGLang's default;
``pip install mooncake-transfer-engine``), each prefill server its own bootstrap port.
"""

from __future__ import annotations

from sysplan.exporters.base import ExportFile
from sysplan.exporters.serve_common import (
    ROUTER_PORT,
    Command,
    Instance,
    ServeExportRequest,
    check_precision,
    host,
    launch_script,
    place,
    sglang_mem_fraction_static,
)

BOOTSTRAP_PORT = 8998  # SGLang's default --disaggregation-bootstrap-port
TRANSFER_BACKEND = "mooncake"
POLICIES = {"round-robin": "round_robin", "least-loaded": "power_of_two"}


def arguments(request: ServeExportRequest, instance: Instance) -> list[str]:
    """``sglang.launch_server`` arguments for one server (model as ``$MODEL``)."""
    layout, knobs = instance.layout, request.deployment.engine
    chunk = knobs.max_num_batched_tokens if knobs.chunked_prefill else -1
    args = ["python", "-m", "sglang.launch_server", "--model-path", "$MODEL",
            "--tp-size", str(layout.tp), "--pp-size", str(layout.pp),
            "--max-running-requests", str(knobs.max_num_seqs),
            "--chunked-prefill-size", str(chunk),
            "--mem-fraction-static", f"{sglang_mem_fraction_static(request):.2f}",
            "--context-length", str(request.max_model_len)]
    if layout.kv_precision == "fp8":
        args += ["--kv-cache-dtype", "fp8_e4m3"]
    if layout.weights_precision == "fp8":
        args += ["--quantization", "fp8"]
    if instance.role != "replica":
        args += ["--disaggregation-mode", instance.role,
                 "--disaggregation-transfer-backend", TRANSFER_BACKEND]
    if instance.role == "prefill":
        args += ["--disaggregation-bootstrap-port", str(BOOTSTRAP_PORT + instance.index)]
    args += ["--host", "0.0.0.0", "--port", str(instance.port)]
    return args


def router_arguments(request: ServeExportRequest, instances: list[Instance],
                     nodes: int) -> list[str]:
    """``sglang_router.launch_router`` arguments ([] for a single aggregated server)."""
    deployment = request.deployment
    if not deployment.disaggregated and len(instances) == 1:
        return []
    args = ["python", "-m", "sglang_router.launch_router"]
    if deployment.disaggregated:
        args.append("--pd-disaggregation")
        for i in instances:
            url = f"http://{host(i.node, nodes)}:{i.port}"
            args += (["--prefill", url, str(BOOTSTRAP_PORT + i.index)] if i.role == "prefill"
                     else ["--decode", url])
    else:
        args += ["--worker-urls",
                 *(f"http://{host(i.node, nodes)}:{i.port}" for i in instances)]
    return args + ["--policy", POLICIES[deployment.routing], "--host", "0.0.0.0",
                   "--port", str(ROUTER_PORT)]


def export(request: ServeExportRequest) -> list[ExportFile]:
    """``serve/sglang/launch.sh``."""
    check_precision(request, "sglang")
    instances = place(request)
    nodes = instances[-1].node + 1
    commands = [Command(tuple(arguments(request, i)), (("CUDA_VISIBLE_DEVICES", i.devices),),
                        f"{i.role} {i.index}: GPUs {i.devices}, port {i.port}", i.node)
                for i in instances]
    router = router_arguments(request, instances, nodes)
    notes: list[str] = []
    if router:
        policy = POLICIES[request.deployment.routing]
        commands.append(Command(tuple(router), (), f"Router on port {ROUTER_PORT} "
                                "(pip install sglang-router)"))
        notes.append(f"Routing: sglang-router --policy {policy} for the simulated "
                     f"{request.deployment.routing} routing"
                     + (" (the lighter of two sampled workers)." if policy == "power_of_two"
                        else "."))
    text = launch_script(request, "sglang", commands, notes, nodes)
    return [ExportFile("serve/sglang/launch.sh", text, executable=True)]
