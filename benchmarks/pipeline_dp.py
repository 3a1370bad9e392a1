"""Pipeline-stage DP against uniform stages on Llama 3.1 405B and DeepSeek-V3 (dgx-h100).

For each layout and schedule: the pipeline compute time of one step with the uniform split
(Megatron's default, extra layers on middle stages) and the configuration's recompute mode,
the uniform split with the cheapest fitting recompute per stage, and the DP's (or, for
chunked schedules, the heuristic's) split; the gain over the first; solve time.

    python benchmarks/pipeline_dp.py
"""

from __future__ import annotations

import sys
import time

import numpy as np
from bench_args import first_cases

from sysplan.core.errors import NoPlanFits
from sysplan.core.units import GIB
from sysplan.costmodels.estimate import balanced_stage_layers
from sysplan.costmodels.types import ParallelConfig
from sysplan.hardware import load_cluster
from sysplan.models import resolve_model
from sysplan.planners.pipeline_dp import evaluate_stages, optimal_stages
from sysplan.planners.stage_costs import layer_costs, plan_stages
from sysplan.workloads.training import make_train_job

HEADROOM = 4 * GIB  # the planner's default memory headroom

CASES = [
    # Llama 3 paper section 3.3.2: tp8 pp16, seq 8192; the planner's pp16 winner for 1024 GPUs
    ("405b", 8192, ParallelConfig(tp=8, pp=16, dp=8, sequence_parallel=True, zero=1,
                                  global_batch=2048, recompute="none")),
    ("405b", 8192, ParallelConfig(tp=4, pp=16, dp=4, cp=4, sequence_parallel=True, zero=2,
                                  global_batch=2048)),
    # DeepSeek-V3 report section 3.2: pp16, ep64, ZeRO-1, no TP, seq 4096, batch 15360
    ("deepseek-v3", 4096, ParallelConfig(tp=1, pp=16, dp=128, ep=64, zero=1,
                                         global_batch=15360)),
]
SCHEDULES = [("1f1b", 1), ("zb-h1", 1), ("interleaved-1f1b", 2), ("zb-v", 2), ("dualpipe", 2)]


def uniform_best_modes(costs, stages, m, schedule, limit):
    """Uniform split; per stage the fastest recompute mode whose memory fits."""
    arrays = {**costs.arrays(), "fixed_bytes": costs.fixed_bytes}
    per_mode = {mode: evaluate_stages(stages, (mode,) * len(stages), m, schedule, **arrays)
                for mode in costs.modes}
    chosen = []
    for i in range(len(stages)):
        fits = [(per_mode[mode].stage_time_s[i], mode) for mode in costs.modes
                if per_mode[mode].stage_memory_bytes[i] <= limit]
        chosen.append(min(fits)[1] if fits else None)
    if None in chosen:
        return None
    return evaluate_stages(stages, tuple(chosen), m, schedule, **arrays)


def fmt(plan) -> str:
    if plan is None:
        return "does not fit"
    return f"{plan.pipeline_time_s:8.2f} s  {max(plan.stage_memory_bytes) / GIB:5.1f} GiB"


def main(argv: list[str] | None = None) -> int:
    cluster = load_cluster("dgx-h100")[0]
    limit = cluster.gpu.memory_bytes - HEADROOM
    for name, seq, config in first_cases(argv, CASES):
        model = resolve_model(name)[0]
        job = make_train_job(model, seq_len=seq, global_batch=config.global_batch)[0]
        costs = layer_costs(model, job, cluster, config)
        m, stages = costs.microbatches, balanced_stage_layers(model.num_layers, config.pp)
        print(f"\n{model.name}  tp{config.tp} pp{config.pp} dp{config.dp} cp{config.cp} "
              f"ep{config.ep} zero{config.zero} seq {seq} m={m}  limit {limit / GIB:.1f} GiB")
        print(f"{'schedule':18} {'uniform, config mode':>24} {'uniform, best modes':>24} "
              f"{'DP / heuristic':>24} {'gain':>7} {'solve':>7}  layers | recompute")
        for schedule, vpp in SCHEDULES:
            contiguous = schedule in ("1f1b", "zb-h1")
            base = uniform_best = None
            if contiguous:
                base = evaluate_stages(stages, (config.recompute,) * config.pp, m, schedule,
                                       fixed_bytes=costs.fixed_bytes, **costs.arrays())
                if max(base.stage_memory_bytes) > limit:
                    base = None
                uniform_best = uniform_best_modes(costs, stages, m, schedule, limit)
            started = time.perf_counter()
            try:
                plan = plan_stages(costs, config.pp, schedule, limit, vpp=vpp)
            except NoPlanFits as err:
                print(f"{schedule:18} {'':>24} {'':>24} {'no fit':>24}  ({err})")
                continue
            solve = time.perf_counter() - started
            ref = base or uniform_best
            gain = (f"{100 * (ref.pipeline_time_s / plan.pipeline_time_s - 1):6.2f}%" if ref
                    else "    n/a")
            modes = "".join({"none": "n", "selective": "s", "full": "f"}[r]
                            for r in plan.stage_recompute)
            print(f"{schedule:18} {fmt(base) if contiguous else '':>24} "
                  f"{fmt(uniform_best) if contiguous else '':>24} "
                  f"{fmt(plan):>24} {gain:>7} {solve:6.2f}s  "
                  f"{','.join(map(str, plan.stage_layers))} | {modes}"
                  + ("" if plan.exact else "  (heuristic)"))
    if "--cases" not in (sys.argv[1:] if argv is None else argv):
        stress()
    print("\ngain: uniform split (config mode, else best modes) / DP - 1; times are the "
          "pipeline compute of one step (no DP/optimizer/p2p terms)", file=sys.stderr)
    return 0


def stress() -> None:
    """Solve time on random heterogeneous layers (L = 126, pp = 16, 3 recompute modes)."""
    rng = np.random.default_rng(0)
    layers, pp = 126, 16
    print(f"\nrandom layers, L={layers} pp={pp}, 3 modes, memory-bound: solve time by m")
    for m in (1, 4, 16, 64, 512):
        fwd = rng.uniform(1, 3, layers)
        act = np.array([rng.uniform(2, 6, layers), rng.uniform(1, 3, layers),
                        rng.uniform(0.1, 0.3, layers)])
        started = time.perf_counter()
        plan = optimal_stages(fwd, np.array([2 * fwd, 2.2 * fwd, 3 * fwd]), act,
                              rng.uniform(1, 4, layers), pp, m, "1f1b", 337.2,
                              recompute_options=("none", "selective", "full"),
                              first_extra=(3, 5), last_extra=(6, 5, 1))
        print(f"  m={m:4d}  {time.perf_counter() - started:5.2f} s  {plan.note}")


if __name__ == "__main__":
    sys.exit(main())
