"""Sliding-window attention: the keys a windowed layer's queries attend to, in the training
cost, the hardware FLOP count and the Hugging Face import (GPT-OSS: 128 tokens on every
second layer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sysplan.core.errors import InputError
from sysplan.costmodels.efficiency import Efficiency
from sysplan.costmodels.estimate import estimate_config
from sysplan.costmodels.types import ParallelConfig
from sysplan.hardware import load_cluster
from sysplan.models import resolve_model
from sysplan.models.counting import forward_flops_per_token
from sysplan.models.hf import from_hf_config
from sysplan.workloads.training import TrainJob

GPT_OSS = resolve_model("gpt-oss-120b")[0]
FULL = GPT_OSS.model_copy(update={"sliding_window": None, "sliding_window_layers": 0})


def test_attended_keys_mix_full_and_windowed_layers():
    # full causal: s / 2; window w < s: mean of min(i, w) = w - w^2 / (2 s)
    assert FULL.attended_keys(4096) == 2048
    windowed = 128 - 128 * 128 / (2 * 4096)
    assert GPT_OSS.attended_keys(4096) == pytest.approx((2048 + windowed) / 2)
    assert GPT_OSS.attended_keys(100) == 50  # a window longer than the sequence is none


def test_training_attention_and_flops_count_only_the_window():
    job = TrainJob(seq_len=4096, global_batch=64)
    cluster = load_cluster("dgx-h100")[0]
    config = ParallelConfig(tp=1, pp=1, dp=8, ep=8, micro_batch=1, global_batch=64)
    windowed, full = (estimate_config(m, job, cluster, config) for m in (GPT_OSS, FULL))
    share = GPT_OSS.attended_keys(4096) / 2048
    # the full layers (half) at the full-sequence rate; the window's FLOPs at the rate of a
    # kernel whose queries iterate over 2w = 256 keys, with 16x as many of them in parallel
    eff = Efficiency.for_cluster(cluster)
    rate = [sum(eff.attention_seconds(1.0, 4096 / span * 64, span, job.attention_backend,
                                      head_dim=64.0)) for span in (4096.0, 256.0)]
    expected = 0.5 + (share - 0.5) * rate[1] / rate[0]
    ratio = windowed.breakdown["compute_attention"] / full.breakdown["compute_attention"]
    assert ratio == pytest.approx(expected, rel=1e-6)
    assert share < ratio < 1.0  # a short window runs below the full sequence's rate
    assert windowed.step_time_s < full.step_time_s
    saved = forward_flops_per_token(FULL, 4096) - forward_flops_per_token(GPT_OSS, 4096)
    # 36 layers x 2 FLOPs x 64 heads x (64 + 64) dims x the keys no longer attended
    assert saved == pytest.approx(36 * 2 * 64 * 128 * (2048 - GPT_OSS.attended_keys(4096)))


def test_a_window_needs_its_layers():
    with pytest.raises(ValueError, match="go together"):
        type(FULL).model_validate({**FULL.model_dump(), "sliding_window": 128})
    with pytest.raises(ValueError, match="exceeds num_layers"):
        type(FULL).model_validate({**FULL.model_dump(), "sliding_window": 128,
                                   "sliding_window_layers": 37})


def _import(tmp_path: Path, **fields) -> object:
    data = json.loads(Path(__file__).with_name("data").joinpath(
        "hf/Llama-3.1-70B/config.json").read_text())
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**data, **fields}))
    return from_hf_config(path)


def test_hf_import_reads_which_layers_use_the_window(tmp_path: Path):
    mistral = _import(tmp_path, model_type="mistral", sliding_window=4096)
    assert (mistral.sliding_window, mistral.sliding_window_layers) == (4096, 80)
    typed = _import(tmp_path, sliding_window=512,
                    layer_types=["sliding_attention", "sliding_attention", "full_attention",
                                 "full_attention"] * 20)
    assert (typed.sliding_window, typed.sliding_window_layers) == (512, 40)
    qwen = _import(tmp_path, sliding_window=4096, use_sliding_window=True, max_window_layers=60)
    assert qwen.sliding_window_layers == 20  # layers 60..79 (modeling_qwen2.py)
    off = _import(tmp_path, sliding_window=4096, use_sliding_window=False)
    assert off.sliding_window is None
    assert _import(tmp_path, sliding_window=131072).sliding_window is None  # the whole context
    with pytest.raises(InputError, match="sliding_window' must be a positive integer"):
        _import(tmp_path, sliding_window="wide")
