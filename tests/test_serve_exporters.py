"""Serving exports: every flag or key is one the engine accepts, memory knobs keep their
definitions, unsupported deployments are refused, golden files, valid bash, determinism.

Regenerate the golden files after an intended change: python -m pytest
tests/test_serve_exporters.py --update-golden (then read the diff).
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from sysplan import __version__
from sysplan.core.errors import InputError
from sysplan.costmodels.serving.deployment import Deployment, EngineKnobs, ReplicaLayout
from sysplan.exporters.base import ExportFile
from sysplan.exporters.serve_common import place, trtllm_free_memory_bytes
from sysplan.exporters.serving import (
    ACTIVATION_RESERVE_BYTES,
    SERVE_EXPORTERS,
    ServeExportRequest,
    default_model_path,
    serve_files,
    sglang_mem_fraction_static,
    trtllm_free_gpu_memory_fraction,
    vllm_gpu_memory_utilization,
)
from sysplan.hardware import load_cluster
from sysplan.models import resolve_model

GOLDEN = Path(__file__).parent / "golden" / "serve"
NAMES = Path(__file__).parent / "data" / "runtime-names"
ENGINE_LISTS = {"vllm": "vllm_serve.txt", "sglang": "sglang_server.txt",
                "trtllm": "trtllm_serve.txt"}
#: sglang-router flags, from sgl-project/sglang docs/advanced_features/router.md (Configuration
#: Reference) and the router's router_args.py (--prefill URL [BOOTSTRAP_PORT], --decode URL).
SGLANG_ROUTER_FLAGS = {"--worker-urls", "--policy", "--pd-disaggregation", "--prefill",
                       "--decode", "--host", "--port"}
#: vLLM's tests/v1/kv_connector/nixl_integration/toy_proxy_server.py parse_args().
VLLM_PROXY_FLAGS = {"--host", "--port", "--prefiller-hosts", "--prefiller-ports",
                    "--decoder-hosts", "--decoder-ports"}
#: TensorRT-LLM LLM API keys checked in tensorrt_llm/llmapi/llm_args.py.
TRTLLM_OPTION_KEYS = {"kv_cache_config.free_gpu_memory_fraction", "kv_cache_config.dtype",
                      "enable_chunked_prefill", "scheduler_config.capacity_scheduler_policy"}


@dataclass(frozen=True)
class ServeCase:
    """One deployment to export, and the engines that must accept it."""

    name: str
    deployment: Deployment
    accepted: frozenset[str] = frozenset(SERVE_EXPORTERS)
    cluster: str = "dgx-h100"
    kv_cache_bytes_per_gpu: float = 30e9
    weight_bytes_per_gpu: float = 35.3e9
    predicted: dict = field(default_factory=lambda: {"ttft_p90_s": 0.1873, "tpot_p90_s": 0.0312,
                                                     "max_rate_rps": 3.25,
                                                     "output_tokens_per_s": 1625.0})

    def __str__(self) -> str:
        return self.name

    def request(self) -> ServeExportRequest:
        model, _ = resolve_model("70b")
        cluster, _ = load_cluster(self.cluster)
        return ServeExportRequest(deployment=self.deployment, model=model, cluster=cluster,
                                  kv_cache_bytes_per_gpu=self.kv_cache_bytes_per_gpu,
                                  weight_bytes_per_gpu=self.weight_bytes_per_gpu,
                                  max_model_len=8192, predicted=self.predicted)


FP8 = ReplicaLayout(tp=2, weights_precision="fp8", kv_precision="fp8")
CASES = [
    ServeCase("llama70b-tp4-x2-round-robin",
              Deployment(replica=ReplicaLayout(tp=4), replicas=2, routing="round-robin")),
    ServeCase("llama70b-fp8-tp2-no-chunking",
              Deployment(replica=FP8, replicas=1,
                         engine=EngineKnobs(chunked_prefill=False, max_num_seqs=128)),
              weight_bytes_per_gpu=17.7e9, kv_cache_bytes_per_gpu=50e9),
    ServeCase("llama70b-tp4pp2-x2-least-loaded",
              Deployment(replica=ReplicaLayout(tp=4, pp=2), replicas=2),
              weight_bytes_per_gpu=17.7e9, kv_cache_bytes_per_gpu=55e9),
    ServeCase("llama70b-disaggregated-fp8",
              Deployment(disaggregated=True, prefill=FP8, prefill_replicas=2,
                         decode=FP8.model_copy(update={"tp": 4}), decode_replicas=3),
              accepted=frozenset({"vllm", "sglang"}), weight_bytes_per_gpu=17.7e9),
]
PAIRS = [(case, engine) for case in CASES for engine in SERVE_EXPORTERS]
ACCEPTED = [(case, engine) for case, engine in PAIRS if engine in case.accepted]


def _id(pair: tuple[ServeCase, str]) -> str:
    return f"{pair[0].name}-{pair[1]}"


def names(file: str) -> set[str]:
    lines = (NAMES / file).read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def normalised(text: str) -> str:
    return text.replace(f"sysplan {__version__}", "sysplan X.Y.Z")


def commands(script: str) -> list[list[str]]:
    """Every logical shell line as words (continuations joined, comments dropped)."""
    joined = re.sub(r"\\\n", " ", script)
    return [words for line in joined.splitlines()
            if (words := shlex.split(line, comments=True))]


def program(words: list[str]) -> tuple[str, list[str]]:
    """(which program, its flags) of a command line, skipping ``NAME=value`` prefixes."""
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        words = words[1:]
    text = " ".join(words[:3])
    flags = [w for w in words if w.startswith("--")]
    for key in ("vllm serve", "sglang.launch_server", "trtllm-serve serve",
                "sglang_router.launch_router", "toy_proxy_server.py"):
        if key in text:
            return key, flags
    return "", flags


# --- the contract ------------------------------------------------------------------------------


@pytest.mark.parametrize("pair", PAIRS, ids=_id)
def test_exporter_accepts_exactly_the_deployments_its_engine_runs(
        pair: tuple[ServeCase, str]) -> None:
    case, engine = pair
    if engine in case.accepted:
        assert SERVE_EXPORTERS[engine](case.request())
        return
    with pytest.raises(InputError, match=f"--export {engine}: disaggregated"):
        SERVE_EXPORTERS[engine](case.request())


@pytest.mark.parametrize("pair", ACCEPTED, ids=_id)
def test_files_say_where_they_came_from_and_are_deterministic(
        pair: tuple[ServeCase, str]) -> None:
    case, engine = pair
    files = SERVE_EXPORTERS[engine](case.request())
    again = SERVE_EXPORTERS[engine](case.request())
    assert [(f.path, f.content.encode()) for f in files] == [
        (f.path, f.content.encode()) for f in again]
    assert {f.path for f in files} >= {f"serve/{engine}/launch.sh"}
    for item in files:
        assert item.content.startswith(("#!/usr/bin/env bash\n# Written by sysplan",
                                        "# Written by sysplan")), item.path
        assert f"sysplan {__version__}" in item.content and case.cluster in item.content
        assert "ttft_p90_s=0.1873" in item.content and "Llama 3.1 70B" in item.content


@pytest.mark.parametrize("pair", ACCEPTED, ids=_id)
def test_golden_files(pair: tuple[ServeCase, str], golden) -> None:
    case, engine = pair
    for item in SERVE_EXPORTERS[engine](case.request()):
        golden(GOLDEN / case.name / item.path, normalised(item.content))


@pytest.mark.parametrize("pair", ACCEPTED, ids=_id)
def test_scripts_are_valid_bash(pair: tuple[ServeCase, str], tmp_path: Path) -> None:
    case, engine = pair
    for item in SERVE_EXPORTERS[engine](case.request()):
        if item.path.endswith(".sh"):
            assert item.executable and "set -euo pipefail" in item.content
            path = tmp_path / "launch.sh"
            path.write_text(item.content)
            checked = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True,
                                     check=False)
            assert checked.returncode == 0, checked.stderr


# --- names the engines accept ------------------------------------------------------------------


def _script(files: list[ExportFile]) -> str:
    return next(f.content for f in files if f.path.endswith("launch.sh"))


@pytest.mark.parametrize("pair", ACCEPTED, ids=_id)
def test_every_flag_is_one_the_engine_or_its_router_accepts(
        pair: tuple[ServeCase, str]) -> None:
    case, engine = pair
    accepted = {"vllm serve": names("vllm_serve.txt"),
                "sglang.launch_server": names("sglang_server.txt"),
                "trtllm-serve serve": names("trtllm_serve.txt"),
                "sglang_router.launch_router": SGLANG_ROUTER_FLAGS,
                "toy_proxy_server.py": VLLM_PROXY_FLAGS}
    servers = 0
    for words in commands(_script(SERVE_EXPORTERS[engine](case.request()))):
        which, flags = program(words)
        assert which or not flags, f"unclassified command {words}"
        if which:
            assert set(flags) - accepted[which] == set(), which
            servers += which in ("vllm serve", "sglang.launch_server", "trtllm-serve serve")
    assert servers >= 1


def test_the_name_lists_are_the_shared_ones() -> None:
    shared = Path("/work/shared/data/runtime-names")
    if not shared.exists():
        pytest.skip("the team's shared lists are not mounted here")
    for file in ENGINE_LISTS.values():
        assert (NAMES / file).read_text() == (shared / file).read_text(), file


@pytest.mark.parametrize("case", [c for c in CASES if "trtllm" in c.accepted], ids=str)
def test_trtllm_options_yaml_parses_and_uses_checked_keys(case: ServeCase) -> None:
    request = case.request()
    files = {f.path: f for f in SERVE_EXPORTERS["trtllm"](request)}
    options = yaml.safe_load(files["serve/trtllm/extra.yaml"].content)
    keys = {f"{key}.{inner}" if isinstance(value, dict) else key
            for key, value in options.items()
            for inner in (value if isinstance(value, dict) else [None])}
    assert keys - TRTLLM_OPTION_KEYS == set()
    assert options["kv_cache_config"]["free_gpu_memory_fraction"] == pytest.approx(
        trtllm_free_gpu_memory_fraction(request))
    assert options["scheduler_config"]["capacity_scheduler_policy"] == "GUARANTEED_NO_EVICT"
    assert options["enable_chunked_prefill"] is request.deployment.engine.chunked_prefill
    kv_fp8 = request.deployment.replica.kv_precision == "fp8"
    assert (options["kv_cache_config"].get("dtype") == "fp8") is kv_fp8
    assert "--extra_llm_api_options" in files["serve/trtllm/launch.sh"].content


# --- memory knobs ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
def test_memory_fractions_keep_their_definitions(case: ServeCase) -> None:
    request = case.request()
    memory = request.cluster.gpu.memory_bytes
    weights, kv = request.weight_bytes_per_gpu, request.kv_cache_bytes_per_gpu
    vllm = vllm_gpu_memory_utilization(request)
    assert weights + kv <= vllm * memory and vllm <= 0.98
    assert vllm == 0.98 or (vllm - 0.01) * memory < weights + kv + ACTIVATION_RESERVE_BYTES
    assert vllm == 0.98 or vllm * memory >= weights + kv + ACTIVATION_RESERVE_BYTES
    sglang = sglang_mem_fraction_static(request)
    assert (sglang - 0.01) * memory < weights + kv <= sglang * memory
    trtllm = trtllm_free_gpu_memory_fraction(request)
    free = memory - weights - ACTIVATION_RESERVE_BYTES
    assert free == trtllm_free_memory_bytes(request)
    assert (trtllm - 0.01) * free < kv <= trtllm * free <= free


@pytest.mark.parametrize("pair", ACCEPTED, ids=_id)
def test_scripts_carry_the_computed_fractions(pair: tuple[ServeCase, str]) -> None:
    case, engine = pair
    request = case.request()
    flag, value = {"vllm": ("--gpu-memory-utilization", vllm_gpu_memory_utilization),
                   "sglang": ("--mem-fraction-static", sglang_mem_fraction_static),
                   "trtllm": ("--kv_cache_free_gpu_memory_fraction",
                              trtllm_free_gpu_memory_fraction)}[engine]
    for words in commands(_script(SERVE_EXPORTERS[engine](request))):
        if flag in words:
            assert float(words[words.index(flag) + 1]) == value(request)


def test_a_kv_budget_that_does_not_fit_is_refused() -> None:
    case = ServeCase("too-big", Deployment(), kv_cache_bytes_per_gpu=70e9)
    for engine in SERVE_EXPORTERS:
        with pytest.raises(InputError, match=f"--export {engine}: .*lower the KV budget"):
            SERVE_EXPORTERS[engine](case.request())


# --- refusals and placement --------------------------------------------------------------------


@pytest.mark.parametrize("engine", list(SERVE_EXPORTERS))
def test_fp8_weights_are_refused_on_a100(engine: str) -> None:
    case = ServeCase("a100-fp8", Deployment(replica=ReplicaLayout(tp=4, weights_precision="fp8")),
                     cluster="dgx-a100", weight_bytes_per_gpu=17.7e9)
    with pytest.raises(InputError, match=f"--export {engine}: fp8 weights .*A100"):
        SERVE_EXPORTERS[engine](case.request())


def test_a_server_larger_than_a_node_is_refused() -> None:
    case = ServeCase("16-gpus", Deployment(replica=ReplicaLayout(tp=8, pp=2)))
    with pytest.raises(InputError, match="span nodes of 8"):
        serve_files(case.request(), ["sglang"])


def test_unknown_engine_is_refused() -> None:
    with pytest.raises(InputError, match="--export tgi: not accepted"):
        serve_files(CASES[0].request(), ["tgi"])


@pytest.mark.parametrize("case", CASES, ids=str)
def test_servers_get_their_own_gpus_and_ports(case: ServeCase) -> None:
    instances = place(case.request())
    assert len({i.port for i in instances}) == len(instances)
    seen = [(i.node, gpu) for i in instances for gpu in i.gpus]
    assert len(seen) == len(set(seen)) == case.deployment.num_gpus
    assert all(gpu < 8 for _, gpu in seen)


def test_vllm_uses_data_parallelism_on_one_node_and_a_proxy_template_when_disaggregated() -> None:
    one_node = _script(SERVE_EXPORTERS["vllm"](CASES[0].request()))
    assert "--data-parallel-size 2" in one_node and one_node.count("vllm serve") == 1
    two_nodes = _script(SERVE_EXPORTERS["vllm"](CASES[2].request()))
    assert "--data-parallel-size" not in two_nodes and "least_conn" in two_nodes
    disaggregated = _script(SERVE_EXPORTERS["vllm"](CASES[3].request()))
    assert disaggregated.count('"kv_role":"kv_producer"') == 2
    assert disaggregated.count('"kv_role":"kv_consumer"') == 3
    assert "TEMPLATE" in disaggregated and 'if [ "$NODE" = 1 ]' in disaggregated


def test_sglang_router_follows_the_simulated_routing() -> None:
    round_robin = _script(SERVE_EXPORTERS["sglang"](CASES[0].request()))
    assert "--worker-urls http://127.0.0.1:8100 http://127.0.0.1:8101" in round_robin
    assert "--policy round_robin" in round_robin
    disaggregated = _script(SERVE_EXPORTERS["sglang"](CASES[3].request()))
    assert "--pd-disaggregation" in disaggregated and "--policy power_of_two" in disaggregated
    assert '--prefill "http://${NODE0_HOST}:8101" 8999' in disaggregated
    single = _script(SERVE_EXPORTERS["sglang"](CASES[1].request()))
    assert "sglang_router" not in single and "--chunked-prefill-size -1" in single


def test_default_model_paths() -> None:
    assert default_model_path(resolve_model("70b")[0]) == "meta-llama/Llama-3.1-70B-Instruct"
    assert default_model_path(resolve_model("qwen3-8b")[0]) == "Qwen/Qwen3-8B"
    assert default_model_path(resolve_model("gpt3-175b")[0]) == "GPT-3 175B"
    trtllm = _script(SERVE_EXPORTERS["trtllm"](CASES[1].request()))
    assert "MODEL=${MODEL:-nvidia/Llama-3.1-70B-Instruct-FP8}" in trtllm
