"""Enumeration's optimum against the DP, ILP and LP planners, for a handful of models.

For each model and cluster the enumeration planner (``plan_training``) picks the best layout;
then, on that layout:
- the pipeline-stage DP (``planners.pipeline_dp``) re-splits its stages with per-stage
  recompute (only when it has PP > 1), against the uniform split enumeration assumes;
- the sharding ILP (``planners.ilp_sharding``) picks a shard group per model state, against
  the ZeRO stage enumeration chose;
- the sequence-parallel mix (``planners.sp_mix``) splits a sampled step of long-tail data
  (examples/lengths/long_tail.csv) into CP groups, against the best uniform CP degree.
Times are each planner's own objective (pipeline compute, step time, sequence work), so
compare within a column. The naive baseline of every column is the uniform choice.

    python benchmarks/planners.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bench_args import first_cases

from sysplan.core.errors import InputError, NoPlanFits
from sysplan.core.units import GIB
from sysplan.hardware import load_cluster
from sysplan.models import resolve_model
from sysplan.planners import ilp, ilp_sharding
from sysplan.planners.pipeline_dp import evaluate_stages
from sysplan.planners.sp_mix import mix_for_plan
from sysplan.planners.stage_costs import layer_costs, plan_stages
from sysplan.planners.training import plan_training
from sysplan.planners.types import Pins
from sysplan.workloads.training import make_train_job

HEADROOM = 4 * GIB
LENGTHS = Path(__file__).resolve().parents[1] / "examples" / "lengths" / "long_tail.csv"
#: (model, cluster, GPUs, sequence length, pinned knobs): the pinned rows keep a pipeline
#: (the Llama 3 paper's tp8 pp16 for 405B) so the stage DP has stages to split
CASES = [("70b", "dgx-h100", 256, 8192, {}), ("405b", "dgx-h100", 1024, 8192, {}),
         ("405b", "dgx-h100", 1024, 8192, {"tp": 8, "pp": 16}),
         ("70b", "dgx-h100", 64, 8192, {"tp": 8, "pp": 4}),
         ("8b", "dgx-h100", 64, 32768, {}), ("70b", "frontier", 512, 8192, {}),
         ("mixtral-8x7b", "dgx-h100", 128, 4096, {})]


def stages_column(model, job, cluster, p) -> str:
    if p.pp == 1:
        return "pp1: nothing to split"
    costs = layer_costs(model, job, cluster, p)
    started = time.perf_counter()
    try:
        plan = plan_stages(costs, p.pp, "1f1b", cluster.gpu.memory_bytes - HEADROOM, vpp=p.vpp)
    except NoPlanFits:
        return "DP: no split fits"
    solve = time.perf_counter() - started
    mode = "full" if p.recompute == "full" else p.recompute
    uniform = evaluate_stages(p.stage_layers, (mode,) * p.pp, costs.microbatches, "1f1b",
                              **costs.arrays())
    gain = uniform.pipeline_time_s / plan.pipeline_time_s - 1
    exact = "exact" if plan.exact else "heuristic"
    return f"{uniform.pipeline_time_s:7.2f} -> {plan.pipeline_time_s:7.2f} s ({gain:+.1%}, {exact}, {solve:.2f} s)"


def sharding_column(model, job, cluster, p) -> str:
    costs = ilp_sharding.sharding_costs(model, job, cluster, p, cluster.gpu.memory_bytes - HEADROOM)
    started = time.perf_counter()
    try:
        plan = ilp_sharding.plan_sharding_ilp(costs)
    except NoPlanFits:
        return "ILP: nothing fits"
    solve = time.perf_counter() - started
    zero = ilp_sharding._plan_for(costs, ilp.ZERO_AS_GROUPS[p.zero])
    groups = "/".join(plan.groups[s] for s in ilp.STATES)
    return (f"zero{p.zero} {zero.step_time_s:7.2f} -> {groups} {plan.step_time_s:7.2f} s "
            f"({plan.ilp.describe()}, {solve:.2f} s)")


def mix_column(model, job, cluster, p) -> str:
    try:
        mix, _ = mix_for_plan(model, job, cluster, p, str(LENGTHS), HEADROOM)
    except (NoPlanFits, InputError) as error:
        return f"no mix: {str(error)[:70]}"
    if mix.uniform_step_time_s is None:
        return f"{mix.step_time_s:.2f} s (no uniform CP fits)"
    return (f"cp{mix.uniform_degree} {mix.uniform_step_time_s:7.2f} -> {mix.step_time_s:7.2f} s "
            f"({mix.speedup:.2f}x, {mix.status}, {mix.solve_time_s:.1f} s)")


def main(argv: list[str] | None = None) -> int:
    for name, cluster_name, gpus, seq, pins in first_cases(argv, CASES):
        model, _ = resolve_model(name)
        cluster, _ = load_cluster(cluster_name)
        job, _ = make_train_job(model, seq_len=seq)
        started = time.perf_counter()
        result = plan_training(model, cluster, job, num_gpus=gpus, top=1, pins=Pins(**pins))
        p = result.plans[0].parallel
        print(f"{name} on {gpus} x {cluster.gpu.name} ({cluster_name}), seq {seq}: enumeration "
              f"picks {_layout(p)} in {time.perf_counter() - started:.2f} s "
              f"({result.searched:,} configurations{', pinned ' + str(pins) if pins else ''})")
        job = result.job
        print(f"  stages (1F1B, uniform -> DP):  {stages_column(model, job, cluster, p)}")
        print(f"  sharding (ZeRO -> ILP):        {sharding_column(model, job, cluster, p)}")
        print(f"  long-tail data (CP -> mix):    {mix_column(model, job, cluster, p)}")
    return 0


def _layout(p) -> str:
    text = f"tp{p.tp} pp{p.pp}" + (f" vpp{p.vpp}" if p.vpp > 1 else "") + f" dp{p.dp}"
    text += f" cp{p.cp}" if p.cp > 1 else ""
    text += f" ep{p.ep}" if p.ep > 1 else ""
    return text + f" zero{p.zero} mb{p.micro_batch} {p.recompute}"


if __name__ == "__main__":
    sys.exit(main())
