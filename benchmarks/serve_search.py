"""Time full `sysplan serve` searches and print what they chose.

The reference case of the serving issue is Llama 3.1 70B on 16 H100s, ISL 4000, OSL 500,
p90 TTFT <= 300 ms and TPOT <= 50 ms (target: under 10 s). Beside each search the table prints
the time per simulation and what simulating every candidate deployment with the same
bisection would take (the naive search the analytic pruning and staging avoid).

    python benchmarks/serve_search.py
"""

from __future__ import annotations

import sys
import time

from sysplan.hardware import load_cluster
from sysplan.models import resolve_model
from sysplan.planners.serving.search import BISECTION_STEPS, ServeQuestion, describe, plan_serving
from sysplan.workloads.serving import ServeWorkload
from sysplan.workloads.slo import parse_slos

CASES = [
    ("70b", "dgx-h100", 16, "4000", "500", None, 12),
    ("70b", "dgx-h100", 16, "4000", "500", 4.0, 12),
    ("8b", "dgx-h100", 8, "2000", "300", None, 12),
    ("70b", "dgx-h200", 8, "lognormal:3000,0.6", "lognormal:400,0.5", 3.0, 12),
]


def main() -> int:
    print(f"{'model':5} {'cluster':9} {'gpus':>4} {'isl':>18} {'rate':>5} {'trials':>6} "
          f"{'deploys':>7} {'sims':>5} {'search s':>8} {'s/sim':>6} {'naive s':>8}  best")
    for model, cluster, gpus, isl, osl, rate, trials in CASES:
        q = ServeQuestion(
            model=resolve_model(model)[0], cluster=load_cluster(cluster)[0],
            workload=ServeWorkload(isl=isl, osl=osl, rate=rate),
            slos=parse_slos(["ttft=300ms", "tpot=50ms"]), max_gpus=gpus, trials=trials)
        started = time.perf_counter()
        result = plan_serving(q)
        elapsed = time.perf_counter() - started
        per_sim = elapsed / max(result.simulated, 1)
        naive = result.searched * (BISECTION_STEPS + 1) * per_sim
        best = result.plans[0]
        rate_text = "-" if rate is None else f"{rate:g}"
        found = best.max_rate_rps or best.rate_rps
        print(f"{model:5} {cluster:9} {gpus:>4} {isl:>18} {rate_text:>5} {trials:>6} "
              f"{result.searched:>7} {result.simulated:>5} {elapsed:>8.1f} {per_sim:>6.3f} "
              f"{naive:>8.0f}  {describe(best.deployment)} @ {found:.2f} req/s, "
              f"{best.num_gpus} GPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
