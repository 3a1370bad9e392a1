"""What a planner returns: ranked plans with their estimate and the reason they rank."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sysplan.core.types import Frozen
from sysplan.costmodels.types import Estimate, ParallelConfig
from sysplan.hardware.types import Cluster
from sysplan.models.spec import ModelSpec
from sysplan.workloads.training import TrainJob

Objective = Literal["throughput", "time-to-train", "cost"]
#: Plans within this fraction of the best objective are flagged as near ties.
NEAR_TIE = 0.02


class Pins(Frozen):
    """Knobs the user fixed; None leaves a dimension to the search."""

    tp: int | None = None
    pp: int | None = None
    vpp: int | None = None
    dp: int | None = None
    cp: int | None = None
    ep: int | None = None
    micro_batch: int | None = None
    recompute: Literal["none", "selective", "full"] | None = None
    recompute_layers: int | None = None
    zero: int | None = None
    sequence_parallel: bool | None = None
    pp_layout: str | None = None  # Megatron --pipeline-model-parallel-layout (planners.pp_layout)


class Plan(Frozen):
    """One configuration with its estimate, its rank and why it ranks there."""

    rank: int = Field(description="1 = best under the objective.")
    parallel: ParallelConfig
    estimate: Estimate
    num_gpus: int = Field(description="GPUs this plan uses.")
    objective_value: float = Field(description="Value of the objective (higher is better).")
    near_tie: bool = Field(default=False, description="Within 2 % of the best plan's objective.")
    why: str = Field(default="", description="Short reason: binding constraint, trade-off.")


class ProfileInfo(Frozen):
    """Which efficiency numbers priced the plans."""

    name: str
    calibrated: bool
    extrapolated_terms: tuple[str, ...] = ()
    uncalibrated_terms: tuple[str, ...] = ()
    fitted_on: str = Field(default="", description="What sysplan calibrate fitted the profile's "
                           "factors to (empty: not calibrated to measured steps).")


class TrainingResult(Frozen):
    """Everything `sysplan train` prints, as data."""

    model: str
    cluster: str
    num_gpus: int
    objective: Objective
    searched: int = Field(description="Configurations priced.")
    feasible: int = Field(description="Configurations that fit in memory.")
    search_time_s: float
    profile: ProfileInfo
    plans: tuple[Plan, ...]
    job: TrainJob | None = Field(
        default=None, description="The training job the plans were priced for (exporters read "
        "its sequence length and precision).")
    runtimes: tuple[str, ...] = Field(
        default=(), description="Runtimes the search was restricted to (empty: any layout).")
    model_spec: ModelSpec | None = Field(
        default=None, description="The model's architecture, so exporters need no catalog.")
    cluster_spec: Cluster | None = Field(
        default=None, description="The cluster planned for (launch scripts read its nodes).")
    sequence_mix: dict | None = Field(
        default=None, description="With --lengths: one sampled step of variable-length data "
        "on the top plan's ranks, CP groups vs the best uniform CP (planners.sp_mix).")
    explanation: str = Field(default="", description="One paragraph: why the winner wins.")
    accuracy: str = Field(default="", description="The error band of these predictions: the "
                          "benchmarks' mean error on published runs of the same regime, and "
                          "whether the plan lies outside what was validated "
                          "(planners/accuracy.py).")
    memory_headroom_bytes: float | None = Field(
        default=None, description="GPU memory kept free; a plan fits in GPU memory minus this.")
    train_tokens: float | None = Field(
        default=None, description="Tokens to train on (--objective time-to-train or cost).")
    gpu_hour_cost: float | None = Field(
        default=None, description="Dollars per GPU-hour (--objective cost).")
    gpu_counts: tuple[dict[str, float], ...] = Field(
        default=(), description="Per GPU count searched: the best fitting plan's num_gpus and "
        "tokens_per_s (what time and cost against GPUs are drawn from).")
    notes: tuple[str, ...] = Field(default=(), description="Assumptions and resolutions.")
