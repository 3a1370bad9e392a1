"""Sequence-parallel mixes on a long-tail batch: best uniform CP vs greedy vs LP vs MILP.

    python benchmarks/sp_mix.py            # about 5 minutes (two 120 s MILP runs)
    python benchmarks/sp_mix.py --quick    # no 120 s runs

Llama 3.1 8B (tp 1, 64 slots = 64 GPUs) and 70B (tp 8, 16 slots = 128 GPUs) on dgx-h100,
512 sequences per step drawn from examples/lengths/long_tail.csv (1K..128K tokens), ring
(p2p) and Ulysses (a2a) CP, ZeRO-1, per sequence the faster of selective and full
recompute that fits. Step time = the slowest group's
sequence work (the per-step gradient reduction and optimizer step are the same for every
mix and left out). The 2 s columns are the planner's default time limit, warm-started; the
last column runs the MILP once for 120 s on step 0 and reports the gap to the best bound
proven (CBC's bound, or the GPU-seconds bound when higher). CBC runs on one thread.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from bench_args import first_cases

from sysplan.hardware.loader import load_cluster
from sysplan.models.catalog import resolve_model
from sysplan.planners.sp_mix import plan_sp_mix, sequence_costs
from sysplan.workloads.lengths import read_lengths
from sysplan.workloads.training import TrainJob

LENGTHS = Path(__file__).resolve().parents[1] / "examples" / "lengths" / "long_tail.csv"
SETUPS = (("8b", 1, 64), ("70b", 8, 16))  # model, tp, slots (one replica each)
STEPS = 3
SEQUENCES = 512


def _row(model_name, tp, slots, comm, long_run: bool) -> str:
    model, _ = resolve_model(model_name)
    cluster, _ = load_cluster("dgx-h100")
    job = TrainJob(seq_len=8192, global_batch=1)
    mix = read_lengths(LENGTHS)
    degrees = tuple(2**i for i in range(int(np.log2(slots)) + 1))
    uniform, greedy, lp, milp, solve, price, gap = [], [], [], [], [], [], []
    for step in range(STEPS):
        lengths = mix.sample(SEQUENCES, np.random.default_rng([0, step]))
        started = time.perf_counter()
        costs = sequence_costs(model, job, cluster, lengths, degrees, comm, tp=tp,
                               pool_slots=slots)
        price.append(time.perf_counter() - started)
        lp_plan = plan_sp_mix(costs, slots, method="lp", time_limit_s=2)
        plan = plan_sp_mix(costs, slots, method="milp", time_limit_s=2)
        uniform.append(plan.uniform_step_time_s)
        greedy.append(plan.greedy_step_time_s)
        lp.append(lp_plan.step_time_s)
        milp.append(plan.step_time_s)
        solve.append(plan.solve_time_s)
        gap.append(plan.gap)
        if step == 0:
            mixes = sorted({g.degree for g in plan.groups})
            udeg = plan.uniform_degree
    long_text = "-"
    if long_run:
        costs0 = sequence_costs(model, job, cluster, mix.sample(SEQUENCES, np.random.default_rng(
            [0, 0])), degrees, comm, tp=tp, pool_slots=slots)
        best = plan_sp_mix(costs0, slots, method="milp", time_limit_s=120)
        long_text = (f"{best.step_time_s:.2f} s, gap {best.gap:.1%} ({best.status}, "
                     f"bound {best.lower_bound_s:.2f}; 2 s: {milp[0]:.2f})")
    m = np.mean
    return (f"| {model_name} tp{tp} x{slots} | {comm} | cp{udeg} {m(uniform):.2f} | "
            f"{m(greedy):.2f} ({m(uniform) / m(greedy):.2f}x) | {m(lp):.2f} "
            f"({m(uniform) / m(lp):.2f}x) | {m(milp):.2f} ({m(uniform) / m(milp):.2f}x) | "
            f"{m(gap):.1%} | {m(solve):.2f} / {m(price):.2f} | {mixes} | {long_text} |")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    long_run = "--quick" not in args
    print(f"{SEQUENCES} sequences/step from {LENGTHS.name}, mean of {STEPS} steps, dgx-h100; "
          "times are seconds per step")
    print("| model | CP comm | best uniform | greedy | LP+round | MILP 2 s | gap 2 s | "
          "solve / pricing s | degrees used | MILP 120 s (step 0) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model_name, tp, slots in first_cases(argv, list(SETUPS)):
        for comm in ("p2p", "a2a"):
            print(_row(model_name, tp, slots, comm, long_run and comm == "p2p"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
