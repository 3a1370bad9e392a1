"""`sysplan export`: turn a saved plan (``sysplan train --json``) into launch files.

The written paths go to stdout, one per line (they are the result); notes go to stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sysplan.cli.train import _choice, _opt, _positive_int

HELP = """Write the launch files of a saved plan for Megatron-LM, DeepSpeed or torchtitan.

PLAN is the output of `sysplan train --json` (choose a plan with --rank) or a plan.json
written by --export json.

Example: sysplan export plan.json --to megatron,torchtitan -o out/
"""

_Plan = Annotated[str, typer.Argument(
    metavar="PLAN", help="Plan document written by sysplan train --json.", show_default=False)]
_To = Annotated[str, _opt(
    "--to", metavar="TARGETS", help="megatron, deepspeed, torchtitan, json (comma-separated).")]
_Output = Annotated[str, _opt("--output", "-o", metavar="DIR", help="Folder the files go to.")]
_Rank = Annotated[int | None, _opt(
    "--rank", metavar="N", parser=_positive_int,
    help="Which plan of the document to export (default: rank 1).")]
_TorchtitanFormat = Annotated[str, _opt(
    "--torchtitan-format", metavar="[python|toml]", parser=_choice("python", "toml"),
    help="torchtitan config: a config-function module (torchtitan 0.3) or TOML (<= 0.2.2).")]


def export(
    plan: _Plan,
    to: _To,
    output: _Output = "sysplan-export",
    rank: _Rank = None,
    torchtitan_format: _TorchtitanFormat = "python",
) -> None:
    """Write the launch files of a saved plan."""
    from sysplan.exporters import export_plan, parse_targets, pick_plan
    from sysplan.exporters.plan_json import load_plan_json

    targets = parse_targets(to)
    result = load_plan_json(plan)
    chosen = pick_plan(result, rank, plan)
    if rank is None and len(result.plans) > 1:
        typer.echo(f"note: exporting rank 1 of the {len(result.plans)} plans in {plan} "
                   "(choose another with --rank)", err=True)
    for path in export_plan(result, chosen, targets, Path(output), plan,
                            torchtitan_format=torchtitan_format):
        typer.echo(str(path))
