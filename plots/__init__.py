"""Pictures of plans: pure functions from the objects the planners return (or the JSON
documents the CLI writes) to matplotlib figures, PNG and SVG files, and one HTML page.

matplotlib is the optional ``plot`` extra: nothing here imports it at module level, and
asking for a picture without it is one InputError line (exit 2) naming the install command.
Figures are drawn on the Agg canvas (no display); SVG keeps its text as text (so a reader,
or a test, finds the labels) and carries no date, so the same plan gives the same file.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sysplan.core.errors import InputError

#: What to run when matplotlib is missing.
INSTALL_HINT = "pip install 'sysplan[plot]'"
#: The formats every picture is written in.
FORMATS = ("png", "svg")
#: matplotlib settings of every picture: text stays text in SVG, ids are reproducible.
RC = {"svg.fonttype": "none", "svg.hashsalt": "sysplan", "font.size": 9,
      "axes.spines.top": False, "axes.spines.right": False}


def new_figure(width: float = 8.0, height: float = 4.0) -> Any:
    """A matplotlib Figure on the Agg canvas; InputError when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise InputError(f"pictures need matplotlib, which is not installed: {INSTALL_HINT}"
                         ) from None
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def check_matplotlib() -> None:
    """InputError (exit 2) naming the install command when matplotlib is missing."""
    new_figure(1, 1)


@contextmanager
def style():
    """The rc settings of RC while a picture is drawn and saved."""
    import matplotlib

    with matplotlib.rc_context(RC):
        yield


def output_folder(path: str | Path, option: str = "--plot") -> Path:
    """``path`` as a folder, created with its parents; InputError when it is a file."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{option} {path}: is a file; accepted is a folder (created if "
                         "missing)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"{option} {path}: cannot create the folder ({error.strerror})"
                         ) from None
    return folder


def save(figure: Any, folder: Path, stem: str) -> list[Path]:
    """Write ``figure`` as ``stem``.png and ``stem``.svg into ``folder``; the paths."""
    written = []
    for fmt in FORMATS:
        path = folder / f"{stem}.{fmt}"
        metadata = {"Date": None} if fmt == "svg" else {"Software": None}
        figure.savefig(path, format=fmt, metadata=metadata)
        written.append(path)
    return written


def svg_text(figure: Any) -> str:
    """``figure`` as an SVG document (for inlining in HTML)."""
    import io

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg"):]
