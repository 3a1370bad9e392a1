"""Collective seconds looked up in a CPU profile's measured table instead of ring formulas.

On a CPU the processes talk over gloo, whose algorithms are not NCCL's ring, so a ring
formula scaled by a bus-bandwidth fraction mis-prices them; ``MeasuredCollectives`` prices
a collective from the rows ``sysplan profile --device cpu`` measured (profiles/collectives.py:
message_bytes is the full tensor, nccl-tests' size convention). Per op and measured group
size, time is piecewise linear in log(bytes)-log(seconds) between the measured messages (their
times first made non-decreasing in size: ``nondecreasing``); below
the smallest it is the smallest message's time (the latency floor), above the largest it grows
linearly with bytes from the largest (bandwidth-bound). A group size that was not measured uses
the nearest measured group of that op (in log2 of the size, the larger on a tie) scaled by
the ratio of ring volume factors; an op that was not measured borrows another's time
(``FALLBACK``). A group of one costs nothing. Everything is numpy over the queries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sysplan.profiles.schema import CollectiveTable

#: An op the table lacks is priced as the first of these it has (gloo lacks reduce_scatter in
#: many torch builds): the executor reduce-scatters on gloo as all-reduce + slice, and an
#: all-gather moves no more than an all-reduce (Thakur et al. 2005: (n-1)/n S vs 2(n-1)/n S).
FALLBACK = {"reduce_scatter": ("all_reduce",), "all_gather": ("all_reduce",),
            "all_to_all": ("all_gather", "all_reduce")}
#: A missing send_recv of S is a 2-rank all-reduce of S times this: the ring all-reduce is a
#: reduce-scatter and an all-gather, two steps where a send is one (Thakur et al. 2005, 4.5).
#: Exact when latency-bound; bandwidth-bound both move S per rank (nccl-tests
#: doc/PERFORMANCE.md: busbw factors 1 and 2(n-1)/n = 1), so there it is optimistic.
SEND_RECV_FROM_ALL_REDUCE = 0.5


def ring_volume(op: str, group_size) -> np.ndarray:
    """Bytes each rank moves per byte of the full message, in a ring of ``group_size``."""
    n = np.asarray(group_size, dtype=float)
    if op == "send_recv":  # nccl-tests doc/PERFORMANCE.md: sendrecv bus factor 1
        return np.ones_like(n)
    # ring all-reduce 2(n-1)/n S, reduce-scatter / all-gather / all-to-all (n-1)/n S per rank
    # (Thakur et al. 2005; the nccl-tests doc/PERFORMANCE.md bus bandwidth factors)
    per_step = (n - 1.0) / np.maximum(n, 1.0)
    return 2.0 * per_step if op == "all_reduce" else per_step


def nondecreasing(values: np.ndarray) -> np.ndarray:
    """The least-squares non-decreasing fit of ``values`` (isotonic regression by pool
    adjacent violators, Ayer et al. 1955): a collective never moves more bytes in less
    time, so a measured dip is noise (a shared CPU's slow phase under a smaller message)
    and is pooled with its neighbours."""
    blocks: list[list[float]] = []  # [mean, count] per pooled block
    for value in np.asarray(values, dtype=float):
        blocks.append([value, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (upper, n_upper), (lower, n_lower) = blocks.pop(), blocks.pop()
            blocks.append([(upper * n_upper + lower * n_lower) / (n_upper + n_lower),
                           n_upper + n_lower])
    return np.repeat([b[0] for b in blocks], [int(b[1]) for b in blocks])


@dataclass(frozen=True, eq=False)
class _Curve:
    """One op at one group size: log seconds over log bytes, at the measured messages."""

    message_bytes: np.ndarray  # increasing
    seconds: np.ndarray

    def __call__(self, message: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(seconds, outside the measured messages) at ``message`` bytes."""
        x = np.log(np.maximum(message, 1.0))
        # np.interp holds the first value below the range: the smallest message's latency floor
        inside = np.exp(np.interp(x, np.log(self.message_bytes), np.log(self.seconds)))
        largest, slowest = self.message_bytes[-1], self.seconds[-1]
        # past the largest message the time is bandwidth-bound: linear in bytes
        seconds = np.where(message > largest, slowest * message / largest, inside)
        return seconds, (message < self.message_bytes[0]) | (message > largest)


@dataclass(frozen=True, eq=False)
class MeasuredCollectives:
    """Seconds of each collective op on one node, looked up in a profile's measured rows."""

    curves: dict[str, dict[int, _Curve]]  # op -> measured group size -> curve

    @classmethod
    def from_table(cls, table: CollectiveTable) -> MeasuredCollectives | None:
        """The lookup of ``table``'s "node" rows (its "network" rows when it has none, as a
        launched multi-node run writes); None without all_reduce rows, which every op falls
        back on. Repeated (op, group, bytes) rows average their times; groups of one (which
        cost nothing) are dropped."""
        tier = "node" if any(row[1] == "node" for row in table.rows) else "network"
        rows = [row for row in table.rows if row[1] == tier and row[2] > 1]
        curves: dict[str, dict[int, _Curve]] = {}
        for op, group in sorted({(row[0], row[2]) for row in rows}):
            points = np.array([(row[3], row[4]) for row in rows
                               if row[0] == op and row[2] == group], dtype=float)
            sizes, index = np.unique(points[:, 0], return_inverse=True)
            seconds = np.bincount(index, points[:, 1]) / np.bincount(index)
            curves.setdefault(op, {})[group] = _Curve(sizes, nondecreasing(seconds))
        return cls(curves) if "all_reduce" in curves else None

    def seconds(self, op: str, message_bytes, group_size) -> tuple[np.ndarray, np.ndarray]:
        """(seconds, extrapolated) of ``op`` on ``message_bytes`` (the full tensor) over
        ``group_size`` ranks, broadcast together; a group of one (or fewer) costs 0.

        A group size not measured for ``op`` takes the nearest measured one's time scaled by
        ``ring_volume(op, n) / ring_volume(op, measured)``; an op not measured takes
        ``FALLBACK``'s time (send_recv: a 2-rank all_reduce x ``SEND_RECV_FROM_ALL_REDUCE``).
        ``extrapolated`` marks queries outside the measured messages, groups or ops.
        """
        message, group = np.broadcast_arrays(np.asarray(message_bytes, dtype=float),
                                             np.asarray(group_size, dtype=float))
        if op not in self.curves:
            if op == "send_recv":
                seconds, _ = self.seconds("all_reduce", message, 2.0)
                seconds = np.where(group > 1, SEND_RECV_FROM_ALL_REDUCE * seconds, 0.0)
                return seconds, np.ones(message.shape, dtype=bool)
            substitute = next((o for o in FALLBACK[op] if o in self.curves), "all_reduce")
            seconds, _ = self.seconds(substitute, message, group)
            return seconds, np.ones(message.shape, dtype=bool)
        return self._measured_op(op, message, group)

    def _measured_op(self, op: str, message: np.ndarray, group: np.ndarray):
        curves = self.curves[op]
        # measured groups largest first, so that argmin breaks a tie towards the larger group
        measured = np.array(sorted(curves, reverse=True), dtype=float)
        distance = np.abs(np.log2(np.maximum(group, 1.0))[..., None] - np.log2(measured))
        nearest = measured[np.argmin(distance, axis=-1)]
        seconds = np.zeros(message.shape)
        outside = np.zeros(message.shape, dtype=bool)
        for size in measured:
            mask = (nearest == size) & (group > 1)
            if not mask.any():
                continue
            base, beyond = curves[int(size)](message[mask])
            # an unmeasured group: the ring volume ratio (Thakur et al. 2005) rescales it
            scale = ring_volume(op, group[mask]) / ring_volume(op, size)
            seconds[mask] = base * scale
            outside[mask] = beyond | (group[mask] != size)
        return seconds, outside
