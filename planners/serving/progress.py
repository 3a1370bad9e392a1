"""How far a serving search has got, readable from another thread while it runs.

The planner only counts (house style 8: no rendering below ``cli/``): the stage it is in,
the simulations recorded, and the Optuna trials finished out of those planned. Trials run in
forked workers (``parallel``), so their count lives in shared memory the workers inherit;
the CLI polls the object to draw a progress bar or write log lines.
"""

from __future__ import annotations

import time

#: Stages of ``search.plan_serving``, in order.
STAGES = ("screening", "tuning", "verifying", "done")


class SearchProgress:
    """Counters of one search (stage, simulations, trials); safe to read at any time."""

    def __init__(self) -> None:
        self.stage = "starting"
        self.stage_started_s = time.monotonic()
        self.simulations = 0
        self.trials_total = 0
        try:
            import multiprocessing

            self._trials = multiprocessing.Value("l", 0)  # shared with forked workers
        except (ImportError, OSError):  # no shared memory here: a plain counter
            self._trials = _Plain()

    def enter(self, stage: str, trials_total: int = 0) -> None:
        """Start ``stage`` (one of STAGES); ``trials_total`` when it tunes."""
        self.stage, self.stage_started_s = stage, time.monotonic()
        if trials_total:
            self.trials_total = trials_total

    def simulated(self) -> None:
        """One more simulation recorded."""
        self.simulations += 1

    def trial_done(self, *_: object) -> None:
        """One more Optuna trial finished (an Optuna callback: study, trial)."""
        with self._trials.get_lock():
            self._trials.value += 1

    @property
    def trials_done(self) -> int:
        return int(self._trials.value)


class _Plain:
    """A counter with the interface of ``multiprocessing.Value`` for one process."""

    def __init__(self) -> None:
        self.value = 0

    def get_lock(self):
        from contextlib import nullcontext

        return nullcontext()
