"""The layout the executor runs, its checks (one-line ``InputError``s) and what a run reports.

Checks on the layout alone live in ``ExecLayout``; checks that relate it to the model and
to the process budget live in ``check_layout``.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from sysplan.core.errors import InputError
from sysplan.core.types import Frozen
from sysplan.executor.model import TinyConfig

SCHEDULES = ("1f1b", "interleaved", "gpipe")
RECOMPUTE = ("none", "selective", "full")
FAULTS = frozenset({"skip_tp_allreduce"})


class ExecLayout(Frozen):
    """How the tiny model is laid out over processes. World size = tp * pp * dp * cp."""

    tp: int = Field(default=1, description="Tensor-parallel degree.")
    pp: int = Field(default=1, description="Pipeline stages.")
    vpp: int = Field(default=1, description="Model chunks per pipeline stage (interleaved).")
    dp: int = Field(default=1, description="Data-parallel degree.")
    cp: int = Field(default=1, description="Context-parallel degree (all-gather KV).")
    sequence_parallel: bool = Field(default=False, description="Megatron SP on the TP group.")
    zero: int = Field(default=0, description="ZeRO stage over DP x CP: 0, 1, 2 or 3 (FSDP).")
    micro_batch: int = Field(default=1, description="Sequences per micro-batch.")
    global_batch: int = Field(default=8, description="Sequences per optimizer step.")
    recompute: str = Field(default="none", description="none, selective or full.")
    recompute_layers: int | None = Field(
        default=None, description="With full recompute: the first N layers of each model "
        "chunk are recomputed (None = all).")
    schedule: str = Field(default="1f1b", description="1f1b, interleaved (vpp > 1) or gpipe.")
    stage_layers: tuple[int, ...] = Field(
        default=(), description="Layers per model chunk in chunk order, len pp * vpp "
        "(empty = even split).")

    @model_validator(mode="after")
    def _check(self) -> ExecLayout:
        for name in ("tp", "pp", "vpp", "dp", "cp", "micro_batch", "global_batch"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} {getattr(self, name)}: accepted is an integer >= 1")
        if self.zero not in (0, 1, 2, 3):
            raise InputError(f"zero {self.zero}: accepted is 0, 1, 2 or 3")
        if self.recompute not in RECOMPUTE:
            raise InputError(f"recompute {self.recompute!r}: accepted is {', '.join(RECOMPUTE)}")
        if self.recompute_layers is not None and (
                self.recompute != "full" or self.recompute_layers < 1):
            raise InputError(f"recompute_layers {self.recompute_layers}: accepted only with "
                             "recompute 'full', as an integer >= 1")
        if self.schedule not in SCHEDULES:
            raise InputError(f"schedule {self.schedule!r}: accepted is {', '.join(SCHEDULES)}")
        if (self.schedule == "interleaved") != (self.vpp > 1):
            raise InputError(f"schedule {self.schedule!r} with vpp {self.vpp}: accepted is "
                             "'interleaved' exactly when vpp > 1")
        if self.vpp > 1 and self.pp == 1:
            raise InputError(f"vpp {self.vpp} with pp 1: accepted is vpp 1 unless pp > 1")
        if self.global_batch % (self.dp * self.micro_batch):
            raise InputError(f"global_batch {self.global_batch}: accepted is a multiple of "
                             f"dp x micro_batch = {self.dp * self.micro_batch}")
        if self.vpp > 1 and self.micro_batches % self.pp:
            raise InputError(f"micro-batches {self.micro_batches} with interleaved pp "
                             f"{self.pp}: accepted is a multiple of pp")
        if self.stage_layers and (len(self.stage_layers) != self.pp * self.vpp
                                  or min(self.stage_layers) < 1):
            raise InputError(f"stage_layers {self.stage_layers}: accepted is pp x vpp = "
                             f"{self.pp * self.vpp} counts, each >= 1")
        return self

    @property
    def world_size(self) -> int:
        """Processes the layout needs."""
        return self.tp * self.pp * self.dp * self.cp

    @property
    def micro_batches(self) -> int:
        """Micro-batches per step on each pipeline, m = B / (dp * b)."""
        return self.global_batch // (self.dp * self.micro_batch)


class RunCase(Frozen):
    """One run: the model, its layout and the faults injected (for tests)."""

    tiny: TinyConfig = Field(description="The model, its seed and step size.")
    layout: ExecLayout = Field(description="The parallel layout.")
    faults: frozenset[str] = Field(
        default=frozenset(), description="Injected faults: 'skip_tp_allreduce' drops the "
        "forward all-reduce of the first block's attention output projection.")

    @model_validator(mode="after")
    def _check(self) -> RunCase:
        if not self.faults <= FAULTS:
            raise InputError(f"faults {sorted(self.faults - FAULTS)}: accepted is a subset of "
                             f"{sorted(FAULTS)}")
        return self


def _divides(what: str, degree: int, sizes: dict[str, int]) -> None:
    bad = {name: size for name, size in sizes.items() if size % degree}
    if bad:
        accepted = [d for d in range(1, min(sizes.values()) + 1)
                    if all(size % d == 0 for size in sizes.values())]
        listed = ", ".join(f"{name} {size}" for name, size in bad.items())
        raise InputError(f"{what} {degree} does not divide {listed}: accepted is one of "
                         f"{accepted}")


def check_layout(tiny: TinyConfig, layout: ExecLayout, max_procs: int) -> None:
    """Raise a one-line InputError if the layout cannot run this model within max_procs."""
    if layout.world_size > max_procs:
        raise InputError(f"layout needs {layout.world_size} processes (tp*pp*dp*cp): accepted "
                         f"is at most {max_procs} (max_procs)")
    _divides("tp", layout.tp, {"heads": tiny.heads, "kv_heads": tiny.kv_heads,
                               "ffn": tiny.ffn, "vocab": tiny.vocab})
    shards = layout.cp * (layout.tp if layout.sequence_parallel else 1)
    _divides("cp" + (" x tp (sequence parallel)" if layout.sequence_parallel else ""), shards,
             {"seq_len": tiny.seq_len})
    chunks = layout.pp * layout.vpp
    if layout.stage_layers and sum(layout.stage_layers) != tiny.layers:
        raise InputError(f"stage_layers {layout.stage_layers} sum to "
                         f"{sum(layout.stage_layers)}: accepted is a sum of layers {tiny.layers}")
    if not layout.stage_layers and tiny.layers % chunks:
        raise InputError(f"layers {tiny.layers} do not split evenly over pp x vpp = {chunks} "
                         f"chunks: accepted is a multiple of {chunks}, or stage_layers")


def chunk_layers(tiny: TinyConfig, layout: ExecLayout) -> list[range]:
    """The layers of each global model chunk, in chunk order."""
    counts = layout.stage_layers or (tiny.layers // (layout.pp * layout.vpp),) * (
        layout.pp * layout.vpp)
    starts = [sum(counts[:index]) for index in range(len(counts))]
    return [range(start, start + count) for start, count in zip(starts, counts, strict=True)]


class RankStats(Frozen):
    """One rank's measured split of a step (means over the post-warmup steps, seconds)."""

    rank: int = Field(description="Global rank.")
    coords: dict[str, int] = Field(description="tp, cp, dp and pp index of the rank.")
    comm_s: dict[str, float] = Field(description="Seconds inside collectives per step, by "
                                     "group: tp, cp, dp (DP x CP).")
    pipeline_wait_s: float = Field(description="Seconds per step in pipeline send/receive "
                                   "(transfer plus waiting for the neighbour: bubble).")
    compute_s: float = Field(description="Step time minus communication and pipeline wait.")


class RunResult(Frozen):
    """What one layout measured: losses, step times, throughput, memory, time split."""

    layout: ExecLayout = Field(description="The layout that ran.")
    world_size: int = Field(description="Processes.")
    backend: str = Field(description="gloo, nccl, or 'none' for the in-process run.")
    losses: tuple[float, ...] = Field(description="Global mean token loss of every step.")
    step_times_s: tuple[float, ...] = Field(description="Wall time of every step (barrier "
                                            "to barrier, rank 0).")
    median_step_s: float = Field(description="Median post-warmup step time.")
    p10_step_s: float = Field(description="10th percentile of post-warmup step times.")
    p90_step_s: float = Field(description="90th percentile of post-warmup step times.")
    min_step_s: float = Field(description="Fastest post-warmup step.")
    max_step_s: float = Field(description="Slowest post-warmup step.")
    tokens_per_s: float = Field(description="global_batch * seq_len / median_step_s.")
    peak_memory_bytes: tuple[int, ...] = Field(
        description="Per rank, in rank order, over the post-warmup steps. CUDA: "
        "max_memory_allocated; CPU: peak RSS (VmHWM) above the RSS right after model and "
        "optimizer init.")
    ranks: tuple[RankStats, ...] = Field(description="Per-rank time split, in rank order.")
