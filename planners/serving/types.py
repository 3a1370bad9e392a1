"""What the serving planner takes and returns."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from sysplan.core.types import Frozen
from sysplan.costmodels.serving.deployment import Deployment


class ServePins(Frozen):
    """Dimensions of the serving search the user fixed; None leaves one to the search."""

    tp: int | None = None
    pp: int | None = None
    replicas: int | None = None
    disagg: bool | None = None
    prefill_tp: int | None = None
    prefill_replicas: int | None = None
    decode_tp: int | None = None
    decode_replicas: int | None = None
    weights_precision: Literal["bf16", "fp8"] | None = None
    kv_precision: Literal["bf16", "fp8"] | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    prefix_cache_hit_rate: float | None = Field(default=None, ge=0, lt=1)
    capacity_policy: Literal["guaranteed_no_evict", "max_utilization"] | None = None


class ServePlan(Frozen):
    """One deployment with its simulated latencies at the load asked about."""

    rank: int
    deployment: Deployment
    num_gpus: int
    max_rate_rps: float | None = Field(description="Highest request rate found to hold the "
                                       "SLO in the full-length check (None when not searched).")
    rate_rps: float | None = Field(description="Rate the summary was simulated at (None: the "
                                   "workload's own arrivals or closed loop).")
    summary: dict[str, Any] = Field(description="ServeSummary.to_dict() at that rate.")
    kv_cache_bytes_per_gpu: float
    kv_tokens_per_replica: int
    weight_bytes_per_gpu: float
    objective_value: float = Field(description="Higher is better: minus GPUs (or dollars per "
                                   "hour) with a rate, output tokens/s per GPU without.")
    cost_per_hour: float | None = Field(default=None, description="Dollars per hour of the "
                                        "whole deployment (GPUs x --gpu-cost).")
    why: str = ""

    @property
    def dollars_per_million_output_tokens(self) -> float | None:
        """Dollars per million output tokens at the simulated load (None without a price)."""
        tokens_per_s = self.summary.get("output_tokens_per_s") or 0.0
        if self.cost_per_hour is None or tokens_per_s <= 0:
            return None
        return self.cost_per_hour / 3600.0 / tokens_per_s * 1e6


class ServeResult(Frozen):
    """Everything `sysplan serve` prints, as data."""

    model: str
    cluster: str
    engine: str
    max_gpus: int
    workload: dict[str, Any]
    slos: tuple[str, ...]
    searched: int = Field(description="Layouts and pools screened by simulation after the "
                          "proven bounds.")
    simulated: int = Field(description="Simulations run.")
    search_time_s: float
    deterministic: bool
    plans: tuple[ServePlan, ...]
    notes: tuple[str, ...] = ()
    accuracy: str = Field(default="", description="The predictions' error band: the serving "
                          "benchmark's mean error on published runs outside the calibration "
                          "(planners/accuracy.py).")
    explanation: str = Field(default="", description="Why the best deployment wins: what it "
                             "achieves, the binding SLO and its margin, what limits its "
                             "throughput, and the best alternatives (``explain``).")
    explored: tuple[dict[str, Any], ...] = Field(
        default=(), description="Every loaded simulation of the search as a point: deployment, "
        "output tokens/s per GPU, tokens/s per user, TTFT p90, SLO met (the Pareto picture).")
    latency_curve: tuple[dict[str, Any], ...] = Field(
        default=(), description="With ServeQuestion.latency_curve: the best deployment's "
        "latency percentiles at a few rates around its own.")
