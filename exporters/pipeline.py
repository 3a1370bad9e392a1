"""How a plan's layers sit on pipeline stages, in the forms the runtimes take."""

from __future__ import annotations

from sysplan.costmodels.estimate import balanced_stage_layers
from sysplan.costmodels.layer_cost import even_chunks
from sysplan.costmodels.types import ParallelConfig
from sysplan.models.spec import ModelSpec


def rank_layers(parallel: ParallelConfig, model: ModelSpec) -> tuple[int, ...]:
    """Transformer layers on each pipeline rank (the plan's, or an even split)."""
    if parallel.stage_layers:
        return parallel.stage_layers
    return balanced_stage_layers(model.num_layers, parallel.pp)


def chunk_layers(parallel: ParallelConfig, model: ModelSpec) -> list[int]:
    """Layers of each model chunk in schedule order: chunk ``v * pp + r`` is virtual stage
    ``v`` of rank ``r`` (Megatron's layout order, torchtitan's stage order)."""
    if parallel.chunk_layers:  # a pinned layout (--pp-layout)
        return list(parallel.chunk_layers)
    return even_chunks(rank_layers(parallel, model), parallel.vpp)


def is_uniform(parallel: ParallelConfig, model: ModelSpec) -> bool:
    """Every chunk holds the same number of layers."""
    return len(set(chunk_layers(parallel, model))) == 1
