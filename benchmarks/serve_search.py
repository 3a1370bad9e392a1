"""Time full `sysplan serve` searches and print what they chose.

The reference case of the serving issue is Llama 3.1 70B on 16 H100s, ISL 4000, OSL 500,
p90 TTFT <= 300 ms and TPOT <= 50 ms (target: at most 8 s on a 2-core machine, its answer no
worse than before). Beside each search the table prints the time per simulation, what
simulating every candidate deployment with a full rate search would take (the naive search
that screening one replica and the proven bounds avoid), and the best plan: its rate, output
tokens/s per GPU and p90 TTFT in the full-length check it passed.

    python benchmarks/serve_search.py            # all cases
    python benchmarks/serve_search.py --reference
    python benchmarks/serve_search.py --quick    # one small search

Timings exclude the one-time start of the process (imports, the profile's first lookups,
which on a busy machine include OpenBLAS starting its threads): a first small question warms
them up.
"""

from __future__ import annotations

import sys
import time

from sysplan.core.errors import NoPlanFits
from sysplan.hardware import load_cluster
from sysplan.models import resolve_model
from sysplan.planners.serving.search import ServeQuestion, describe, plan_serving
from sysplan.workloads.serving import ServeWorkload
from sysplan.workloads.slo import parse_slos

try:  # the rate search's steps (older planners bisected)
    from sysplan.planners.serving.runs import RATE_STEPS as STEPS
except ImportError:  # pragma: no cover - the planner before the screen
    from sysplan.planners.serving.search import BISECTION_STEPS as STEPS

CASES = [
    ("70b", "dgx-h100", 16, "4000", "500", None, 12),
    ("70b", "dgx-h100", 16, "4000", "500", 4.0, 12),
    ("8b", "dgx-h100", 8, "2000", "300", None, 12),
    ("70b", "dgx-h200", 8, "lognormal:3000,0.6", "lognormal:400,0.5", 3.0, 12),
]


def _question(model, cluster, gpus, isl, osl, rate, trials, requests=2000) -> ServeQuestion:
    return ServeQuestion(
        model=resolve_model(model)[0], cluster=load_cluster(cluster)[0],
        workload=ServeWorkload(isl=isl, osl=osl, rate=rate, num_requests=requests),
        slos=parse_slos(["ttft=300ms", "tpot=50ms"]), max_gpus=gpus, trials=trials)


def _warm_up() -> None:
    plan_serving(_question("8b", "dgx-h100", 1, "200", "20", 2.0, 0, requests=100))


#: ``--quick``: one small search (the tests run it so the script cannot rot).
QUICK = [("8b", "dgx-h100", 2, "500", "50", None, 2)]


def main(argv: list[str]) -> int:
    cases = CASES[:1] if "--reference" in argv else QUICK if "--quick" in argv else CASES
    _warm_up()
    print(f"{'model':5} {'cluster':9} {'gpus':>4} {'isl':>18} {'rate':>5} {'trials':>6} "
          f"{'deploys':>7} {'sims':>5} {'search s':>8} {'s/sim':>6} {'naive s':>8}  best")
    for case in cases:
        model, cluster, gpus, isl, _, rate, trials = case
        q = _question(*case)
        started = time.perf_counter()
        try:
            result = plan_serving(q)
        except NoPlanFits as error:
            print(f"{model:5} {cluster:9} {gpus:>4} {isl:>18} {rate or '-':>5} {trials:>6} "
                  f"{'':>7} {'':>5} {time.perf_counter() - started:>8.1f} {'':>6} {'':>8}  "
                  f"no plan: {error}")
            continue
        elapsed = time.perf_counter() - started
        per_sim = elapsed / max(result.simulated, 1)
        naive = result.searched * (STEPS + 1) * per_sim
        best = result.plans[0]
        rate_text = "-" if rate is None else f"{rate:g}"
        found = best.max_rate_rps or best.rate_rps
        ttft = best.summary["ttft_s"]["p90"]
        print(f"{model:5} {cluster:9} {gpus:>4} {isl:>18} {rate_text:>5} {trials:>6} "
              f"{result.searched:>7} {result.simulated:>5} {elapsed:>8.1f} {per_sim:>6.3f} "
              f"{naive:>8.0f}  {describe(best.deployment)} @ {found:.2f} req/s, "
              f"{best.summary['output_tokens_per_s'] / best.num_gpus:,.0f} tok/s/GPU, "
              f"{best.num_gpus} GPUs, TTFT p90 {ttft * 1e3:.0f} ms, "
              f"{'meets' if best.summary['meets_slo'] else 'MISSES'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
