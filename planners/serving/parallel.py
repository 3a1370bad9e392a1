"""Independent simulations of one question on the machine's cores, with the same answer as one
at a time.

A search hands over a batch of runs at a time (``BATCH``, the same on every machine, so that
what it decides between batches never depends on the core count); the batch runs on up to that
many forked worker processes, which inherit the question and the cost model's tables, and the
results come back in the order asked. Where processes cannot be started the batch runs here,
one run after the other.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any

#: Runs handed over at once (the search's width; fixed for determinism).
BATCH = 2

_STATE: dict[str, Any] = {}


def _call(job: tuple[Callable, tuple]) -> Any:
    _STATE["worker"] = True  # a worker runs its jobs itself, it starts no pool of its own
    function, args = job
    return function(_STATE["owner"], *args)


class Workers:
    """A pool of forked workers calling ``function(owner, *args)`` with the ``owner`` of the
    moment the pool started (its memory is copied, not shared)."""

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self.count = min(BATCH, os.cpu_count() or 1)
        self._pool = None

    def map(self, function: Callable, jobs: Sequence[tuple]) -> list:
        """``[function(owner, *args) for args in jobs]``, in order, on the workers when there
        are several jobs and several cores."""
        if len(jobs) < 2 or self.count < 2 or _STATE.get("worker") or not self._start():
            return [function(self.owner, *args) for args in jobs]
        return self._pool.map(_call, [(function, args) for args in jobs], chunksize=1)

    def _start(self) -> bool:
        if self._pool is None:
            try:
                context = multiprocessing.get_context("fork")
                _STATE["owner"] = self.owner
                self._pool = context.Pool(self.count)
            except (OSError, ValueError):  # no fork here, or no processes allowed
                self.count = 1
                return False
        return True

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
        _STATE.pop("owner", None)
