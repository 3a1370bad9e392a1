"""Our exports loaded by the runtimes' own code: DeepSpeed's config class and torchtitan's
ConfigManager (both install on a CPU machine beside torch 2.13.0).

Without those packages the tests skip, except where SYSPLAN_REQUIRE_RUNTIMES=1 (CI sets it),
where a missing package fails the run.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
from pathlib import Path
from types import ModuleType
from unittest import mock

import pytest
from export_cases import CASES, Case

from sysplan.exporters import deepspeed, torchtitan
from sysplan.exporters.base import write_files
from sysplan.exporters.pipeline import chunk_layers


def runtime_package(name: str) -> ModuleType:
    """Import ``name`` or skip (fail when SYSPLAN_REQUIRE_RUNTIMES=1)."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        if os.environ.get("SYSPLAN_REQUIRE_RUNTIMES") == "1":
            raise
        pytest.skip(f"{name} is not installed ({error})")


class DataParallelGroup:
    """The one thing DeepSpeedConfig asks a Megatron-style mpu: the data-parallel size."""

    def __init__(self, size: int) -> None:
        self.size = size

    def get_data_parallel_world_size(self) -> int:
        return self.size


@pytest.mark.parametrize("case", [c for c in CASES if "deepspeed" in c.accepted], ids=str)
def test_deepspeed_reads_our_config(case: Case) -> None:
    runtime_package("deepspeed")
    from deepspeed.runtime.config import DeepSpeedConfig

    request = case.request()
    config = json.loads(deepspeed.export(request)[0].content)
    p = request.plan.parallel
    # without a process group deepspeed.comm.get_rank raises before the mpu is read and
    # DeepSpeedConfig silently falls back to one rank (deepspeed/runtime/config.py)
    with mock.patch("deepspeed.comm.get_rank", return_value=0):
        parsed = DeepSpeedConfig(config, mpu=DataParallelGroup(p.dp))
    assert parsed.world_size == p.dp
    assert parsed.train_batch_size == p.global_batch
    assert parsed.train_micro_batch_size_per_gpu == p.micro_batch
    assert parsed.gradient_accumulation_steps == p.num_microbatches
    assert parsed.zero_optimization_stage == p.zero
    assert parsed.bfloat16_config.enabled == (request.job.precision != "fp16")


def test_deepspeed_refuses_a_misspelt_zero_key() -> None:
    runtime_package("deepspeed")
    from deepspeed.runtime.config import DeepSpeedConfig

    config = json.loads(deepspeed.export(CASES[0].request())[0].content)
    config["zero_optimization"]["overlap_com"] = True
    with mock.patch("deepspeed.comm.get_rank", return_value=0), pytest.raises(Exception,
                                                                                match="overlap_com"):
        DeepSpeedConfig(config, mpu=DataParallelGroup(8))


@pytest.fixture
def load_torchtitan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Load an exported module the way ``-m torchtitan.train --module --config`` does."""
    runtime_package("torchtitan.config")
    from torchtitan.config import ConfigManager

    def load(case: Case):
        if case.precision == "fp8":
            runtime_package("torchao")
            # the float8 converter checks for an SM89+ GPU when the config is built
            monkeypatch.setattr("torchtitan.components.quantization.float8.has_cuda_capability",
                                lambda major, minor: True)
        write_files(torchtitan.export(case.request()), tmp_path)
        monkeypatch.syspath_prepend(str(tmp_path / "torchtitan"))
        sys.modules.pop(torchtitan.MODULE, None)  # each case writes its own module
        return ConfigManager().parse_args(
            ["--module", torchtitan.MODULE, "--config", torchtitan.CONFIG_FUNCTION])

    yield load
    sys.modules.pop(torchtitan.MODULE, None)


@pytest.mark.parametrize("case", [c for c in CASES if "torchtitan" in c.accepted], ids=str)
def test_torchtitan_reads_our_config(case: Case, load_torchtitan) -> None:
    from torchtitan.distributed.pipeline_parallel import _generate_llm_fqn_per_model_part

    request = case.request()
    p, model = request.plan.parallel, request.model
    config = load_torchtitan(case)
    spec = config.model_spec.model
    assert (spec.dim, len(spec.layers), spec.vocab_size) == (
        model.hidden_size, model.num_layers, model.vocab_size)
    par = config.parallelism
    replicas, shards = par.data_parallel_replicate_degree, par.data_parallel_shard_degree
    assert (replicas * shards, par.tensor_parallel_degree, par.pipeline_parallel_degree,
            par.context_parallel_degree) == (p.dp, p.tp, p.pp, p.cp)
    assert config.training.global_batch_size == p.global_batch
    assert config.training.seq_len == request.job.seq_len
    assert (config.activation_checkpoint is None) == (p.recompute == "none")
    if p.pp > 1:
        assert _stage_layers(par, model.num_layers, _generate_llm_fqn_per_model_part) == \
            chunk_layers(p, model)


def _stage_layers(par, num_layers: int, generate) -> list[int]:
    """Layers per pipeline stage as torchtitan will split them (pipeline_parallel.py)."""
    parts = par.module_fqns_per_model_part
    if parts is None:
        first, last = (par.pipeline_parallel_first_stage_less_layers,
                       par.pipeline_parallel_last_stage_less_layers)
        stages = math.ceil((num_layers + first + last) / par.pipeline_parallel_layers_per_stage)
        parts = generate(stages, num_layers, input_weight=first, output_weight=last)
    return [sum(name.startswith("layers.") for name in part) for part in parts]
