"""Map plans (``sysplan train --json`` documents) onto layouts the executor runs here.

``scale_down`` keeps what a plan decides (tp, pp, vpp, cp, sequence parallelism, schedule,
recompute, ZeRO stage, the proportions of uneven stages) and shrinks what the machine cannot
hold: the model becomes one tiny Llama-style decoder shared by every plan being compared
(sizes divisible by every plan's degrees, so the comparison is fair), DP is capped at what
``nproc`` processes leave, and every plan runs the same global batch. Without scaling down the
plan runs as written: its model's own sizes and its DP degree, on ``nproc`` processes at most.
What the executor cannot reproduce (expert parallelism, Ulysses CP, a recompute mode per
stage) is listed in ``ScaledPlan.notes``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sysplan.core.errors import InputError
from sysplan.executor.layout import ExecLayout
from sysplan.executor.model import TinyConfig
from sysplan.exporters.pipeline import chunk_layers
from sysplan.models.spec import ModelSpec
from sysplan.planners.types import Plan
from sysplan.workloads.training import TrainJob

#: Transformer layers per model chunk in the scaled-down model (on average).
LAYERS_PER_CHUNK = 2
#: Head dimension of the scaled-down model.
HEAD_DIM = 16


@dataclass(frozen=True)
class ScaledPlan:
    """One plan as the executor runs it."""

    name: str  # where it came from: "plans.json #1"
    plan: Plan
    tiny: TinyConfig
    layout: ExecLayout
    notes: tuple[str, ...]


def _lcm(values) -> int:
    return math.lcm(*[int(v) for v in values]) if values else 1


def scale_down(plans: list[tuple[str, Plan, ModelSpec, TrainJob]], nproc: int) -> list[ScaledPlan]:
    """Every plan on one shared tiny model, DP capped at ``nproc`` processes."""
    if nproc < 1:
        raise InputError(f"--nproc {nproc}: accepted is a whole number >= 1")
    for name, plan, _, _ in plans:
        p = plan.parallel
        fixed = p.tp * p.pp * p.cp
        if fixed > nproc:
            raise InputError(f"{name}: tp x pp x cp = {p.tp} x {p.pp} x {p.cp} = {fixed} "
                             f"processes; --nproc {nproc}: accepted is a plan needing at most "
                             f"--nproc processes before DP (raise --nproc)")
    dps = [min(plan.parallel.dp, nproc // (plan.parallel.tp * plan.parallel.pp * plan.parallel.cp))
           for _, plan, _, _ in plans]
    tp = _lcm([plan.parallel.tp for _, plan, _, _ in plans])
    seq_shards = _lcm([plan.parallel.cp * (plan.parallel.tp if plan.parallel.sequence_parallel
                                          else 1) for _, plan, _, _ in plans])
    chunks = _lcm([plan.parallel.pp * plan.parallel.vpp for _, plan, _, _ in plans])
    kv = max(2, tp)
    heads = 2 * kv
    moe = any(model.moe is not None for _, _, model, _ in plans)
    tiny = TinyConfig(vocab=64 * max(2, tp), hidden=heads * HEAD_DIM, heads=heads, kv_heads=kv,
                      ffn=4 * heads * HEAD_DIM, layers=chunks * LAYERS_PER_CHUNK,
                      seq_len=max(64, 16 * seq_shards), moe_experts=4 if moe else 0)
    # one global batch for all: m = B / dp is a multiple of pp (interleaving needs it) and >= 2
    batch = 2 * _lcm([dp * plan.parallel.pp for dp, (_, plan, _, _) in zip(dps, plans)])
    out = []
    for dp, (name, plan, model, job) in zip(dps, plans):
        layout, notes = _layout(plan, model, job, tiny, dp, batch)
        if dp < plan.parallel.dp:
            notes.append(f"dp {plan.parallel.dp} capped at {dp} (--nproc {nproc})")
        out.append(ScaledPlan(name, plan, tiny, layout, tuple(notes)))
    return out


def as_written(name: str, plan: Plan, model: ModelSpec, job: TrainJob,
               nproc: int) -> ScaledPlan:
    """The plan's own layout on its model's sizes (a Llama-style block of the same widths)."""
    p = plan.parallel
    if p.world_size > nproc:
        raise InputError(f"{name}: the plan needs {p.world_size} processes (tp x pp x dp x cp); "
                         f"--nproc {nproc}: accepted is at most --nproc (or use --scale-down)")
    tiny = TinyConfig(vocab=model.vocab_size, hidden=model.hidden_size, heads=model.num_heads,
                      kv_heads=model.num_kv_heads, ffn=model.ffn_hidden, layers=model.num_layers,
                      seq_len=job.seq_len,
                      moe_experts=model.moe.num_experts if model.moe else 0,
                      moe_top_k=model.moe.top_k if model.moe else 2)
    layout, notes = _layout(plan, model, job, tiny, p.dp, p.global_batch)
    return ScaledPlan(name, plan, tiny, layout, tuple(notes))


def _layout(plan: Plan, model: ModelSpec, job: TrainJob, tiny: TinyConfig, dp: int,
            global_batch: int) -> tuple[ExecLayout, list[str]]:
    p = plan.parallel
    notes = []
    if model.moe is not None and (p.ep > 1 or p.etp != p.tp):
        notes.append(f"ep {p.ep} / etp {p.etp}: the executor replicates experts and splits "
                     "them over TP")
    if p.cp > 1 and job.context_parallel_comm == "a2a":
        notes.append("Ulysses CP runs as all-gather CP (the executor's only CP)")
    if p.stage_recompute:
        notes.append(f"recompute per stage {'/'.join(p.stage_recompute)} runs as "
                     f"{p.recompute} on every stage")
    if model.mla is not None or model.mtp_layers or not model.gated_mlp:
        notes.append(f"{model.name}'s blocks run as Llama-style blocks (GQA, SwiGLU, RMSNorm)")
    chunks = p.pp * p.vpp
    stage_layers: tuple[int, ...] = ()
    if len(set(p.stage_layers)) > 1 or tiny.layers % chunks:
        stage_layers = _scaled_chunks(p, model, tiny.layers)
    recompute_layers = None
    if p.recompute == "full" and p.recompute_layers:
        per_chunk = min(stage_layers) if stage_layers else tiny.layers // chunks
        recompute_layers = max(1, min(p.recompute_layers, per_chunk))
    layout = ExecLayout(
        tp=p.tp, pp=p.pp, vpp=p.vpp, dp=dp, cp=p.cp, sequence_parallel=p.sequence_parallel,
        zero=p.zero, micro_batch=min(p.micro_batch, global_batch // dp), global_batch=global_batch,
        recompute=p.recompute, recompute_layers=recompute_layers,
        schedule="interleaved" if p.vpp > 1 else "1f1b", stage_layers=stage_layers)
    if layout.global_batch % (layout.dp * layout.micro_batch):
        layout = layout.model_copy(update={"micro_batch": 1})
    return layout, notes


def _scaled_chunks(p, model: ModelSpec, layers: int) -> tuple[int, ...]:
    """The plan's layers per chunk scaled to ``layers`` (largest remainders, each >= 1)."""
    original = chunk_layers(p, model)
    total = sum(original)
    shares = [n * layers / total for n in original]
    counts = [max(1, int(s)) for s in shares]
    order = sorted(range(len(shares)), key=lambda i: shares[i] - int(shares[i]), reverse=True)
    i = 0
    while sum(counts) < layers:
        counts[order[i % len(order)]] += 1
        i += 1
    while sum(counts) > layers:
        j = max(range(len(counts)), key=lambda k: counts[k])
        counts[j] -= 1
    return tuple(counts)
