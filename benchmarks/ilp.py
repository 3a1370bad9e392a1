"""ILP planners against enumeration and the naive baseline (issue 7, section 2).

    python benchmarks/ilp.py [TIME_LIMIT_S]

(a) AMSP model-state sharding on Llama 3.1 70B, dgx-h100, 128 GPUs: the ILP's choice against
    ZeRO stages 0-3 (our sharding model, and price_training's step time beside it).
(b) Per-layer recompute + stage boundaries, 1F1B: first a 14-layer cut of DeepSeek-V3
    (3 dense + 11 MoE layers) on 3 stages, where brute force over C(13, 2) splits x 3^14 modes
    runs (over a minute) and the ILP proves the same optimum in a fraction of a second; then the
    whole model (61 layers: 3 dense + 58 MoE) on 8 and 16 stages against the naive baseline (uniform stages,
    one recompute mode), brute force there timed on one split with 10 of the 61 layers' modes
    free (3^10 assignments) and extrapolated (an estimate, not a run).

    python benchmarks/ilp.py [TIME_LIMIT_S] [--skip-brute-force]
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np

from sysplan.core.units import GIB
from sysplan.costmodels.candidates import Candidates
from sysplan.costmodels.training import price_training
from sysplan.costmodels.types import ParallelConfig
from sysplan.hardware import load_cluster
from sysplan.models import resolve_model
from sysplan.planners import ilp, ilp_sharding, ilp_stages
from sysplan.planners.stages import layer_problem
from sysplan.workloads.training import TrainJob

BUDGET = 80e9 - 4 * GIB  # H100 80 GB minus the planner's default 4 GiB headroom


def sharding(time_limit_s: float) -> None:
    model, _ = resolve_model("70b")
    cluster, _ = load_cluster("dgx-h100")
    job = TrainJob(seq_len=8192, global_batch=512)
    print("(a) AMSP sharding, Llama 3.1 70B, dgx-h100, 128 GPUs, seq 8192, batch 512")
    print(f"{'layout':22} {'plan':24} {'step s':>8} {'GiB':>6} {'price_training s':>17}")
    for tp, pp, dp, recompute in ((8, 2, 8, "none"), (4, 2, 16, "none"), (2, 4, 16, "full")):
        config = ParallelConfig(tp=tp, pp=pp, dp=dp, micro_batch=1, global_batch=512,
                                sequence_parallel=tp > 1, recompute=recompute)
        costs = ilp_sharding.sharding_costs(model, job, cluster, config, BUDGET)
        layout = f"tp{tp} pp{pp} dp{dp} rc {recompute}"
        for zero, combo in ilp.ZERO_AS_GROUPS.items():
            plan = ilp_sharding._plan_for(costs, combo)
            priced = price_training(model, job, cluster, Candidates.from_configs(
                [config.model_copy(update={"zero": zero})]))
            fits = "" if plan.memory_bytes <= BUDGET else " (OOM)"
            print(f"{layout:22} {f'ZeRO-{zero}' + fits:24} {plan.step_time_s:8.3f} "
                  f"{plan.memory_bytes / GIB:6.1f} {float(priced.step_time_s[0]):17.3f}")
        fitting = [z for z, c in ilp.ZERO_AS_GROUPS.items()
                   if ilp_sharding._plan_for(costs, c).memory_bytes <= BUDGET]
        best_zero = min(fitting, key=lambda z: costs.step_time_s[ilp.ZERO_AS_GROUPS[z]],
                        default=None)
        solved = ilp_sharding.plan_sharding_ilp(
            costs, time_limit_s=time_limit_s,
            warm_start=None if best_zero is None else ilp.ZERO_AS_GROUPS[best_zero])
        enumerated = ilp_sharding.enumerate_sharding(costs)
        name = "/".join(solved.groups[s] for s in ilp.STATES)
        print(f"{layout:22} {'ILP P/G/O ' + name:24} {solved.step_time_s:8.3f} "
              f"{solved.memory_bytes / GIB:6.1f} {'':>17}  {solved.ilp.describe()}; "
              f"enumeration {enumerated.step_time_s:.3f} s")


def _brute_force_rate(problem: ilp_stages.StageProblem, free: int) -> float:
    """Assignments per second of brute force: one split, ``free`` layers' modes enumerated."""
    p = problem.per_layer
    sub = ilp_stages.StageProblem(layer_problem(
        p.fwd[:, :free], p.bwd[:, :free], p.act[:, :free], p.state[:free],
        recompute_options=p.modes, layer_wgrad_s=p.wgrad[:free],
        layer_transient_bytes=p.transient[:, :free]), 1, problem.microbatches, np.inf)
    started = time.perf_counter()
    ilp_stages.brute_force_stages(sub)
    return 3.0**free / (time.perf_counter() - started)


def small_stages(time_limit_s: float) -> None:
    """Brute force that runs to the end against the ILP on the same instance."""
    model, _ = resolve_model("deepseek-v3")
    model = model.model_copy(update={"num_layers": 14, "mtp_layers": 0})
    cluster, _ = load_cluster("dgx-h100")
    job = TrainJob(seq_len=4096, global_batch=1024)
    config = ParallelConfig(tp=2, pp=3, dp=64, ep=64, micro_batch=1, global_batch=1024,
                            sequence_parallel=True, zero=1)
    budget = 20 * GIB  # tight: every layer cannot skip recompute
    problem = ilp_stages.stage_problem(model, job, cluster, config, budget)
    print(f"\n(b1) recompute + stage boundaries, DeepSeek-V3 cut to 14 layers (3 dense + 11 "
          f"MoE), tp2 pp3 dp64 ep64, budget {budget / GIB:.0f} GiB")
    started = time.perf_counter()
    solved = ilp_stages.plan_stages_ilp(problem, time_limit_s=time_limit_s)
    ilp_s = time.perf_counter() - started
    baseline = ilp_stages.uniform_stages(problem)
    print(f"  baseline (uniform, {baseline.layer_recompute[0]} everywhere): "
          f"{baseline.pipeline_time_s:.4f} s")
    print(f"  ILP: {solved.pipeline_time_s:.4f} s, stages {solved.stage_layers}, "
          f"{solved.ilp.describe()}, wall {ilp_s:.1f} s")
    started = time.perf_counter()
    brute = ilp_stages.brute_force_stages(problem)
    brute_s = time.perf_counter() - started
    count = math.comb(13, 2) * 3**14
    print(f"  brute force: {brute.pipeline_time_s:.4f} s, stages {brute.stage_layers}, "
          f"{count:.2e} assignments in {brute_s:.1f} s "
          f"({'equal' if abs(brute.pipeline_time_s - solved.pipeline_time_s) <= 1e-9 * brute.pipeline_time_s else 'DIFFERENT'})")


def stages(time_limit_s: float) -> None:
    model, _ = resolve_model("deepseek-v3")
    cluster, _ = load_cluster("dgx-h100")
    job = TrainJob(seq_len=4096, global_batch=1024)
    print(f"\n(b) recompute + stage boundaries, DeepSeek-V3 (61 layers), dgx-h100, seq 4096, "
          f"batch 1024, ZeRO-1, budget {BUDGET / GIB:.1f} GiB, ILP limit {time_limit_s:g} s")
    print(f"{'layout':22} {'baseline s':>10} {'ILP s':>8} {'gain':>6} {'ILP status':42} "
          f"{'stage layers':28} brute force (estimated)")
    for tp, pp, dp in ((2, 8, 64), (2, 16, 32)):
        config = ParallelConfig(tp=tp, pp=pp, dp=dp, ep=dp, micro_batch=1, global_batch=1024,
                                sequence_parallel=True, zero=1)
        problem = ilp_stages.stage_problem(model, job, cluster, config, BUDGET)
        baseline = ilp_stages.uniform_stages(problem)
        solved = ilp_stages.plan_stages_ilp(problem, time_limit_s=time_limit_s)
        count = math.comb(model.num_layers - 1, pp - 1) * 3.0**model.num_layers
        years = count / _brute_force_rate(problem, 10) / (3600 * 24 * 365)
        base = f"{baseline.pipeline_time_s:10.3f}" if baseline else f"{'none fits':>10}"
        gain = (f"{100 * (1 - solved.pipeline_time_s / baseline.pipeline_time_s):5.1f}%"
                if baseline else "")
        modes = "/".join(str(solved.layer_recompute.count(m)) for m in ilp.RECOMPUTE_MODES)
        print(f"{f'tp{tp} pp{pp} dp{dp} ep{dp}':22} {base} {solved.pipeline_time_s:8.3f} {gain:>6} "
              f"{solved.ilp.describe():42} {solved.stage_layers!s:28} "
              f"{count:.1e} assignments, ~{years:.1e} years")
        print(f"{'':22} baseline: {baseline.layer_recompute[0] if baseline else '-'} recompute on "
              f"every layer; ILP none/selective/full layers: {modes}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = [a for a in argv if not a.startswith("--")]
    limit = float(args[0]) if args else 20.0
    sharding(limit)
    if "--skip-brute-force" not in argv:
        small_stages(limit)
    stages(limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
