"""Malformed and odd input to every sub-command and file format, through typer's runner.

The strategies and the runner are benchmarks/fuzz_cases.py's (benchmarks/fuzz.py runs the
same families for 20,000 cases). Each case must end without a traceback, a hang (a SIGALRM
guard fails it), a warning or an exit code other than 0, 1 or 2; a failure prints one
``error:`` line; a case holding a known-bad value exits 2. Seeded (derandomize), about 1,500
cases in about a minute on two cores: the expensive families (runs CSVs fit a calibration,
length files search sequence mixes, valid serve questions simulate) get few cases.
"""

from __future__ import annotations

import importlib
import sys

import pytest
from benchmark_scripts import BENCHMARKS
from hypothesis import HealthCheck, Phase, given, settings

if str(BENCHMARKS) not in sys.path:  # benchmarks/fuzz.py imports it from its own folder too
    sys.path.insert(0, str(BENCHMARKS))
fuzz_cases = importlib.import_module("fuzz_cases")

#: Cases per family in the suite's run.
EXAMPLES = {
    "train-bad": 400, "train": 15, "serve-bad": 400, "serve": 4, "profile": 150, "run": 150,
    "export": 80, "stray": 100, "cluster-yaml": 50, "config-json": 60, "profile-file": 60,
    "trace": 30, "plan-json": 80, "runs-csv": 2, "lengths-file": 6,
}
#: Per-case limit: a case past it is a hang (the slowest valid case takes about 2 s).
TIMEOUT_S = 30


def test_every_family_is_fuzzed():
    assert set(EXAMPLES) == {family.name for family in fuzz_cases.FAMILIES}


@pytest.mark.parametrize("family", fuzz_cases.FAMILIES, ids=lambda f: f.name)
def test_fuzz(family):
    fuzz_cases.plan_bytes()  # made before any case runs: the strategies only read it
    failures = []

    @settings(max_examples=EXAMPLES[family.name], derandomize=True, database=None,
              deadline=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=family.strategy)
    def check(case):
        outcome = fuzz_cases.run_case(case, TIMEOUT_S)
        if outcome.kind in fuzz_cases.FAILURES:
            failures.append(f"{outcome.kind}: {outcome.signature}\n  {outcome.detail!r}\n"
                            f"  {case.repro()[:2000]}")

    check()
    assert not failures, f"{len(failures)} failing cases:\n" + "\n".join(failures[:5])
