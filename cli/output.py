"""What every verb shares about stderr: the --quiet option, notes, and progress.

stdout carries results (house style 8); notes, progress and written paths go to stderr,
never hard-wrapped (a pipe or a log file gets whole lines). On a terminal a search shows a
rich progress display (stage, counts, and an ETA where the total is known); off a terminal
it writes a plain log line when a stage starts and every few seconds while it runs.
``--quiet`` drops the notes and the progress (errors still print).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Annotated

import typer
from rich.console import Console

Quiet = Annotated[bool, typer.Option(
    "--quiet", "-q", help="Print no notes and no progress on stderr (results and errors "
    "still print).", rich_help_panel="Output")]

#: Seconds between log lines of a long stage when stderr is not a terminal.
LOG_EVERY_S = 5.0
#: Seconds between polls of a search's counters.
POLL_S = 0.1
#: A search shorter than this logs nothing off a terminal.
QUIET_FOR_S = 1.0


def stderr_console() -> Console:
    """Console for notes and progress: stderr, whole lines (no hard wraps)."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def print_notes(err: Console, notes: Iterable[str | None], quiet: bool = False) -> None:
    """``note: ...`` for each non-empty note, unless ``quiet``."""
    if quiet:
        return
    for note in notes:
        if note:
            err.print(f"note: {note}", markup=False)


def spinner(err: Console, message: str, quiet: bool = False) -> AbstractContextManager:
    """A spinner while something runs: on a terminal only, and not when ``quiet``."""
    return err.status(message) if err.is_terminal and not quiet else nullcontext()


@contextmanager
def search_progress(err: Console, counters, title: str, quiet: bool = False) -> Iterator[None]:
    """Show a serving search's ``counters`` (``planners.serving.progress.SearchProgress``)
    while the block runs: a rich progress display on a terminal, log lines otherwise (only
    once it has run for QUIET_FOR_S: a quick search prints nothing)."""
    if quiet:
        yield
        return
    stop, finished = threading.Event(), threading.Event()
    watch = _watch_terminal if err.is_terminal else _watch_log
    thread = threading.Thread(target=watch, args=(err, counters, title, stop, finished),
                              daemon=True)
    thread.start()
    try:
        yield
        finished.set()
    finally:
        stop.set()
        thread.join()


def _counts(counters) -> str:
    text = f"{counters.simulations:,} simulations"
    if counters.stage == "tuning" and counters.trials_total:
        text = f"trial {counters.trials_done:,}/{counters.trials_total:,}, " + text
    return text


def _eta(counters) -> str:
    """'ETA 12 s' from the tuning trials' pace ('' before the first or outside tuning)."""
    done, total = counters.trials_done, counters.trials_total
    if counters.stage != "tuning" or not done or not total:
        return ""
    spent = time.monotonic() - counters.stage_started_s
    return f"ETA {max(spent / done * (total - done), 0.0):,.0f} s"


def _watch_terminal(err: Console, counters, title: str, stop: threading.Event,
                    _finished: threading.Event) -> None:
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.fields[counts]}"), TextColumn("{task.fields[eta]}"),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task(title, total=None, counts="", eta="")
        while not stop.wait(POLL_S):
            tuning = counters.stage == "tuning" and counters.trials_total
            bar.update(task, description=f"{title}: {counters.stage}",
                       total=counters.trials_total if tuning else None,
                       completed=counters.trials_done if tuning else 0,
                       counts=_counts(counters), eta=_eta(counters))


def _watch_log(err: Console, counters, title: str, stop: threading.Event,
               finished: threading.Event) -> None:
    started = time.monotonic()
    stage, last = None, started
    while not stop.wait(POLL_S):
        now = time.monotonic()
        if now - started < QUIET_FOR_S or counters.stage == "starting":
            continue
        if counters.stage != stage or now - last >= LOG_EVERY_S:
            stage, last = counters.stage, now
            eta = _eta(counters)
            err.print(f"{title}: {stage}, {_counts(counters)}" + (f", {eta}" if eta else ""),
                      markup=False)
    if stage is not None and finished.is_set():
        err.print(f"{title}: done, {counters.simulations:,} simulations in "
                  f"{time.monotonic() - started:,.1f} s", markup=False)
