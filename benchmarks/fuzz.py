"""Feed sysplan thousands of malformed and odd inputs; count what it did with them.

    python benchmarks/fuzz.py --cases 20000 [--seed N] [--timeout 40]

Every sub-command's options and every file format sysplan reads (cluster YAML, config.json,
profiles, traces, plan JSON, runs CSV, length files) come from the hypothesis strategies of
benchmarks/fuzz_cases.py, shared with tests/test_fuzz.py. Each case runs in-process under a
per-case time limit. Printed: the count of each outcome per family of cases (ok, exit1,
exit2, traceback, hang, wrong-exit, bad-message, warning) and every distinct failure
signature with one command line reproducing it. Exit status 1 when any case failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fuzz_cases import FAILURES, FAMILIES, OUTCOMES, run_case
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed


def run_family(family, cases: int, seed: int, timeout_s: float, record) -> None:
    """``cases`` draws of the family's strategy, each run and handed to ``record``."""
    if cases < 1:
        return

    @hypothesis_seed(seed)
    @settings(max_examples=cases, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=family.strategy)
    def body(case):
        record(family.name, case, run_case(case, timeout_s))

    body()


def _shares(cases: int, weights: list[float]) -> list[int]:
    """``cases`` split over the families by weight, summing to exactly ``cases`` (largest
    remainders; every family at least one case)."""
    total = sum(weights)
    exact = [cases * w / total for w in weights]
    shares = [max(1, int(x)) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - int(exact[i]),
                          reverse=True)
    for i in by_remainder[:max(0, cases - sum(shares))]:
        shares[i] += 1
    return shares


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=40.0, help="seconds per case")
    parser.add_argument("--family", action="append", help="only these families")
    args = parser.parse_args(argv)
    families = [f for f in FAMILIES if not args.family or f.name in args.family]
    counts: dict[str, Counter] = defaultdict(Counter)
    signatures: dict[str, tuple[int, str, str, str]] = {}
    start = time.perf_counter()

    def record(name, case, outcome):
        counts[name][outcome.kind] += 1
        if outcome.kind in FAILURES:
            n, repro, detail, kind = signatures.get(outcome.signature, (0, case.repro(),
                                                                        outcome.detail,
                                                                        outcome.kind))
            signatures[outcome.signature] = (n + 1, repro, detail, kind)
        done = sum(sum(c.values()) for c in counts.values())
        if done % 500 == 0:
            print(f"... {done} cases, {len(signatures)} failure signatures, "
                  f"{time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)

    seconds: dict[str, float] = {}
    shares = _shares(args.cases, [f.weight for f in families])
    for index, (family, share) in enumerate(zip(families, shares, strict=True)):
        began = time.perf_counter()
        run_family(family, share, args.seed + index, args.timeout, record)
        seconds[family.name] = time.perf_counter() - began
        row = counts[family.name]  # as it goes, so a cut-short run still says something
        print(f"{family.name}: {sum(row.values())} cases in {seconds[family.name]:.0f} s: "
              + ", ".join(f"{k} {row[k]}" for k in OUTCOMES if row[k]), file=sys.stderr,
              flush=True)

    print(f"| family | cases | {' | '.join(OUTCOMES)} | s |")
    print("|---" * (len(OUTCOMES) + 3) + "|")
    for family in families:
        row = counts[family.name]
        print(f"| {family.name} | {sum(row.values())} | "
              f"{' | '.join(str(row[k]) for k in OUTCOMES)} | {seconds[family.name]:.0f} |")
    every = sum(counts.values(), Counter())
    print(f"| all | {sum(every.values())} | {' | '.join(str(every[k]) for k in OUTCOMES)} | "
          f"{sum(seconds.values()):.0f} |")
    print(f"\n{sum(every.values())} cases in {time.perf_counter() - start:.0f} s (seed "
          f"{args.seed}); {len(signatures)} distinct failure signatures")
    for signature, (n, repro, detail, kind) in sorted(signatures.items(),
                                                      key=lambda s: -s[1][0]):
        print(f"- {kind} x{n}: {signature}\n    {detail.strip()[:300]!r}\n    {repro}")
    return 1 if signatures else 0


if __name__ == "__main__":
    sys.exit(main())
