"""`sysplan export`: turn a saved plan into launch files: a train document (``sysplan train
--json``) into Megatron-LM, DeepSpeed or torchtitan files, a serve document (``sysplan serve
--json``) into vLLM, SGLang or TensorRT-LLM launch scripts (the document's kind decides).

The written paths go to stdout, one per line (they are the result); notes go to stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sysplan.cli.train import _choice, _opt, _positive_int

HELP = """Write the launch files of a saved plan: Megatron-LM, DeepSpeed, torchtitan, vLLM, SGLang.

PLAN is the output of `sysplan train --json` or `sysplan serve --json` (choose a plan with
--rank), or a plan.json / serve.json written by --export json. Train plans export to
megatron, deepspeed, torchtitan; serve plans to vllm, sglang, trtllm (TensorRT-LLM).

Example: sysplan export plan.json --to megatron,torchtitan -o out/
"""

_Plan = Annotated[str, typer.Argument(
    metavar="PLAN", help="Plan document written by sysplan train --json or sysplan serve "
    "--json.", show_default=False)]
_To = Annotated[str, _opt(
    "--to", metavar="TARGETS", help="Train plans: megatron, deepspeed, torchtitan, json; serve "
    "plans: vllm, sglang, trtllm, json (comma-separated).")]
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
    from sysplan.exporters import export_plan, parse_targets, pick_plan, runtime_pricings
    from sysplan.exporters.plan_json import load_plan_json
    from sysplan.exporters.serve_json import read_serve_document

    served = read_serve_document(plan)
    if served is not None:
        _export_serving(served, plan, to, output, rank)
        return
    targets = parse_targets(to)
    result = load_plan_json(plan)
    chosen = pick_plan(result, rank, plan)
    if rank is None and len(result.plans) > 1:
        typer.echo(f"note: exporting rank 1 of the {len(result.plans)} plans in {plan} "
                   "(choose another with --rank)", err=True)
    per_runtime = runtime_pricings(result, chosen, targets, plan, "--to")
    if per_runtime is None and any(t != "json" for t in targets):
        typer.echo(f"note: {plan} was priced with profile {result.profile.name}, which is not at "
                   "hand: every runtime's files state the saved prediction", err=True)
    for path in export_plan(result, chosen, targets, Path(output), plan,
                            torchtitan_format=torchtitan_format, per_runtime=per_runtime):
        typer.echo(str(path))


def _export_serving(results: list[dict], plan: str, to: str, output: str,
                    rank: int | None) -> None:
    """A serve document's launch files (the engines' scripts it carries), paths to stdout."""
    from sysplan.exporters import parse_names
    from sysplan.exporters.base import write_files
    from sysplan.exporters.serve_json import SERVE_TARGETS, export_files

    targets = parse_names(to, "--to", SERVE_TARGETS)
    plans = results[0].get("plans") or []
    if rank is None and len(plans) > 1:
        typer.echo(f"note: exporting rank 1 of the {len(plans)} deployments in {plan} "
                   "(choose another with --rank)", err=True)
    for path in write_files(export_files(results, targets, rank, plan), Path(output)):
        typer.echo(str(path))
