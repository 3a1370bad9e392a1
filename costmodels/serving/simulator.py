"""Discrete-event simulator of continuous batching across the replicas of a deployment.

``simulate`` replays requests (arrival time, prompt and output length) through a
``Deployment``: every replica runs engine iterations back to back while it has work, each
priced by ``StepCost.iteration_seconds`` and emitting one token per decoding sequence (and the
first token of each prompt whose prefill completes in it); replicas advance independently,
ordered by a heap of (next event time, replica) merged with the arrivals. Scheduler policies
(vLLM/SGLang-like and TensorRT-LLM-like) live in ``costmodels.serving.replica``, the result in
``costmodels.serving.result``. The structure follows Vidur (Agrawal et al., MLSys'24: global
scheduler -> replica scheduler -> batch time) and DistServe/Splitwise for disaggregation
(prefill pool -> KV transfer -> decode pool).

Routing, per pool: round-robin in arrival order, or least-loaded = fewest outstanding requests
(queued or running on that replica; Vidur's LOR policy), ties to the lowest replica index.
Disaggregated: a request is routed to a prefill replica on arrival; its first token comes
from there (TTFT); its KV is then sent to a decode replica routed at that moment, taking
``StepCost.kv_transfer_seconds``, and it joins that replica's decode batch on arrival, so the
transfer shows in its first inter-token gap.

Speed: a replica runs its next iterations inline, without the heap, while nothing else can
reach it before they end (the next arrival, and for decode replicas and closed loops the next
event of any replica); iteration times are memoised per cost model and layout, across
simulations (``StepCost`` is pure).
"""

from __future__ import annotations

import heapq
import math
import weakref

import numpy as np

from sysplan.core.errors import InputError
from sysplan.costmodels.serving.deployment import Deployment, StepCost
from sysplan.costmodels.serving.replica import Ledger, Replica
from sysplan.costmodels.serving.result import (
    SimResult,
    collect_result,
    to_request_metrics,
    weighted_percentile,
)

__all__ = ["SimResult", "simulate", "to_request_metrics", "weighted_percentile"]


def _check_requests(arrival_s: np.ndarray, input_tokens: np.ndarray, output_tokens: np.ndarray,
                    concurrency: int | None, max_time_s: float | None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrival = np.asarray(arrival_s, dtype=float).reshape(-1)
    inputs = np.asarray(input_tokens).reshape(-1)
    outputs = np.asarray(output_tokens).reshape(-1)
    if not arrival.size == inputs.size == outputs.size:
        raise InputError(f"arrival_s, input_tokens and output_tokens differ in length: "
                         f"{arrival.size}, {inputs.size}, {outputs.size}")
    for name, tokens in (("input_tokens", inputs), ("output_tokens", outputs)):
        if tokens.size and (not np.all(tokens == np.round(tokens)) or tokens.min() < 1):
            raise InputError(f"{name}: expected whole numbers >= 1, got min {tokens.min()}")
    if concurrency is None and arrival.size and (
            not np.all(np.isfinite(arrival)) or arrival.min() < 0 or np.any(np.diff(arrival) < 0)):
        raise InputError("arrival_s: expected finite times >= 0 in non-decreasing order")
    if concurrency is not None and concurrency < 1:
        raise InputError(f"concurrency {concurrency}: expected at least 1 request in flight")
    if max_time_s is not None and not max_time_s > 0:
        raise InputError(f"max_time_s {max_time_s}: expected a positive time in seconds")
    return arrival, inputs.astype(np.int64), outputs.astype(np.int64)


#: Iteration times per cost model and layout, shared by every simulation priced by that cost
#: model (``StepCost`` is pure: equal batches on one layout cost the same, run after run).
_SECONDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _seconds_cache(cost: StepCost, layout) -> dict:
    try:
        per_layout = _SECONDS.setdefault(cost, {})
    except TypeError:  # a cost model that cannot be weakly referenced: one run's memory only
        return {}
    return per_layout.setdefault(layout, {})


def _build_replicas(deployment: Deployment, cost: StepCost, ledger: Ledger
                    ) -> tuple[list[Replica], list[Replica]]:
    """(pool that receives arrivals, decode pool: empty when aggregated)."""
    knobs = deployment.engine
    if deployment.disaggregated:
        pools = [("prefill", deployment.prefill, deployment.prefill_replicas),
                 ("decode", deployment.decode, deployment.decode_replicas)]
    else:
        pools = [("mixed", deployment.replica, deployment.replicas)]
    built: list[list[Replica]] = []
    index = 0
    for role, layout, count in pools:
        capacity = cost.kv_capacity_tokens(layout, knobs)
        seconds_cache = _seconds_cache(cost, layout)
        pool = []
        for _ in range(count):
            pool.append(Replica(index, role, layout, knobs, capacity, cost, ledger,
                                seconds_cache))
            index += 1
        built.append(pool)
    return built[0], (built[1] if len(built) > 1 else [])


class _Router:
    """Round-robin or least outstanding requests over one pool (ties: lowest index)."""

    def __init__(self, pool: list[Replica], policy: str) -> None:
        self.pool, self.least_loaded, self.turn = pool, policy == "least-loaded", 0

    def pick(self) -> Replica:
        if self.least_loaded:
            return min(self.pool, key=lambda replica: (replica.outstanding, replica.index))
        replica = self.pool[self.turn % len(self.pool)]
        self.turn += 1
        return replica


#: Heap entries with this replica index route a finished prefill's KV to a decode replica.
ROUTE = -1


class _EventLoop:
    """Arrivals (sorted times; a closed loop appends one per finish) merged with a heap of
    (time, tie-break, replica, rid): an iteration end (rid -1), a KV transfer landing, or
    (replica ROUTE) a prefill finished whose KV is to be routed, in time order."""

    def __init__(self, deployment: Deployment, cost: StepCost, ledger: Ledger,
                 times: list[float], sent: int, inputs: list[int], horizon_s: float) -> None:
        self.deployment, self.cost, self.ledger = deployment, cost, ledger
        self.entry_pool, decode_pool = _build_replicas(deployment, cost, ledger)
        self.replicas = self.entry_pool + decode_pool
        self.entry_router = _Router(self.entry_pool, deployment.routing)
        self.decode_router = _Router(decode_pool, deployment.routing)
        self.times, self.sent, self.inputs, self.horizon_s = times, sent, inputs, horizon_s
        self.closed_loop = sent < len(times)
        self.heap: list[tuple[float, int, int, int]] = []
        self.transfer_s: dict[int, float] = {}  # KV transfer time by prompt length
        self.ticket = self.next_rid = 0
        self.stopped_s = 0.0

    def run(self) -> None:
        times, heap = self.times, self.heap
        while True:
            next_arrival = times[self.next_rid] if self.next_rid < self.sent else math.inf
            next_event = heap[0][0] if heap else math.inf
            now = min(next_arrival, next_event)
            if now == math.inf or now > self.horizon_s:
                if now < math.inf:
                    self.stopped_s = self.horizon_s
                return
            self.stopped_s = now
            if next_arrival <= next_event:
                touched = []
                while self.next_rid < self.sent and times[self.next_rid] <= now:
                    replica = self.entry_router.pick()
                    replica.outstanding += 1
                    rid = self.next_rid
                    replica.enqueue(rid, self.inputs[rid], self.inputs[rid])
                    touched.append(replica)
                    self.next_rid += 1
                for replica in dict.fromkeys(touched):  # once each, in routing order
                    self._advance(replica, now)
                self._settle(now)
            else:
                _, _, index, rid = heapq.heappop(heap)
                if index == ROUTE:
                    self._route_transfer(rid, now)
                    continue
                replica = self.replicas[index]
                if rid < 0:
                    replica.complete(now)
                    self._settle(now)
                else:
                    replica.enqueue(rid, 0, self.inputs[rid])
                self._advance(replica, now)

    def _advance(self, replica: Replica, now: float) -> None:
        """Start the replica's next iteration; run further ones inline while nothing else can
        reach the replica before they end; leave the last on the heap."""
        end = replica.start(now)
        if end is None:
            return
        limit = self._limit(replica)
        while end < limit:
            replica.complete(end)
            self._settle(end)
            if self.closed_loop and self.sent > self.next_rid:
                limit = min(limit, self.times[self.next_rid])
            end = replica.decode_ahead(end, limit)
            following = replica.start(end)
            if following is None:
                self.stopped_s = max(self.stopped_s, end)
                return
            end = following
        heapq.heappush(self.heap, (end, self.ticket, replica.index, -1))
        self.ticket += 1

    def _limit(self, replica: Replica) -> float:
        """The earliest time anything else can reach ``replica``: the next arrival; in a
        closed loop any event (a finish sends a request); for a decode replica the next
        prefill iteration's end or routing of a finished prefill (routing reads every decode
        replica's load) and the next KV landing on it. Other decode replicas' iterations
        cannot reach it."""
        limit = min(self.times[self.next_rid] if self.next_rid < self.sent else math.inf,
                    self.horizon_s)
        if self.closed_loop:
            return min(limit, self.heap[0][0] if self.heap else math.inf)
        if replica.role == "decode":
            replicas, own = self.replicas, replica.index
            for time_s, _, index, rid in self.heap:
                if time_s < limit and (index == ROUTE or (rid >= 0 and index == own) or (
                        rid < 0 and replicas[index].role == "prefill")):
                    limit = time_s
        return limit

    def _route_transfer(self, rid: int, now: float) -> None:
        target = self.decode_router.pick()
        target.outstanding += 1  # routed now, queued when the KV lands
        tokens = self.inputs[rid]
        seconds = self.transfer_s.get(tokens)
        if seconds is None:
            seconds = self.transfer_s[tokens] = self.cost.kv_transfer_seconds(
                self.deployment.prefill, self.deployment.decode, tokens)
        heapq.heappush(self.heap, (now + seconds, self.ticket, target.index, rid))
        self.ticket += 1

    def _settle(self, now: float) -> None:
        """Send finished prefills' KV to decode replicas; in closed loop, each finish (or
        rejection) sends the next request."""
        ledger = self.ledger
        for rid in ledger.handoffs:  # routed when the main loop reaches ``now``
            heapq.heappush(self.heap, (now, self.ticket, ROUTE, rid))
            self.ticket += 1
        ledger.handoffs.clear()
        for _ in ledger.done:
            if self.sent < len(self.times):
                self.times[self.sent] = now
                self.sent += 1
        ledger.done.clear()


def simulate(deployment: Deployment, cost: StepCost, arrival_s: np.ndarray,
             input_tokens: np.ndarray, output_tokens: np.ndarray, *,
             concurrency: int | None = None, max_time_s: float | None = None,
             seed: int = 0) -> SimResult:
    """Serve the requests with ``deployment``, iterations priced by ``cost``.

    ``arrival_s`` sorted (all zeros: offline, every request queued at time 0). With
    ``concurrency=N`` the arrival times are ignored: N requests are sent at time 0 and each
    finish sends the next (closed loop, in input order). Stops when every request finished or
    at ``max_time_s``; unfinished requests get NaN times (see ``SimResult``), which is how a
    caller tells a saturated deployment. ``seed`` is accepted for a stable interface: the
    simulation draws no random numbers (ties break by replica index and admission order), so
    equal inputs give equal results.
    """
    del seed  # deterministic by construction
    arrival, inputs, outputs = _check_requests(arrival_s, input_tokens, output_tokens,
                                               concurrency, max_time_s)
    count = arrival.size
    sent = count if concurrency is None else min(concurrency, count)
    times = arrival.tolist() if concurrency is None else [0.0] * sent + [math.inf] * (count - sent)
    ledger = Ledger(inputs, outputs)
    loop = _EventLoop(deployment, cost, ledger, times, sent, inputs.tolist(),
                      math.inf if max_time_s is None else float(max_time_s))
    loop.run()
    arrival = np.array(loop.times[:loop.sent] + [math.nan] * (count - loop.sent))
    return collect_result(ledger, loop.replicas, arrival, inputs, outputs, loop.stopped_s)
