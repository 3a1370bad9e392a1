"""`--plot DIR`: write the pictures of a result as PNG and SVG (``sysplan.plots``) and draw
text versions in the terminal with rich: a character timeline of the pipeline, bar charts of
memory per stage and of the step-time terms, the serving frontier, measured against
predicted terms.

matplotlib is imported only when a picture is drawn; ``check`` fails first, with one line
naming ``pip install 'sysplan[plot]'``, so a long search is not run for nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

#: Characters of the text bar charts.
WIDTH = 60
TIMELINE_CHARS = {"F": ("F", "blue"), "B": ("B", "yellow"), "W": ("W", "green"),
                  "dp_comm": ("d", "white"), "optimizer": ("o", "magenta")}
MEMORY_CHARS = (("weights_bytes", "█", "blue"), ("gradients_bytes", "█", "cyan"),
                ("optimizer_bytes", "█", "green"), ("activations_bytes", "█", "yellow"),
                ("other_bytes", "█", "white"))


def check(folder: str | None) -> Path | None:
    """The --plot folder (created), after checking matplotlib is there; None without it."""
    if folder is None:
        return None
    from sysplan.plots import check_matplotlib, output_folder

    check_matplotlib()
    return output_folder(folder)


def write(figures: dict[str, Any], folder: Path, err: Console) -> list[Path]:
    """Save each figure as PNG and SVG in ``folder``; the paths go to stderr."""
    from sysplan.plots import save, style

    written = []
    with style():
        for stem, figure in figures.items():
            written += save(figure, folder, stem)
    for path in written:
        err.print(f"wrote {path}", markup=False)
    return written


def training(result, folder: Path, out: Console | None, err: Console) -> list[Path]:
    """The train pictures into ``folder``; their text versions on ``out`` (None: not)."""
    from sysplan.plots import training as pictures

    with _style():
        written = write(pictures.figures(result), folder, err)
    if out is not None:
        out.print(training_text(result))
    return written


def _style():
    from sysplan.plots import style

    return style()


def training_text(result) -> Text:
    """The pipeline as characters, memory per stage and the step-time terms as bars."""
    from sysplan.plots.training import layout_text, timeline_ops, usable_bytes, waterfall_rows

    plan = result.plans[0]
    text = Text(f"\npipeline of #1 ({layout_text(plan)}); F forward, B backward, W weight "
                "gradient, d DP communication, o optimizer\n")
    schedule, shown, m, times, ops = timeline_ops(plan)
    pp = plan.parallel.pp
    ends = {r: max(op.end for op in ops if op.rank == r) for r in range(pp)}
    span = max(ends[r] + sum(times.tail_s.values()) for r in range(pp))
    for rank in range(pp):
        cells: list[tuple[str, str]] = [("·", "dim")] * WIDTH
        spans = [(op.start, op.end, op.kind) for op in ops if op.rank == rank]
        start = ends[rank]
        for term in ("dp_comm", "optimizer"):
            spans.append((start, start + times.tail_s[term], term))
            start += times.tail_s[term]
        for begin, end, kind in spans:
            first = int(begin / span * WIDTH)
            last = max(first + 1, int(end / span * WIDTH))
            for column in range(first, min(last, WIDTH)):
                cells[column] = TIMELINE_CHARS[kind]
        text.append(f"stage {rank:<3}")
        for char, colour in cells:
            text.append(char, style=colour)
        text.append("\n")
    drawn = f"{shown} of {m} micro-batches" if shown < m else f"{m} micro-batches"
    text.append(f"{'':9}{schedule}, {drawn}, {span:.3g} s drawn\n")
    text.append_text(_memory_text(plan, usable_bytes(result)))
    text.append_text(_waterfall_text(waterfall_rows(plan)))
    return text


def _memory_text(plan, usable: float | None) -> Text:
    stages = plan.estimate.memory.per_stage
    if not stages:
        return Text()
    gib = 2**30
    top = max([s["total_bytes"] for s in stages] + [usable or 0.0])
    text = Text("\nmemory per GPU: weights, gradients, optimizer, activations, other"
                + (f"; | usable {usable / gib:.1f} GiB" if usable else "") + "\n")
    mark = int(usable / top * WIDTH) if usable else None
    for stage in stages:
        text.append(f"stage {int(stage['stage']):<3}")
        used = 0
        for key, char, colour in MEMORY_CHARS:
            width = round(stage.get(key, 0.0) / top * WIDTH)
            text.append(char * width, style=colour)
            used += width
        if mark is not None and mark >= used:
            text.append(" " * (mark - used) + "|", style="red")
        text.append(f" {stage['total_bytes'] / gib:.1f} GiB\n")
    return text


def _waterfall_text(rows: list[tuple[str, float]]) -> Text:
    total = sum(seconds for _, seconds in rows) or 1.0
    text = Text("\nstep time, term by term\n")
    start = 0.0
    for label, seconds in [*rows, ("step time", total)]:
        offset = 0 if label == "step time" else int(start / total * WIDTH)
        width = max(1, round(seconds / total * WIDTH))
        colour = "red" if "comm" in label or "p2p" in label else "blue"
        text.append(f"{label:<16}" + " " * offset)
        text.append("█" * width, style="white" if label == "step time" else colour)
        text.append(f" {seconds:.3g} s\n")
        start += seconds
    return text


def serving(documents: list[dict], folder: Path, *, text: bool) -> list[Path]:
    """The serve pictures of each engine's document (file stems get the engine when there
    are several); with ``text``, the frontier as text on stdout after the tables, which
    ``serve_run.render`` prints: call this after it."""
    from sysplan.cli.render import stdout_console
    from sysplan.plots import serving as pictures

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    out = stdout_console() if text else None

    written = []
    with _style():
        for document in documents:
            figures = pictures.figures(document)
            if len(documents) > 1:
                figures = {f"{stem}-{document['engine']}": f for stem, f in figures.items()}
            written += write(figures, folder, err)
    if out is not None:
        for document in documents:
            out.print(serving_text(document))
    return written


def serving_text(document: dict) -> Text:
    """The SLO-meeting frontier: output tokens/s per GPU at each tokens/s per user."""
    from sysplan.plots.serving import frontier

    points = [p for p in document.get("explored") or []
              if p["meets_slo"] and p.get("tokens_per_s_per_user")]
    edge = frontier([(p["tokens_per_s_per_user"], p["output_tokens_per_s_per_gpu"])
                     for p in points])
    text = Text(f"\nPareto frontier ({document.get('engine')}): output tokens/s per GPU at "
                "tokens/s per user, SLO met\n")
    top = max((y for _, y in edge), default=1.0)
    for x, y in edge:
        text.append(f"{x:>8,.0f} tok/s/user ")
        text.append("█" * max(1, round(y / top * WIDTH)), style="blue")
        text.append(f" {y:,.0f}\n")
    return text


def run(document: dict, folder: Path, out: Console | None, err: Console) -> list[Path]:
    """The measured-against-predicted picture of a run report; bars as text on ``out``."""
    from sysplan.plots import run as pictures

    with _style():
        written = write(pictures.figures(document), folder, err)
    if out is not None:
        out.print(run_text(document))
    return written


def run_text(document: dict) -> Text:
    text = Text("\nmeasured (yellow) against predicted (blue), ms per step\n")
    for entry in document.get("runs") or []:
        rows = [(t["name"], t["predicted_s"], t["measured_s"]) for t in entry["terms"]]
        top = max([max(p, m) for _, p, m in rows] + [1e-30])
        text.append(f"{entry['name']}\n")
        for name, predicted, measured in rows:
            text.append(f"  {name:<14}")
            text.append("█" * max(1, round(predicted / top * WIDTH)), style="blue")
            text.append(f" {predicted * 1e3:.2f}\n{'':16}")
            text.append("█" * max(1, round(measured / top * WIDTH)), style="yellow")
            text.append(f" {measured * 1e3:.2f}\n")
    return text
