"""The error band a prediction carries: the MAPE ``benchmarks/training_accuracy.py`` measured
on published runs of the same regime (dense or MoE, long context, measured profile or default
curves), and a flag when the plan lies outside what was validated (a GPU class with no
published run).

The bands live in ``planners/accuracy_bands.json``, written by
``python benchmarks/training_accuracy.py --write-bands planners/accuracy_bands.json``; rerun it
after touching a cost model so the numbers users see stay the measured ones.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

#: Sequences at least this long are "long context" (the NeMo long-sequence rows start at 16k).
LONG_CONTEXT_TOKENS = 16_384

BANDS_FILE = Path(__file__).with_name("accuracy_bands.json")
#: ``python benchmarks/serving_accuracy.py --write-bands planners/serving/accuracy_bands.json``
SERVE_BANDS_FILE = Path(__file__).with_name("serving") / "accuracy_bands.json"


def regime(moe: bool, seq_len: int, profiled: bool) -> str:
    """The benchmark regime of a prediction: ``moe``, ``dense-long``, ``dense-profiled`` (a
    measured or bundled profile priced it) or ``dense-default`` (the uncalibrated curves)."""
    if moe:
        return "moe"
    if seq_len >= LONG_CONTEXT_TOKENS:
        return "dense-long"
    return "dense-profiled" if profiled else "dense-default"


@cache
def bands() -> dict:
    """The measured bands (regime -> mape, rows, in_sample, gpu_classes, description)."""
    return json.loads(BANDS_FILE.read_text(encoding="utf-8"))


@cache
def serve_bands() -> dict:
    """The serving simulator's measured bands (metric -> mape, rows, gpu_classes)."""
    return json.loads(SERVE_BANDS_FILE.read_text(encoding="utf-8"))


def serve_accuracy_line(gpu_class: str) -> str:
    """``±10% output tokens/s, ±8% TTFT, ±10% ITL (mean error on published TensorRT-LLM runs
    outside the serving calibration)``; ``unvalidated`` for a GPU class none of them ran on."""
    metrics = serve_bands()["metrics"]
    shown = ", ".join(f"±{m['mape']:.0%} {m['description']}" for m in metrics.values()
                      if m["rows"])
    rows = max(m["rows"] for m in metrics.values())
    measured = (f"mean error on up to {rows} published TensorRT-LLM runs outside the serving "
                "calibration")
    if gpu_class not in {c for m in metrics.values() for c in m["gpu_classes"]}:
        return f"unvalidated: no published serving run on {gpu_class} GPUs (elsewhere " \
               f"{shown}: {measured})"
    return f"{shown} ({measured})"


def accuracy_line(moe: bool, seq_len: int, profiled: bool, gpu_class: str) -> str:
    """``±9% (dense, measured GPU profile: mean error on 12 published runs outside any
    calibration)``; led by ``unvalidated`` when the GPU class has no published run."""
    data = bands()
    name = regime(moe, seq_len, profiled)
    band = data["regimes"].get(name)
    validated = {c for b in data["regimes"].values() for c in b["gpu_classes"]}
    if band is None or not band["rows"]:
        return f"unvalidated: no published runs of this kind ({name})"
    measured = (f"{band['description']}: mean error on {band['rows']} published runs "
                "outside any calibration")
    if gpu_class not in validated:
        return (f"unvalidated: no published run on {gpu_class} GPUs (elsewhere ±"
                f"{band['mape']:.0%}, {measured})")
    return f"±{band['mape']:.0%} ({measured})"
