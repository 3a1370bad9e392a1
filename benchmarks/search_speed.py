"""How fast is the training search? Configurations priced per second and full-search wall time.

    python benchmarks/search_speed.py

Cases from issue 3: GPT-3 175B on 64 and 1,024 A100s, Llama 3.1 405B on 16,384 H100s (plus the
README's main command). Baseline beside ours: pricing the same candidates one at a time
through the per-configuration entry point, timed on a sample and extrapolated.
"""

from __future__ import annotations

import sys
import time

from bench_args import first_cases

from sysplan.costmodels.estimate import estimate_config
from sysplan.hardware import load_cluster
from sysplan.models import resolve_model
from sysplan.planners.space import enumerate_space
from sysplan.planners.training import plan_training
from sysplan.planners.types import Pins
from sysplan.workloads.training import TrainJob

CASES = [
    ("gpt3-175b", "dgx-a100", 64, 2048, 1536),
    ("gpt3-175b", "dgx-a100", 1024, 2048, 1536),
    ("405b", "dgx-h100", 16384, 8192, 2048),
    ("70b", "frontier", 1024, 8192, 512),
]
SAMPLE = 200


def _scalar_rate(model, job, cluster, gpus) -> float:
    """Configurations per second when priced one by one (the loop we avoid)."""
    space = enumerate_space(model, job, cluster, gpus, Pins())
    configs = [space.config(i, ()) for i in range(min(SAMPLE, len(space)))]
    started = time.perf_counter()
    for config in configs:
        estimate_config(model, job, cluster, config)
    return len(configs) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    print(f"{'model':10} {'cluster':9} {'GPUs':>6} {'priced':>8} {'fit':>7} {'search s':>9} "
          f"{'configs/s':>10} {'us/config':>9} {'one-by-one configs/s':>21}")
    for name, cluster_name, gpus, seq, batch in first_cases(argv, CASES):
        model, _ = resolve_model(name)
        cluster, _ = load_cluster(cluster_name)
        job = TrainJob(seq_len=seq, global_batch=batch)
        started = time.perf_counter()
        result = plan_training(model, cluster, job, num_gpus=gpus)
        wall = time.perf_counter() - started
        rate = result.searched / wall
        print(f"{name:10} {cluster_name:9} {gpus:>6} {result.searched:>8,} {result.feasible:>7,} "
              f"{wall:>9.2f} {rate:>10,.0f} {1e6 / rate:>9.1f} "
              f"{_scalar_rate(model, job, cluster, gpus):>21,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
