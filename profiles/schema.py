"""The profile file: what one node measured, as tables the cost models interpolate.

A profile (YAML or JSON) names the device and software it was measured on and holds up to
four tables, each optional: GEMM times, attention forward/backward times, memory-bound
bandwidth, and collective times per fabric tier; with ``--model`` also the eager element-wise
chain of one of its blocks (``eager``). A table is written as ``columns`` plus
``rows`` (one list per measurement) so a 400-point sweep stays readable. A ``calibration``
block holds the factors ``sysplan calibrate`` fitted; a profile with only that block and a
``base`` is an overlay on another profile. Times are seconds, sizes bytes (SI inside).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from sysplan.core.types import Frozen

SCHEMA_VERSION = "1.1"  # 1.1 adds the eager table

COLLECTIVE_OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv")
#: Where a collective ran: inside one node, or across nodes.
TIERS = ("node", "network")


class Device(Frozen):
    """The machine and software a profile was measured on."""

    name: str = Field(description="Device name as the driver reports it (NVIDIA H100 80GB HBM3).")
    kind: Literal["gpu", "cpu"] = Field(default="gpu", description="Accelerator or CPU cores.")
    gpu: str = Field(default="", description="Catalog GPU this device is (H100-SXM), if any.")
    count: int = Field(default=1, ge=1, description="Devices on the node that were measured.")
    driver: str = Field(default="", description="Driver version.")
    runtime: str = Field(default="", description="CUDA / ROCm runtime, or 'cpu'.")
    torch: str = Field(default="", description="torch version that ran the kernels.")
    date: str = Field(description="UTC date and time of the measurement (ISO 8601).")
    notes: str = Field(default="", description="Clocks, power limit, anything that matters.")


def _check_rows(rows: tuple[tuple, ...], width: int, positive: tuple[int, ...], table: str):
    for index, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(f"{table}.rows[{index}]: {len(row)} values, expected {width}")
        for column in positive:
            value = row[column]
            # compared with 1e30 rather than math.isfinite, which overflows on 10**400
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    0 < value <= 1e30):
                raise ValueError(f"{table}.rows[{index}][{column}]: {value!r} must be a "
                                 "positive number (at most 1e30)")
    return rows


class GemmTable(Frozen):
    """Median time of one GEMM C[m, n] = A[m, k] B[k, n] per shape."""

    dtype: Literal["fp32", "tf32", "bf16", "fp16", "fp8"] = Field(
        default="bf16", description="Operand dtype of every row (a dtype GPUs list a peak for).")
    columns: tuple[Literal["m"], Literal["n"], Literal["k"], Literal["time_s"]] = (
        "m", "n", "k", "time_s")
    rows: tuple[tuple[int, int, int, float], ...] = Field(min_length=1)

    @field_validator("rows")
    @classmethod
    def _positive(cls, rows):
        return _check_rows(rows, 4, (0, 1, 2, 3), "gemm")


class AttentionTable(Frozen):
    """Fused causal attention over [batch x heads, seq, head_dim] per backend."""

    columns: tuple[Literal["backend"], Literal["batch_heads"], Literal["seq"],
                   Literal["head_dim"], Literal["causal"], Literal["fwd_s"],
                   Literal["bwd_s"]] = (
        "backend", "batch_heads", "seq", "head_dim", "causal", "fwd_s", "bwd_s")
    rows: tuple[tuple[str, int, int, int, bool, float, float], ...] = Field(min_length=1)

    @field_validator("rows")
    @classmethod
    def _positive(cls, rows):
        return _check_rows(rows, 7, (1, 2, 3, 5, 6), "attention")


class MemoryTable(Frozen):
    """Memory-bound kernels: bytes moved (read + write) and the time they took."""

    columns: tuple[Literal["op"], Literal["bytes"], Literal["time_s"]] = ("op", "bytes", "time_s")
    rows: tuple[tuple[Literal["copy", "elementwise"], int, float], ...] = Field(min_length=1)

    @field_validator("rows")
    @classmethod
    def _positive(cls, rows):
        return _check_rows(rows, 3, (1, 2), "memory")


class CollectiveTable(Frozen):
    """Collective time per op, fabric tier, group size and message size (the full tensor:
    nccl-tests' size convention, so bus bandwidth follows from it)."""

    columns: tuple[Literal["op"], Literal["tier"], Literal["group_size"],
                   Literal["message_bytes"], Literal["time_s"]] = (
        "op", "tier", "group_size", "message_bytes", "time_s")
    rows: tuple[tuple[Literal[COLLECTIVE_OPS], Literal[TIERS], int, int, float], ...] = Field(
        min_length=1)

    @field_validator("rows")
    @classmethod
    def _positive(cls, rows):
        return _check_rows(rows, 5, (2, 3, 4), "collectives")


class EagerTable(Frozen):
    """The element-wise ops of one eager pre-norm decoder block, GEMMs and attention core
    left out (``profiles/eager.py``: two RMSNorms, RoPE on q and k, GQA's repeat of K and V,
    the attention output's copy, the SwiGLU activation, two residual adds), forward and
    backward through autograd, per size: what eager PyTorch's small ops cost on this node."""

    dtype: Literal["fp32", "bf16"] = Field(default="fp32", description="Tensor dtype.")
    columns: tuple[Literal["tokens"], Literal["hidden"], Literal["heads"], Literal["kv_heads"],
                   Literal["head_dim"], Literal["ffn"], Literal["fwd_s"], Literal["bwd_s"]] = (
        "tokens", "hidden", "heads", "kv_heads", "head_dim", "ffn", "fwd_s", "bwd_s")
    rows: tuple[tuple[int, int, int, int, int, int, float, float], ...] = Field(min_length=1)

    @field_validator("rows")
    @classmethod
    def _positive(cls, rows):
        return _check_rows(rows, 8, tuple(range(8)), "eager")


class OpOverhead(Frozen):
    """What one framework op costs beyond its work: a chain of autograd-tracked
    multiplications of one-element tensors, per op (host time: on a GPU the CPU issues the
    kernels while earlier ones run)."""

    forward_s: float = Field(ge=0, le=1, allow_inf_nan=False,
                             description="Seconds per op in the forward pass.")
    backward_s: float = Field(ge=0, le=1, allow_inf_nan=False,
                              description="Seconds per op's backward (autograd engine node, "
                              "its kernels and the gradient accumulation).")


class Calibration(Frozen):
    """Factors fitted to measured training steps by ``sysplan calibrate`` (1 = unchanged)."""

    gemm_scale: float = Field(default=1.0, gt=0, description="Multiplies GEMM efficiency.")
    attention_scale: float = Field(default=1.0, gt=0, description="Multiplies attention "
                                   "efficiency.")
    elementwise_scale: float = Field(default=1.0, gt=0, description="Multiplies memory-bound "
                                     "bandwidth.")
    comm_scale_node: float = Field(default=1.0, gt=0, description="Multiplies collective "
                                   "bandwidth inside a node.")
    comm_scale_network: float = Field(default=1.0, gt=0, description="Multiplies collective "
                                      "bandwidth across nodes.")
    overlap: float = Field(default=1.0, ge=0, le=1, description="Share of the compute window "
                           "that hides data-parallel and ZeRO communication.")
    allocator_reserve: float | None = Field(default=None, ge=0, description="Allocator reserve "
                                            "as a fraction of activations (None: default).")
    serve_gemm_scale: float = Field(default=1.0, gt=0, description="Serving only: multiplies "
                                    "GEMM efficiency in the serving cost model.")
    serve_memory_scale: float = Field(default=1.0, gt=0, description="Serving only: multiplies "
                                      "the memory bandwidth decode steps reach.")
    serve_iteration_overhead_s: float | None = Field(
        default=None, ge=0, description="Serving: fixed seconds per engine iteration "
        "(scheduler, launches); None: the cost model's default.")
    serve_collective_latency_s: float = Field(
        default=0.0, ge=0, description="Serving: fixed seconds added to every TP all-reduce "
        "(kernel launch and synchronisation beyond the fabric's latency).")
    serve_request_overhead_s: float = Field(
        default=0.0, ge=0, description="Serving: fixed seconds a request spends outside the "
        "engine (HTTP, tokenizer, detokenizer), added to its TTFT and end-to-end latency.")
    fitted_on: str = Field(default="", description="What the training factors were fitted to.")
    serve_fitted_on: str = Field(default="", description="What the serve_* factors were "
                                 "fitted to, and what they were judged on.")


class Profile(Frozen):
    """One node's measured op costs (every table optional) and calibration factors."""

    schema_version: str = Field(description="Profile format version, 1.x.")
    name: str = Field(description="Short name shown in the output (h100-sxm-2026-11-22).")
    device: Device | None = Field(default=None, description="Where it was measured; None only "
                                  "in an overlay.")
    base: str | None = Field(default=None, description="Profile this one overlays (a bundled "
                             "name or a path); its tables are used where this one has none.")
    gemm: GemmTable | None = None
    attention: AttentionTable | None = None
    memory: MemoryTable | None = None
    collectives: CollectiveTable | None = None
    overhead: OpOverhead | None = None
    eager: EagerTable | None = None
    contention: tuple[tuple[int, float], ...] | None = Field(
        default=None, description="CPU: (k, slowdown) pairs: one process's compute time with k "
        "processes computing at once over its time alone (profiles/contention.py); None where "
        "not measured.")
    calibration: Calibration | None = None

    @field_validator("contention")
    @classmethod
    def _slowdowns(cls, value):
        if value is not None and any(k < 2 or not 0.5 <= v <= 100.0 for k, v in value):
            raise ValueError("contention pairs process counts of at least 2 with slowdowns "
                             "between 0.5 and 100")
        return value

    @model_validator(mode="after")
    def _check(self) -> Profile:
        if self.device is None and self.base is None:
            raise ValueError("a profile names its device, or the base profile it overlays")
        return self

    @property
    def tables(self) -> tuple[str, ...]:
        """Names of the tables present."""
        return tuple(t for t in ("gemm", "attention", "memory", "collectives", "eager")
                     if getattr(self, t) is not None)
