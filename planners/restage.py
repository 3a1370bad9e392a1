"""``sysplan train --stages dp``: re-split the pipeline stages of the best enumerated plans.

Enumeration prices every layout with even stages and one recompute mode. For the best
``POOL`` plans that pipeline, the stage DP (``planners.pipeline_dp``: exact for 1F1B; for
interleaved 1F1B, whose ranks hold non-adjacent chunks, a steepest descent with each rank's
memory checked exactly) picks each stage's layer count and recompute mode from the costs of
``planners.stage_costs``; the plan keeps the enumerated estimate with its pipeline terms
(compute, recompute, LM head, TP/CP/EP traffic, bubble) scaled by the DP's pipeline time over
the even split's, both priced by the same per-layer model, and its memory scaled likewise.
Then the pool is ranked again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from sysplan.core.errors import NoPlanFits
from sysplan.costmodels.efficiency import Efficiency
from sysplan.costmodels.estimate import estimate_config
from sysplan.costmodels.layer_cost import even_chunks
from sysplan.hardware.types import Cluster
from sysplan.models.spec import ModelSpec
from sysplan.planners.explain import why_line
from sysplan.planners.pipeline_dp import RECOMPUTE_MODES, evaluate_ranks, evaluate_stages
from sysplan.planners.pp_layout import rank_totals
from sysplan.planners.runtimes import Runtime
from sysplan.planners.stage_costs import layer_costs, plan_stages
from sysplan.planners.stages import StagePlan
from sysplan.planners.types import NEAR_TIE, Plan
from sysplan.workloads.training import TrainJob

#: Enumerated plans the DP re-splits before the final ranking (the DP takes ~0.01-0.1 s each).
POOL = 20
#: Breakdown terms that belong to the pipeline's compute, which the DP re-splits.
PIPELINE_TERMS = ("compute_gemm", "compute_attention", "compute_elementwise", "recompute",
                  "lm_head", "tp_comm", "cp_comm", "ep_comm", "pp_bubble")
STAGE_CHOICES = ("uniform", "dp")


@dataclass(frozen=True)
class Restaged:
    """Plans after the stage DP (ranked again) and what it did, for the notes."""

    plans: tuple[Plan, ...]
    notes: tuple[str, ...]


def restage_plans(plans: list[Plan], model: ModelSpec, job: TrainJob, cluster: Cluster,
                  eff: Efficiency, usable: float, runtimes: list[Runtime],
                  maximise_value: bool) -> Restaged:
    """Each plan with PP > 1 re-split by the stage DP when that is faster (heuristic for VPP > 1).

    With a target runtime every stage keeps one recompute mode (no runtime takes a mode per
    stage) and Megatron-DeepSpeed, which splits layers evenly, keeps the even split.
    ``maximise_value``: the objective grows with throughput (tokens/s/GPU) rather than
    shrinking (hours or dollars, negated).
    """
    notes = []
    if any(r.name == "deepspeed" for r in runtimes):
        note = ("--stages dp: Megatron-DeepSpeed splits layers evenly over stages, so every "
                "plan keeps the even split")
        return Restaged(tuple(plans), (note,))
    one_mode = bool(runtimes)
    out, changed, skipped = [], 0, False
    for plan in plans:
        p = plan.parallel
        if p.pp == 1:
            out.append(plan)
            continue
        if p.recompute_layers:
            skipped = True
            out.append(plan)
            continue
        new = _restage(plan, model, job, cluster, eff, usable, one_mode, maximise_value)
        changed += new is not plan
        out.append(new)
    ranked = _rerank(out, usable)
    pipelined = sum(plan.parallel.pp > 1 for plan in plans)
    notes.append(f"--stages dp: the stage DP (exact for 1F1B, heuristic for interleaved) "
                 f"re-split {changed} of the "
                 f"{pipelined} pipelined plans among the best {len(plans)}; their pipeline "
                 "terms and memory are scaled by the DP's per-layer model"
                 + ("; one recompute mode per plan (the target runtimes take no per-stage "
                    "mode)" if one_mode else ""))
    if skipped:
        notes.append("--stages dp leaves plans that fully recompute N layers per stage on their "
                     "even split (the DP chooses one mode per stage)")
    return Restaged(tuple(ranked), tuple(notes))


def _rerank(plans: list[Plan], usable: float) -> list[Plan]:
    """``plans`` ranked again by objective, duplicates dropped, rank and why rewritten."""
    ordered, seen = [], set()
    for plan in sorted(plans, key=lambda plan: -plan.objective_value):
        key = plan.parallel.model_dump_json()
        if key not in seen:  # a re-split plan can equal another enumerated one
            seen.add(key)
            ordered.append(plan)
    best = ordered[0].objective_value
    ranked = []
    for rank, plan in enumerate(ordered, start=1):
        gap = abs(best - plan.objective_value) / max(abs(best), 1e-30)
        why = plan.why.split(" | ")[1:]
        line = " | ".join([why_line(plan.estimate, usable, rank, gap), *why])
        ranked.append(plan.model_copy(update={
            "rank": rank, "near_tie": rank > 1 and gap <= NEAR_TIE, "why": line}))
    return ranked


def pin_layout(plans: list[Plan], layout: str, chunks: tuple[int, ...], model: ModelSpec,
               job: TrainJob, cluster: Cluster, eff: Efficiency, usable: float,
               maximise_value: bool) -> Restaged:
    """The enumerated ``plans`` (PP and VPP pinned to the layout's) on the pinned chunks of
    ``--pp-layout``: each rank's layers priced by the stage model in the plan's recompute mode
    (N recomputed layers per stage: the first N each rank holds), the plan's pipeline terms and
    memory scaled from its even split's (``_resplit``); plans the layout no longer fits are
    dropped. Raises NoPlanFits when none is left."""
    out, dropped = [], []
    for plan in plans:
        p = plan.parallel
        costs = layer_costs(model, job, cluster, p, eff)
        if p.recompute_layers:  # one mode row per layout: which layers each rank recomputes
            pinned = _block_recompute(costs, chunks, p.pp, p.recompute_layers)
            plain = _block_recompute(costs, even_chunks(p.stage_layers, p.vpp), p.pp,
                                     p.recompute_layers)
        else:
            pinned = plain = _with_modes(costs, (p.recompute,))
        even = {p.recompute: _price_ranks(p.stage_layers, plain, p)}
        given = _price_ranks(rank_totals(chunks, p.pp), pinned, p)
        memory_scale = plan.estimate.memory.total_bytes / max(even[p.recompute].stage_memory_bytes)
        new, ratio = _resplit(plan, given, even, memory_scale, model, job, cluster, eff, usable,
                              maximise_value, chunk_layers=chunks)
        if not new.estimate.fits:
            dropped.append(new)
            continue
        out.append(new.model_copy(update={
            "why": f"{plan.why} | layout {layout} pinned: {ratio - 1:+.1%} pipeline time "
                   f"against the even split"}))
    if not out:
        closest = min(dropped, key=lambda plan: plan.estimate.memory.total_bytes)
        gib = 2**30
        raise NoPlanFits(f"--pp-layout {layout}: no plan fits; closest "
                         f"{closest.parallel.pp}-stage plan needs "
                         f"{closest.estimate.memory.total_bytes / gib:.1f} GiB on its fullest "
                         f"rank of {usable / gib:.1f} GiB usable")
    note = (f"--pp-layout {layout}: ranks hold {runs_text(rank_totals(chunks, plans[0].parallel.pp))} "
            "layers; each plan's pipeline terms and memory are scaled from its even split by the "
            "stage model" + (" (per rank: its chunks priced as one)" if plans[0].parallel.vpp > 1
                             else ""))
    return Restaged(tuple(_rerank(out, usable)), (note,))


def restaged_winner(plan: Plan) -> str:
    """A sentence for the explanation when the stage DP re-split the top plan (the
    explanation's figures are enumeration's, on even stages)."""
    if " by DP (" not in plan.why:
        return ""
    e = plan.estimate
    return (f" With --stages dp the top plan re-splits its stages "
            f"{runs_text(plan.parallel.stage_layers)} (recompute "
            f"{runs_text(plan.parallel.stage_recompute) or plan.parallel.recompute}): "
            f"{e.tokens_per_s_per_gpu:,.0f} tokens/s per GPU, MFU {e.mfu:.1%}.")


def _even_splits(p, costs) -> dict[str, StagePlan]:
    """The plan's even split priced by the stage model in each recompute mode."""
    return {mode: _price_ranks(p.stage_layers, _with_modes(costs, (mode,)), p)
            for mode in RECOMPUTE_MODES}


def _price_ranks(ranks, costs, p) -> StagePlan:
    """Layers per rank ``ranks`` of plan ``p`` priced in ``costs``' one recompute mode (ranks
    holding non-adjacent chunks: the interleaved heuristic's evaluator)."""
    if p.vpp > 1:
        return evaluate_ranks(ranks, costs.microbatches, "interleaved-1f1b", p.vpp,
                              fixed_bytes=costs.fixed_bytes, **costs.arrays())
    return evaluate_stages(ranks, costs.modes * p.pp, costs.microbatches, "1f1b",
                           fixed_bytes=costs.fixed_bytes, **costs.arrays())


def _block_recompute(costs, chunks, pp: int, n: int):
    """``costs`` as one mode row in which each rank fully recomputes the first ``n`` of its
    layers and stores the rest (Megatron --recompute-num-layers N, block method, counted per
    stage as ``price_training`` counts it), the rank's layers being its ``chunks``."""
    full, none = costs.modes.index("full"), costs.modes.index("none")
    bounds = np.cumsum([0, *chunks])
    pick = np.full(len(costs.forward_s), none)
    for r in range(pp):
        held = [i for c in range(r, len(chunks), pp) for i in range(bounds[c], bounds[c + 1])]
        pick[held[:n]] = full
    columns = np.arange(len(pick))
    return replace(costs, modes=("full",), backward_s=costs.backward_s[pick, columns][None],
                   activation_bytes=costs.activation_bytes[pick, columns][None],
                   transient_bytes=costs.transient_bytes[pick, columns][None])


def pinned_winner(plan: Plan, layout: str) -> str:
    """A sentence for the explanation: the top plan on the pinned ``--pp-layout``."""
    e = plan.estimate
    return (f" On the pinned layout {layout} (ranks hold "
            f"{runs_text(plan.parallel.stage_layers)} layers) the top plan runs "
            f"{e.tokens_per_s_per_gpu:,.0f} tokens/s per GPU, MFU {e.mfu:.1%}.")


def _restage(plan: Plan, model, job, cluster, eff, usable, one_mode, maximise_value) -> Plan:
    p = plan.parallel
    costs = layer_costs(model, job, cluster, p, eff)
    schedule = "interleaved-1f1b" if p.vpp > 1 else "1f1b"
    even = _even_splits(p, costs)
    # the DP's per-layer memory is exact per stage; the enumerated estimate charges the worst
    # stage's layers with the first stage's in-flight micro-batches, so scale to stay on its side
    memory_scale = plan.estimate.memory.total_bytes / max(even[p.recompute].stage_memory_bytes)
    options = [(mode,) for mode in RECOMPUTE_MODES] if one_mode else [RECOMPUTE_MODES]
    found: list[StagePlan] = []
    for modes in options:
        try:
            found.append(plan_stages(_with_modes(costs, modes), p.pp, schedule,
                                     usable / memory_scale, vpp=p.vpp))
        except NoPlanFits:
            continue
    if not found:
        return plan
    best = min(found, key=lambda s: s.pipeline_time_s)
    heaviest = max(best.stage_recompute, key=RECOMPUTE_MODES.index)
    if best.pipeline_time_s >= even[heaviest].pipeline_time_s * (1 - 1e-6):
        return plan  # no gain from the split itself; enumeration priced the other modes
    new, ratio = _resplit(plan, best, even, memory_scale, model, job, cluster, eff, usable,
                          maximise_value)
    modes = best.stage_recompute
    mode_text = heaviest if len(set(modes)) == 1 else runs_text(modes)
    was = "" if modes == (p.recompute,) * p.pp else f", recompute {mode_text} (was {p.recompute})"
    return new.model_copy(update={
        "why": f"{plan.why} | stages {runs_text(best.stage_layers)} by DP "
               f"({best.note.split(':')[0]}){was}, {1 - ratio:.1%} less pipeline time than "
               f"the even split"})


def _resplit(plan: Plan, split: StagePlan, even: dict[str, StagePlan], memory_scale: float,
             model, job, cluster, eff, usable, maximise_value,
             chunk_layers: tuple[int, ...] = ()) -> tuple[Plan, float]:
    """``plan`` on the stages of ``split`` and the ratio of its pipeline time to the even
    split's: the even split is priced in the split's heaviest recompute mode with the full cost
    model, then its pipeline terms are scaled by that ratio (both times from the same per-layer
    model) and its memory by the split's fullest stage."""
    p = plan.parallel
    modes = split.stage_recompute
    heaviest = max(modes, key=RECOMPUTE_MODES.index)
    base = plan.estimate if heaviest == p.recompute else estimate_config(
        model, job, cluster, p.model_copy(update={"recompute": heaviest}), usable, eff)
    ratio = split.pipeline_time_s / even[heaviest].pipeline_time_s
    breakdown = {k: v * ratio if k in PIPELINE_TERMS else v for k, v in base.breakdown.items()}
    step = sum(breakdown.values())
    speed = base.step_time_s / step
    mfu = base.mfu * speed
    # HFU adds the recomputed forward: a third of a layer's training FLOPs per fully
    # recomputed layer (PaLM App. B; Korthikanti et al. 2022, section 5); selective
    # recompute adds the attention core, scaled from the base by its share of layers
    share = {mode: sum(n for n, m in zip(split.stage_layers, modes) if m == mode)
             / model.num_layers for mode in RECOMPUTE_MODES}
    hfu = mfu * (1 + share["full"] / 3)
    if p.recompute_layers:  # N layers per stage: the base's recomputed share, sped up
        hfu = base.hfu * speed
    elif heaviest == "selective":
        hfu += (base.hfu - base.mfu) * speed * share["selective"]
    memory = _memory(base.memory, split, memory_scale)
    uniform_mode = len(set(modes)) == 1
    parallel = p.model_copy(update={"stage_layers": split.stage_layers, "recompute": heaviest,
                                    "stage_recompute": () if uniform_mode else modes,
                                    "chunk_layers": chunk_layers})
    estimate = base.model_copy(update={
        "step_time_s": step, "tokens_per_s": base.tokens_per_s * speed,
        "tokens_per_s_per_gpu": base.tokens_per_s_per_gpu * speed, "mfu": mfu, "hfu": hfu,
        "mfu_fp8": None if base.mfu_fp8 is None else base.mfu_fp8 * speed,
        "memory": memory, "fits": memory.total_bytes <= usable, "breakdown": breakdown})
    value = plan.objective_value * (plan.estimate.step_time_s / step if maximise_value
                                    else step / plan.estimate.step_time_s)
    return plan.model_copy(update={"parallel": parallel, "estimate": estimate,
                                   "objective_value": value}), ratio


def runs_text(values) -> str:
    """``7/8x14/7``: consecutive equal values as value x count."""
    out: list[list] = []
    for v in values:
        if out and out[-1][0] == v:
            out[-1][1] += 1
        else:
            out.append([v, 1])
    return "/".join(f"{v}{'' if isinstance(v, int) else ' '}x{n}" if n > 1 else f"{v}"
                    for v, n in out)


def _with_modes(costs, modes: tuple[str, ...]):
    """``costs`` restricted to the recompute ``modes`` (rows of its per-mode arrays)."""
    rows = [costs.modes.index(m) for m in modes]
    return replace(costs, modes=modes, backward_s=costs.backward_s[rows],
                   activation_bytes=costs.activation_bytes[rows],
                   transient_bytes=costs.transient_bytes[rows])


def _memory(memory, stages: StagePlan, scale: float):
    """The worst stage's breakdown scaled to the DP's fullest stage, and per-stage totals."""
    totals = [b * scale for b in stages.stage_memory_bytes]
    factor = max(totals) / memory.total_bytes
    per_stage = tuple({"stage": k, "layers": n, "total_bytes": total}
                      for k, (n, total) in enumerate(zip(stages.stage_layers, totals)))
    return memory.model_copy(update={
        "total_bytes": max(totals),
        **{f"{k}_bytes": getattr(memory, f"{k}_bytes") * factor
           for k in ("weights", "gradients", "optimizer", "activations", "other")},
        "terms": {k: v * factor for k, v in memory.terms.items()}, "per_stage": per_stage})
