"""`sysplan report`: one self-contained HTML page (tables, paragraph, pictures) of a saved
`sysplan train --json` or `sysplan serve --json` document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sysplan.cli.train import _opt

HELP = """Write one self-contained HTML page of a saved plan: tables, explanation, pictures.

PLAN is what `sysplan train --json` or `sysplan serve --json` wrote. The page has no scripts
and loads nothing from the network (pictures are inline SVG). Needs the plot extra.

Example: sysplan report plans.json -o report.html
"""

_Plan = Annotated[str, typer.Argument(
    metavar="PLAN", help="A sysplan train --json or sysplan serve --json document.",
    show_default=False)]
_Output = Annotated[str, _opt("--output", "-o", metavar="FILE",
                              help="The HTML file to write.")]


def report(plan: _Plan, output: _Output = "report.html") -> None:
    """Write one self-contained HTML page of a saved plan."""
    from sysplan.core.errors import InputError
    from sysplan.plots import check_matplotlib
    from sysplan.plots.report import serving_page, training_page

    target = Path(output)
    if target.is_dir():
        raise InputError(f"--output {output}: is a folder; accepted is an HTML file name")
    check_matplotlib()
    documents = _serve_documents(plan)
    if documents is not None:
        html = serving_page(documents)
    else:
        from sysplan.exporters.plan_json import load_plan_json

        result = load_plan_json(plan)
        if not result.plans:
            raise InputError(f"{plan}: has no plans to report")
        html = training_page(result)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(html, encoding="utf-8")
    except OSError as error:
        raise InputError(f"--output {output}: cannot write ({error.strerror})") from None
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"wrote {target}", markup=False)


def _serve_documents(path: str) -> list[dict] | None:
    """The engine results of a serve document; None when ``path`` is not one (a train
    document, or anything the plan reader then refuses with its own message)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("results"), list):
        return [r for r in data["results"] if isinstance(r, dict)]
    if "engine" in data and isinstance(data.get("plans"), list):
        return [data]
    return None
