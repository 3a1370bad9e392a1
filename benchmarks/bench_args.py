"""What the benchmark scripts share: reading ``--cases N`` (the tests run one case of each)."""

from __future__ import annotations

import sys


def first_cases(argv: list[str] | None, cases: list) -> list:
    """``cases``, or the first N with ``--cases N`` (``argv`` None: the command line)."""
    args = sys.argv[1:] if argv is None else argv
    if "--cases" in args:
        return cases[:int(args[args.index("--cases") + 1])]
    return cases
