"""How a plan's layers sit on pipeline stages, in the forms the runtimes take."""

from __future__ import annotations

from sysplan.costmodels.estimate import balanced_stage_layers
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
    per_rank = rank_layers(parallel, model)
    vpp = parallel.vpp
    split = [[n // vpp + (1 if v < n % vpp else 0) for v in range(vpp)] for n in per_rank]
    return [split[r][v] for v in range(vpp) for r in range(parallel.pp)]


def is_uniform(parallel: ParallelConfig, model: ModelSpec) -> bool:
    """Every chunk holds the same number of layers."""
    return len(set(chunk_layers(parallel, model))) == 1
