"""sysplan.models: architectures, parameter and FLOP counting, ``config.json`` import."""

from sysplan.models.catalog import ModelListing, list_models, resolve_model
from sysplan.models.counting import (
    ParamCounts,
    forward_flops_per_token,
    model_flops_per_token,
    padded_vocab,
    param_counts,
)
from sysplan.models.hf import from_hf_config
from sysplan.models.spec import MLASpec, ModelSpec, MoESpec

__all__ = [
    "MLASpec",
    "MoESpec",
    "ModelListing",
    "ModelSpec",
    "ParamCounts",
    "forward_flops_per_token",
    "from_hf_config",
    "list_models",
    "model_flops_per_token",
    "padded_vocab",
    "param_counts",
    "resolve_model",
]
