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

from sysplan.core.errors import NoPlanFits
from sysplan.costmodels.efficiency import Efficiency
from sysplan.costmodels.estimate import estimate_config
from sysplan.hardware.types import Cluster
from sysplan.models.spec import ModelSpec
from sysplan.planners.explain import why_line
from sysplan.planners.pipeline_dp import RECOMPUTE_MODES, evaluate_ranks, evaluate_stages
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
    ordered, seen = [], set()
    for plan in sorted(out, key=lambda plan: -plan.objective_value):
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


def _restage(plan: Plan, model, job, cluster, eff, usable, one_mode, maximise_value) -> Plan:
    p = plan.parallel
    costs = layer_costs(model, job, cluster, p, eff)
    schedule = "interleaved-1f1b" if p.vpp > 1 else "1f1b"
    if p.vpp > 1:  # ranks hold non-adjacent chunks: the heuristic's evaluator, one mode each
        even = {mode: evaluate_ranks(p.stage_layers, costs.microbatches, schedule, p.vpp,
                                     fixed_bytes=costs.fixed_bytes,
                                     **_with_modes(costs, (mode,)).arrays())
                for mode in RECOMPUTE_MODES}
    else:
        even = {mode: evaluate_stages(p.stage_layers, (mode,) * p.pp, costs.microbatches,
                                      schedule, fixed_bytes=costs.fixed_bytes, **costs.arrays())
                for mode in RECOMPUTE_MODES}
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
    modes = best.stage_recompute
    heaviest = max(modes, key=RECOMPUTE_MODES.index)
    if best.pipeline_time_s >= even[heaviest].pipeline_time_s * (1 - 1e-6):
        return plan  # no gain from the split itself; enumeration priced the other modes
    # price the even split in the DP's heaviest mode with the full cost model, then scale its
    # pipeline terms by the DP's time over that even split's (same per-layer model)
    base = plan.estimate if heaviest == p.recompute else estimate_config(
        model, job, cluster, p.model_copy(update={"recompute": heaviest}), usable, eff)
    ratio = best.pipeline_time_s / even[heaviest].pipeline_time_s
    breakdown = {k: v * ratio if k in PIPELINE_TERMS else v for k, v in base.breakdown.items()}
    step = sum(breakdown.values())
    speed = base.step_time_s / step
    mfu = base.mfu * speed
    # HFU adds the recomputed forward: a third of a layer's training FLOPs per fully
    # recomputed layer (PaLM App. B; Korthikanti et al. 2022, section 5); selective
    # recompute adds the attention core, scaled from the base by its share of layers
    share = {mode: sum(n for n, m in zip(best.stage_layers, modes) if m == mode)
             / model.num_layers for mode in RECOMPUTE_MODES}
    hfu = mfu * (1 + share["full"] / 3)
    if heaviest == "selective":
        hfu += (base.hfu - base.mfu) * speed * share["selective"]
    memory = _memory(base.memory, best, memory_scale)
    uniform_mode = len(set(modes)) == 1
    parallel = p.model_copy(update={"stage_layers": best.stage_layers, "recompute": heaviest,
                                    "stage_recompute": () if uniform_mode else modes})
    estimate = base.model_copy(update={
        "step_time_s": step, "tokens_per_s": base.tokens_per_s * speed,
        "tokens_per_s_per_gpu": base.tokens_per_s_per_gpu * speed, "mfu": mfu, "hfu": hfu,
        "mfu_fp8": None if base.mfu_fp8 is None else base.mfu_fp8 * speed,
        "memory": memory, "fits": memory.total_bytes <= usable, "breakdown": breakdown})
    value = plan.objective_value * (plan.estimate.step_time_s / step if maximise_value
                                    else step / plan.estimate.step_time_s)
    mode_text = heaviest if uniform_mode else runs_text(modes)
    was = "" if modes == (p.recompute,) * p.pp else f", recompute {mode_text} (was {p.recompute})"
    return plan.model_copy(update={
        "parallel": parallel, "estimate": estimate, "objective_value": value,
        "why": f"{plan.why} | stages {runs_text(best.stage_layers)} by DP "
               f"({best.note.split(':')[0]}){was}, {1 - ratio:.1%} less pipeline time than "
               f"the even split"})


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
