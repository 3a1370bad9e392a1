"""Parallel configuration and the estimate the cost model returns for it (DESIGN.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sysplan.core.types import Frozen

Schedule = Literal["none", "1f1b", "interleaved-1f1b"]


class ParallelConfig(Frozen):
    """How one training job is laid out over GPUs. World size = tp * cp * pp * dp."""

    tp: int = Field(default=1, ge=1, description="Tensor-parallel degree.")
    pp: int = Field(default=1, ge=1, description="Pipeline-parallel stages.")
    vpp: int = Field(default=1, ge=1, description="Virtual stages (model chunks) per PP rank.")
    dp: int = Field(default=1, ge=1, description="Data-parallel degree (replicas x shards).")
    cp: int = Field(default=1, ge=1, description="Context-parallel degree (ring attention).")
    ep: int = Field(default=1, ge=1, description="Expert-parallel degree (MoE only).")
    etp: int = Field(default=1, ge=1, description="Tensor-parallel degree inside experts.")
    sequence_parallel: bool = Field(
        default=False, description="Megatron sequence parallelism on the TP group."
    )
    zero: int = Field(
        default=0, ge=0, le=3,
        description="ZeRO stage over DP: 0 none, 1 optimizer states (distributed optimizer), "
        "2 + gradients, 3 + parameters (FSDP).",
    )
    micro_batch: int = Field(default=1, ge=1, description="Sequences per micro-batch.")
    global_batch: int = Field(default=1, ge=1, description="Sequences per optimizer step.")
    recompute: Literal["none", "selective", "full"] = Field(
        default="none", description="Activation recompute: none, selective (attention core), "
        "full (whole layer)."
    )
    recompute_layers: int | None = Field(
        default=None, description="With full recompute: layers per stage recomputed "
        "(None = all of them)."
    )
    schedule: Schedule = Field(default="1f1b", description="Pipeline schedule.")
    stage_layers: tuple[int, ...] = Field(
        default=(), description="Transformer layers per pipeline stage (even split, or the "
        "stage DP's with --stages dp)."
    )
    stage_recompute: tuple[Literal["none", "selective", "full"], ...] = Field(
        default=(), description="Recompute mode per pipeline stage when the stage DP gives "
        "stages different modes (empty: `recompute` on every stage)."
    )
    chunk_layers: tuple[int, ...] = Field(
        default=(), description="Transformer layers per model chunk in schedule order (chunk "
        "v * pp + r on rank r) when a pinned layout (--pp-layout) gives them; empty: each "
        "rank's stage_layers split evenly over its vpp chunks.")
    offload: Literal["none"] = Field(default="none", description="Optimizer/parameter offload.")

    @model_validator(mode="after")
    def _check(self) -> ParallelConfig:
        if self.vpp > 1 and self.pp == 1:
            raise ValueError("vpp > 1 needs pp > 1")
        if self.stage_recompute and len(self.stage_recompute) != self.pp:
            raise ValueError(f"stage_recompute has {len(self.stage_recompute)} modes for "
                             f"{self.pp} pipeline stages")
        if self.chunk_layers and (
                len(self.chunk_layers) != self.pp * self.vpp
                or tuple(sum(self.chunk_layers[r::self.pp]) for r in range(self.pp))
                != self.stage_layers):
            raise ValueError(f"chunk_layers {self.chunk_layers} are not pp x vpp = "
                             f"{self.pp * self.vpp} chunks summing to stage_layers "
                             f"{self.stage_layers} per rank")
        if self.global_batch % (self.dp * self.micro_batch):
            raise ValueError(
                f"global batch {self.global_batch} does not divide by dp x micro-batch "
                f"{self.dp} x {self.micro_batch}"
            )
        return self

    @property
    def world_size(self) -> int:
        """GPUs the layout occupies."""
        return self.tp * self.cp * self.pp * self.dp

    @property
    def num_microbatches(self) -> int:
        """Micro-batches per pipeline per step, m = B / (b * dp)."""
        return self.global_batch // (self.dp * self.micro_batch)


class MemoryBreakdown(Frozen):
    """Bytes per GPU on the worst pipeline stage, as a named sum."""

    total_bytes: float = Field(description="Sum of the terms below.")
    weights_bytes: float = Field(description="Parameters held (16-bit, or sharded by ZeRO-3).")
    gradients_bytes: float = Field(description="Gradient buffers.")
    optimizer_bytes: float = Field(description="fp32 master weights and Adam moments.")
    activations_bytes: float = Field(description="Stored activations of in-flight micro-batches.")
    other_bytes: float = Field(
        description="Logits/loss, communication buffers, workspace and allocator reserve."
    )
    terms: dict[str, float] = Field(
        default_factory=dict, description="Finer named terms making up other_bytes and the rest."
    )
    per_stage: tuple[dict[str, float], ...] = Field(
        default=(), description="Per pipeline stage: the same totals for every stage."
    )


class Estimate(Frozen):
    """Predicted step time and memory of one configuration, every number traceable."""

    step_time_s: float = Field(description="Seconds per optimizer step.")
    tokens_per_s: float = Field(description="Tokens per second for the whole job.")
    tokens_per_s_per_gpu: float = Field(description="tokens_per_s / GPUs.")
    mfu: float = Field(description="Model FLOPs utilisation against the dense bf16 peak for "
                       "every precision, a fraction (PaLM App. B).")
    hfu: float = Field(description="Hardware FLOPs utilisation (adds recompute), a fraction of "
                       "the dense bf16 peak.")
    mfu_fp8: float | None = Field(default=None, description="fp8 jobs: MFU against the dense "
                                  "fp8 peak (half the bf16 figure on GPUs whose fp8 peak is "
                                  "twice bf16); None for bf16 jobs.")
    model_flops_per_token: float = Field(description="6N + 12 L a d_h s (PaLM App. B).")
    fits: bool = Field(description="Worst stage memory below GPU memory minus headroom.")
    memory: MemoryBreakdown = Field(description="Per-GPU memory on the worst stage.")
    breakdown: dict[str, float] = Field(
        description="Seconds per named term; the terms sum to step_time_s."
    )
    overlapped: dict[str, float] = Field(
        default_factory=dict,
        description="Seconds of communication per term that overlap hides (not in the step): "
        "what the term adds with the job's overlaps off, less what it costs with them on.")
    extrapolated_terms: tuple[str, ...] = Field(
        default=(), description="Terms priced outside the profile's measured points (roofline "
        "at the nearest measured efficiency).")
