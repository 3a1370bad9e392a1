"""Pictures of a `sysplan run` report: measured against predicted seconds per term, one
group of bars per plan, from the report's JSON document (``runs[].terms``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sysplan.plots import new_figure


def terms_figure(document: Mapping[str, Any]) -> Any:
    """Per plan, each term's predicted and measured milliseconds per step side by side."""
    runs = document.get("runs") or []
    figure = new_figure(9.0, 1.4 + 2.6 * max(len(runs), 1))
    axes = figure.subplots(max(len(runs), 1), 1, squeeze=False)[:, 0]
    for axis, run in zip(axes, runs, strict=False):
        terms = run.get("terms") or []
        names = [t["name"] for t in terms] + ["step"]
        predicted = [t["predicted_s"] * 1e3 for t in terms] + [run["predicted_step_s"] * 1e3]
        measured = [t["measured_s"] * 1e3 for t in terms] + [
            run["measured"]["median_step_s"] * 1e3]
        rows = range(len(names))
        axis.barh([r - 0.2 for r in rows], predicted, height=0.4, color="#0072B2",
                  label="predicted")
        axis.barh([r + 0.2 for r in rows], measured, height=0.4, color="#E69F00",
                  label="measured")
        axis.set_yticks(list(rows), names)
        axis.invert_yaxis()
        axis.set_xlabel("ms per step")
        axis.set_title(f"{run['name']}: step error {run['step_error']:+.0%}", loc="left")
        axis.legend(fontsize=7, frameon=False, loc="lower right")
    return figure


def figures(document: Mapping[str, Any]) -> dict[str, Any]:
    return {"run-terms": terms_figure(document)} if document.get("runs") else {}
