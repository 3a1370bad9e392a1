"""The training job: sequence length, global batch, precision and runtime behaviour."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sysplan.core.types import Frozen

Precision = Literal["bf16", "fp16", "fp8"]


class TrainJob(Frozen):
    """One training job's shape, independent of how it is parallelised."""

    seq_len: int = Field(gt=0, description="Tokens per sequence.")
    global_batch: int = Field(gt=0, description="Sequences per optimizer step.")
    precision: Precision = Field(
        default="bf16", description="Compute precision of the linear layers (fp8: FP8 GEMMs)."
    )
    optimizer: Literal["adam"] = Field(default="adam", description="Mixed-precision Adam(W).")
    overlap_grad_reduce: bool = Field(
        default=True, description="DP gradient reduction overlapped with backward "
        "(Megatron --overlap-grad-reduce, torch DDP/FSDP buckets)."
    )
    overlap_param_gather: bool = Field(
        default=True, description="ZeRO/FSDP parameter all-gather overlapped with compute."
    )
    tp_comm_overlap: bool = Field(
        default=False, description="TP collectives overlapped with GEMMs (Megatron "
        "--tp-comm-overlap / TE userbuffers, torchtitan AsyncTP)."
    )
    flash_attention: bool = Field(
        default=True, description="Fused attention (no s x s score tensors kept)."
    )

    @property
    def tokens_per_step(self) -> int:
        """Tokens consumed by one optimizer step."""
        return self.seq_len * self.global_batch
