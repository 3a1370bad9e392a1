"""One self-contained HTML page of a plan document: the tables, the explanation paragraph,
the notes and the pictures, inline (SVG in the page, CSS in a style element, no scripts, no
network), for `sysplan report`."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from sysplan.core.units import GIB
from sysplan.core.version import __version__
from sysplan.planners.types import TrainingResult
from sysplan.plots import style, svg_text

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { padding: 0.25em 0.7em; text-align: right; border-bottom: 1px solid #ddd; }
th:first-child, td:first-child, td.text { text-align: left; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; }
p.explanation { background: #f5f7fa; padding: 0.8em 1em; border-left: 3px solid #0072B2; }
ul.notes { color: #555; font-size: 0.9em; }
"""
_METADATA = re.compile(r"<metadata>.*?</metadata>", re.DOTALL)


def page(title: str, body: Sequence[str]) -> str:
    """A complete HTML document around ``body``."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<h1>{escape(title)}</h1>\n" + "\n".join(body)
            + f"\n<footer><small>sysplan {escape(__version__)}</small></footer>\n"
            "</body>\n</html>\n")


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """An HTML table; every cell escaped."""
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>\n"
                   for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}</table>"


def figure_html(figures: Mapping[str, Any]) -> list[str]:
    """Each figure as inline SVG (its metadata block dropped)."""
    out = []
    for stem, fig in figures.items():
        svg = _METADATA.sub("", svg_text(fig))
        out.append(f'<figure id="{escape(stem)}">\n{svg}\n</figure>')
    return out


def _notes(notes: Sequence[str]) -> str:
    if not notes:
        return ""
    items = "".join(f"<li>{escape(n)}</li>" for n in notes)
    return f'<h2>Notes</h2>\n<ul class="notes">{items}</ul>'


def training_page(result: TrainingResult) -> str:
    """The page of a `sysplan train --json` document."""
    from sysplan.plots import training

    best = result.plans[0]
    rows = [(p.rank, training.layout_text(p), f"{p.estimate.step_time_s:.2f} s",
             f"{p.estimate.tokens_per_s_per_gpu:,.0f}", f"{p.estimate.mfu:.1%}",
             f"{p.estimate.memory.total_bytes / GIB:.1f} GiB", p.why) for p in result.plans]
    memory = [(s.get("stage", i), *(f"{s.get(k, 0.0) / GIB:.1f}" for k, _, _ in
                                    training.MEMORY_TERMS), f"{s.get('total_bytes', 0) / GIB:.1f}")
              for i, s in enumerate(best.estimate.memory.per_stage)]
    terms = [(training.TERM_LABELS.get(k, k), f"{v * 1e3:,.1f}",
              f"{v / best.estimate.step_time_s:.1%}") for k, v in best.estimate.breakdown.items()]
    with style():
        pictures = figure_html(training.figures(result))
    body = [
        (f"<p>{escape(result.model)} on {escape(result.cluster)}, {result.num_gpus} GPUs, "
         f"objective {escape(result.objective)}; {result.searched:,} configurations priced, "
         f"{result.feasible:,} fit.</p>"),
        "<h2>Ranked plans</h2>",
        table(("#", "layout", "step", "tokens/s per GPU", "MFU", "memory", "why"), rows),
        f'<p class="explanation">{escape(result.explanation)}</p>' if result.explanation
        else "",
        "<h2>Pictures of #1</h2>", *pictures,
        "<h2>Memory per stage of #1 (GiB per GPU)</h2>",
        table(("stage", *(label for _, label, _ in training.MEMORY_TERMS), "total"), memory),
        "<h2>Step time of #1</h2>", table(("term", "ms", "share"), terms),
        _notes(result.notes),
    ]
    return page(f"sysplan train: {result.model} on {result.cluster}", body)


def serving_page(documents: Sequence[Mapping[str, Any]]) -> str:
    """The page of a `sysplan serve --json` document (one engine, or several)."""
    from sysplan.plots import serving

    body = []
    for document in documents:
        rows = []
        for plan in document.get("plans") or []:
            latency = plan.get("latency_s") or {}
            rate = plan.get("max_rate_rps") or plan.get("rate_rps")
            rows.append((plan["rank"], plan["gpus"], serving._deployment_text(plan),
                         "-" if rate is None else f"{rate:.2f}",
                         _ms((latency.get("ttft") or {}).get("p90")),
                         _ms((latency.get("tpot") or {}).get("p90")),
                         f"{plan['output_tokens_per_s_per_gpu']:,.0f}",
                         "yes" if plan.get("meets_slo") else "no", plan.get("why", "")))
        with style():
            pictures = figure_html(serving.figures(document))
        explanation = document.get("explanation") or "; ".join(
            p.get("why", "") for p in (document.get("plans") or [])[:1])
        body += [
            f"<h2>Engine {escape(str(document.get('engine')))}</h2>",
            (f"<p>SLO {escape(', '.join(document.get('slos') or []) or 'none')}; "
             f"{document.get('searched')} deployments, {document.get('simulated')} "
             "simulations.</p>"),
            table(("#", "GPUs", "deployment", "rate/s", "TTFT p90 ms", "TPOT p90 ms",
                   "tokens/s per GPU", "meets SLO", "why"), rows),
            f'<p class="explanation">{escape(explanation)}</p>' if explanation else "",
            *pictures, _notes(document.get("notes") or []),
        ]
    first = documents[0] if documents else {}
    return page(f"sysplan serve: {first.get('model')} on {first.get('cluster')}", body)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:,.0f}"
