"""Exporters: one contract for all (refuse what the runtime lacks, say where a file came
from, be deterministic), golden files, and every flag or key checked against the runtime's list.

Regenerate the golden files after an intended change: python -m pytest tests/test_exporters.py
--update-golden (then read the diff).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from export_cases import CASES, Case

from sysplan import __version__
from sysplan.core.errors import InputError
from sysplan.exporters import EXPORTERS, deepspeed, megatron, torchtitan
from sysplan.exporters.base import ExportFile
from sysplan.models import resolve_model
from sysplan.planners.runtimes import RUNTIMES

GOLDEN = Path(__file__).parent / "golden" / "exports"
NAMES = Path(__file__).parent / "data" / "runtime-names"
PAIRS = [(case, target) for case in CASES for target in EXPORTERS]


def names(file: str) -> set[str]:
    """One accepted name per line of a runtime list (``#`` lines are comments)."""
    lines = (NAMES / file).read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def normalised(text: str) -> str:
    """Golden-file form: the sysplan version is volatile."""
    return text.replace(f"sysplan {__version__}", "sysplan X.Y.Z").replace(
        f'"sysplan_version": "{__version__}"', '"sysplan_version": "X.Y.Z"')


def _id(pair: tuple[Case, str]) -> str:
    return f"{pair[0].name}-{pair[1]}"


# --- the shared contract ----------------------------------------------------------------------


@pytest.mark.parametrize("pair", PAIRS, ids=_id)
def test_exporter_accepts_exactly_what_its_runtime_runs(pair: tuple[Case, str]) -> None:
    case, target = pair
    request = case.request()
    if target in case.accepted:
        assert EXPORTERS[target](request)
        return
    with pytest.raises(InputError, match=f"--to {target}: ") as error:
        EXPORTERS[target](request)
    missing = RUNTIMES[target].unsupported(request.plan.parallel, request.model, request.job)
    assert all(feature in str(error.value) for feature in missing)


@pytest.mark.parametrize("pair", [p for p in PAIRS if p[1] in p[0].accepted], ids=_id)
def test_every_file_says_where_it_came_from_and_is_deterministic(
        pair: tuple[Case, str]) -> None:
    case, target = pair
    files = EXPORTERS[target](case.request())
    assert files == EXPORTERS[target](case.request())
    step = f"{case.request().plan.estimate.step_time_s:.3f} s"
    for item in files:
        if item.path.endswith(".json"):
            stamp = json.loads(item.content)["_sysplan"]
            assert stamp["sysplan_version"] == __version__ and stamp["predicted"]["step_time_s"]
        else:
            assert f"# Written by sysplan {__version__}" in item.content, item.path
            assert step in item.content and case.cluster in item.content


@pytest.mark.parametrize("pair", [p for p in PAIRS if p[1] in p[0].accepted], ids=_id)
def test_golden_files(pair: tuple[Case, str], golden) -> None:
    case, target = pair
    for item in EXPORTERS[target](case.request()):
        golden(GOLDEN / case.name / item.path, normalised(item.content))


# --- names the runtimes accept ---------------------------------------------------------------


def _script_flags(item: ExportFile) -> list[str]:
    """Flags in a launch script's ARGS array and its defaults (bash words starting with --)."""
    block = item.content.split("ARGS=(", 1)[1].split("\n)", 1)[0]
    defaults = re.findall(r"\$\{[A-Z_]+:-(--[a-z-]+)", item.content)
    return [w for w in shlex.split(block, comments=True) if w.startswith("--")] + defaults


@pytest.mark.parametrize("case", [c for c in CASES if "megatron" in c.accepted], ids=str)
def test_megatron_flags_are_megatron_lm_flags(case: Case) -> None:
    (script,) = megatron.export(case.request())
    flags = _script_flags(script)
    assert "--tensor-model-parallel-size" in flags
    assert set(flags) - names("megatron.txt") == set()


@pytest.mark.parametrize("case", [c for c in CASES if "deepspeed" in c.accepted], ids=str)
def test_deepspeed_keys_and_megatron_deepspeed_flags(case: Case) -> None:
    config_file, script = deepspeed.export(case.request())
    config = json.loads(config_file.content)
    accepted = names("deepspeed_config_keys.txt")
    assert set(config) - {"_sysplan"} - accepted == set()
    zero = {f"zero_optimization.{key}" for key in config["zero_optimization"]}
    assert zero - accepted == set()
    assert set(_script_flags(script)) - names("megatron_deepspeed.txt") == set()


@pytest.mark.parametrize("case", [c for c in CASES if "torchtitan" in c.accepted], ids=str)
def test_torchtitan_fields_are_torchtitan_fields(case: Case) -> None:
    request = case.request()
    fields = {f"parallelism.{key}" for key in torchtitan.parallelism(request.plan.parallel,
                                                                      request.model)}
    assert fields - names("torchtitan_job_config.txt") == set()


def test_torchtitan_toml_keys_are_v0_2_2_keys() -> None:
    case = Case("toml", "70b", "dgx-h100", {"tp": 8, "sequence_parallel": True, "pp": 2, "dp": 4,
                "zero": 3, "global_batch": 64, "recompute": "full", "schedule": "1f1b"},
                frozenset({"torchtitan"}))
    (config, _) = torchtitan.export(case.request("toml"))
    section, keys = "", set()
    for line in config.content.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and not line.startswith("#"):
            keys.add(f"{section}.{line.split('=')[0].strip()}")
    assert "model.flavor" in keys and 'flavor = "70B"' in config.content
    assert keys - {"job.dump_folder", "job.description"} - names(
        "torchtitan_v0.2.2_toml_keys.txt") == set()


def test_torchtitan_toml_refuses_a_model_that_is_not_a_shipped_flavor() -> None:
    case = next(c for c in CASES if c.name == "llama8b-uneven-middle")
    with pytest.raises(InputError, match="--torchtitan-format python"):
        torchtitan.export(case.request("toml"))


# --- pipeline splits and scripts -------------------------------------------------------------


def _flag_value(arguments: list[str], flag: str) -> str:
    return arguments[arguments.index(flag) + 1]


def test_megatron_uneven_first_last_uses_the_first_last_flags() -> None:
    request = next(c for c in CASES if c.name == "llama70b-uneven-first-last").request()
    args = megatron.arguments(request)
    assert _flag_value(args, "--decoder-first-pipeline-num-layers") == "19"
    assert _flag_value(args, "--decoder-last-pipeline-num-layers") == "19"
    assert _flag_value(args, "--recompute-method") == "block"
    assert _flag_value(args, "--recompute-num-layers") == "5"


def test_megatron_layout_string_places_every_layer_once() -> None:
    request = next(c for c in CASES if c.name == "deepseek-v3-mla-mtp").request()
    layout = _flag_value(megatron.arguments(request), "--pipeline-model-parallel-layout")
    chunks = layout.split("|")
    assert len(chunks) == 16 and chunks[0].startswith("E") and chunks[-1].endswith("mL")
    assert [c.count("t") for c in chunks] == list(request.plan.parallel.stage_layers)


def test_megatron_writes_the_window_and_keeps_the_expert_biases_sysplan_priced() -> None:
    """GPT-OSS: a 128-token window on every second layer (one full layer in two), biased
    experts, so Megatron's linear biases stay on, and the clamped gate; Megatron-DeepSpeed and torchtitan refuse a
    window they have no flag for; an uneven split of windowed layers is written as a
    pattern, windowed layers first."""
    request = next(c for c in CASES if c.name == "gpt-oss-window-expert-bias").request()
    args = megatron.arguments(request)
    assert _flag_value(args, "--window-size") == "128,0"
    assert _flag_value(args, "--window-attn-skip-freq") == "2"
    assert "--disable-bias-linear" not in args
    assert "--swiglu" not in args and "--quick-geglu" in args  # the clamped gate it priced
    assert _flag_value(args, "--glu-linear-offset") == "1.0"
    assert _flag_value(args, "--activation-func-clamp-value") == "7"
    llama = resolve_model("8b")[0]  # 32 layers
    assert "--window-attn-skip-freq" not in megatron.model_arguments(
        llama.model_copy(update={"sliding_window": 4096, "sliding_window_layers": 32}),
        request.job)
    every_fourth = megatron.model_arguments(
        llama.model_copy(update={"sliding_window": 4096, "sliding_window_layers": 24}),
        request.job)
    assert _flag_value(every_fourth, "--window-attn-skip-freq") == "4"
    windowed = llama.model_copy(update={"sliding_window": 4096, "sliding_window_layers": 20})
    pattern = _flag_value(megatron.model_arguments(windowed, request.job),
                          "--window-attn-skip-freq")
    assert pattern == "[" + ",".join(["1"] * 20 + ["0"] * 12) + "]"
    for runtime in (RUNTIMES["deepspeed"], RUNTIMES["torchtitan"]):
        with pytest.raises(InputError, match="sliding-window|no sliding window"):
            runtime.check_model(windowed)


def test_megatron_interleaving_gives_layers_per_virtual_stage() -> None:
    request = next(c for c in CASES if c.name == "llama70b-frontier-interleaved").request()
    args = megatron.arguments(request)
    assert _flag_value(args, "--num-layers-per-virtual-pipeline-stage") == "5"  # 80 / (8 x 2)


@pytest.mark.parametrize("pair", [p for p in PAIRS if p[1] in p[0].accepted], ids=_id)
def test_launch_scripts_are_valid_bash(pair: tuple[Case, str], tmp_path: Path) -> None:
    case, target = pair
    for item in EXPORTERS[target](case.request()):
        if item.path.endswith(".sh"):
            path = tmp_path / "train.sh"
            path.write_text(item.content)
            checked = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True,
                                     check=False)
            assert checked.returncode == 0, checked.stderr


def test_multi_node_scripts_use_srun_and_frontier_adds_its_environment() -> None:
    frontier = next(c for c in CASES if c.name == "llama70b-frontier-interleaved").request()
    (script,) = megatron.export(frontier)
    assert "#SBATCH --nodes=128" in script.content and "--gpu-bind=closest" in script.content
    assert "NCCL_SOCKET_IFNAME=hsn0" in script.content and "rccl-net-plugin" in script.content
    one_node = next(c for c in CASES if c.name == "llama8b-one-node-zero3").request()
    (script,) = megatron.export(one_node)
    assert "torchrun --standalone --nproc-per-node 8" in script.content
    assert "srun" not in script.content and "SBATCH" not in script.content
