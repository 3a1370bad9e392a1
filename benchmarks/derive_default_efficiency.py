"""Recompute the default efficiency tables of costmodels/efficiency.py from the H100 CSVs.

    python benchmarks/derive_default_efficiency.py [--data shared/data/measured/h100]

Prints, beside the tables the code carries, the median bf16 GEMM fraction of the datasheet
peak per log2(FLOPs) bucket (layer-shape GEMMs) and the median causal attention fwd+bwd
fraction per sequence length and backend, so a reader can check every number.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from sysplan.costmodels import efficiency

H100_BF16_PEAK = 989.4  # TFLOP/s, H100 SXM datasheet (dense)
DEFAULT = Path(__file__).resolve().parents[2] / "shared/data/measured/h100"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT)
    parser.add_argument("--limit", type=int, default=None,
                        help="read only the first N rows of each CSV (a quick check)")
    args = parser.parse_args(argv)
    buckets: dict[float, list[float]] = defaultdict(list)
    for row in itertools.islice(csv.DictReader((args.data / "gemm.csv").open()), args.limit):
        if row["status"] == "ok" and row["op"] != "square":
            bucket = round(math.log2(float(row["flops"])) * 2) / 2
            buckets[bucket].append(float(row["tflops"]) / H100_BF16_PEAK)
    print("GEMM: log2(FLOPs)  measured median  table")
    for bucket in sorted(buckets):
        table = float(efficiency.default_gemm_fraction(2.0**bucket))
        print(f"  {bucket:5.1f}  {statistics.median(buckets[bucket]):6.3f}  {table:6.3f}")
    attention: dict[tuple[str, int], list[float]] = defaultdict(list)
    for row in itertools.islice(csv.DictReader((args.data / "attention.csv").open()),
                                args.limit):
        if row["status"] == "ok":
            attention[(row["backend"], int(row["seq"]))].append(float(row["fwdbwd_tflops"]))
    print("attention: backend  seq  measured median fraction")
    for (backend, seq), values in sorted(attention.items()):
        print(f"  {backend:6} {seq:6}  {statistics.median(values) / H100_BF16_PEAK:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
