"""GPU, fabric tier and cluster types (DESIGN.md, core types). SI units throughout."""

from __future__ import annotations

from itertools import pairwise

from pydantic import Field, model_validator

from sysplan.core.types import Frozen

#: dtypes whose dense peak a GPU may list; bf16 and fp16 share tensor-core throughput.
DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8")


class GPU(Frozen):
    """One accelerator as the software sees it (one MI250X GCD counts as one GPU)."""

    name: str = Field(description="Catalog name, e.g. 'H100-SXM'.")
    vendor: str = Field(description="'nvidia' or 'amd'.")
    memory_bytes: int = Field(gt=0, description="Device memory in bytes (HBM capacity).")
    hbm_bandwidth_bytes_per_s: float = Field(gt=0, description="Peak HBM bandwidth, bytes/s.")
    peak_flops: dict[str, float] = Field(
        description="Dense (no sparsity) peak FLOP/s per dtype: fp32, tf32, bf16, fp16, fp8."
    )
    power_w: float = Field(gt=0, description="Board power (TDP) in watts.")
    gpu_class: str = Field(
        description="Efficiency class used by the default (uncalibrated) compute model, "
        "e.g. 'hopper', 'ampere', 'blackwell', 'cdna2', 'cdna3', 'ada'; 'cpu' for a CPU process."
    )
    source: str = Field(description="Where the datasheet numbers come from.")

    @model_validator(mode="after")
    def _check_dtypes(self) -> GPU:
        unknown = set(self.peak_flops) - set(DTYPES)
        if unknown:
            raise ValueError(f"unknown dtype(s) {sorted(unknown)}; accepted: {', '.join(DTYPES)}")
        if "bf16" not in self.peak_flops:
            raise ValueError("peak_flops must list bf16")
        for dtype, flops in self.peak_flops.items():
            if not 0 < flops < float("inf"):  # a zero peak divided every efficiency by zero
                raise ValueError(f"peak {dtype}: {flops!r} is not a positive FLOP rate "
                                 "(write e.g. 989TFLOP/s)")
        return self

    def peak(self, dtype: str) -> float:
        """Dense peak FLOP/s for ``dtype`` ('fp16' falls back to 'bf16' and vice versa)."""
        if dtype in self.peak_flops:
            return self.peak_flops[dtype]
        if dtype in ("bf16", "fp16"):
            return self.peak_flops["bf16"]
        raise KeyError(f"{self.name} lists no {dtype} peak")


class FabricTier(Frozen):
    """One level of the interconnect, innermost first (e.g. NVLink, then InfiniBand)."""

    name: str = Field(description="Human label, e.g. 'NVLink4' or 'Slingshot-11'.")
    domain_size: int = Field(
        gt=0, description="GPUs that share this tier: 8 for a DGX node, 72 for an NVL72 rack, "
        "the whole allocation for the scale-out network."
    )
    bandwidth_bytes_per_s: float = Field(
        gt=0, description="Per-GPU injection bandwidth in one direction, bytes/s."
    )
    latency_s: float = Field(ge=0, description="Per-message latency (alpha), seconds.")
    oversubscription: float = Field(
        default=1.0, ge=1.0, description="Taper of the tier: 2.0 halves bandwidth across it."
    )
    source: str = Field(default="", description="Where the numbers come from.")

    @property
    def effective_bandwidth_bytes_per_s(self) -> float:
        """Bandwidth per GPU after oversubscription."""
        return self.bandwidth_bytes_per_s / self.oversubscription


class Cluster(Frozen):
    """A homogeneous GPU cluster: GPU type, node size, fabric tiers and default allocation."""

    name: str = Field(description="Catalog name or the user's label.")
    description: str = Field(default="", description="One line for humans.")
    gpu: GPU = Field(description="The accelerator every node carries.")
    gpus_per_node: int = Field(gt=0, description="GPUs (or GCDs) per node.")
    default_nodes: int = Field(gt=0, description="Nodes planned for when --gpus is not given.")
    max_nodes: int | None = Field(default=None, description="Size of the machine, if bounded.")
    tiers: tuple[FabricTier, ...] = Field(
        min_length=1, description="Fabric tiers innermost first; domain sizes strictly grow."
    )
    source: str = Field(default="", description="Where the cluster description comes from.")

    @model_validator(mode="after")
    def _check_tiers(self) -> Cluster:
        sizes = [t.domain_size for t in self.tiers]
        if any(b <= a for a, b in pairwise(sizes)):
            raise ValueError(f"tier domain sizes must strictly grow innermost-first, got {sizes}")
        return self

    @property
    def default_gpus(self) -> int:
        """GPUs in the default allocation."""
        return self.default_nodes * self.gpus_per_node

    def tier_index_for_span(self, span: int) -> int:
        """Index of the innermost tier whose domain holds ``span`` consecutive GPUs.

        Groups are placed innermost-first, so a group spanning ``span`` consecutive ranks
        crosses the first tier whose domain is at least that large; beyond every domain the
        outermost tier carries it.
        """
        for index, tier in enumerate(self.tiers):
            if span <= tier.domain_size:
                return index
        return len(self.tiers) - 1
