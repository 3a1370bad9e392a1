"""What one simulation observed (``SimResult``) and how to read it: weighted percentiles of
the pooled ITL gaps, per-request gaps, and the ``workloads.serving.RequestMetrics`` adapter.

Memory of the ITL record: an inter-token gap is the same for every sequence decoded in one
iteration, so each replica keeps one gap per decode iteration with the number of sequences
that shared it; a request's gaps are pieces (ranges of those steps, plus the few gaps of its
own: the first after a KV transfer or a recompute), never one timestamp per token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from sysplan.costmodels.serving.replica import Ledger, Replica

if TYPE_CHECKING:
    from sysplan.workloads.serving import RequestMetrics


@dataclass(frozen=True, eq=False)
class SimResult:
    """What one simulation observed: per-request arrays (seconds, one entry per request, in
    input order), ITL gaps and counters. A request not finished by ``max_time_s`` (or rejected
    because its KV never fits) has NaN ``finish_s``, ``e2e_s``, ``tpot_s`` and ``itl_max_s``;
    NaN ``first_token_s``/``ttft_s`` if it had no token yet, NaN ``queue_s`` if never scheduled
    and, in closed loop, NaN ``arrival_s`` if it was never sent."""

    arrival_s: np.ndarray  #: arrival (closed loop: when it was sent)
    first_token_s: np.ndarray  #: first output token
    finish_s: np.ndarray  #: last output token
    ttft_s: np.ndarray  #: first_token_s - arrival_s
    tpot_s: np.ndarray  #: (e2e - ttft) / (O - 1), 0 when O == 1 (vllm bench serve)
    itl_max_s: np.ndarray  #: largest gap between two consecutive output tokens (0 if O == 1)
    e2e_s: np.ndarray  #: finish_s - arrival_s
    queue_s: np.ndarray  #: first time scheduled (first prefill chunk) - arrival_s
    input_tokens: np.ndarray  #: prompt tokens
    output_tokens: np.ndarray  #: output tokens
    finished: np.ndarray  #: bool: every output token produced
    rejected: np.ndarray  #: bool: its KV can never fit a replica, so it was never served
    itl_gap_s: np.ndarray  #: distinct gaps of all requests, with ...
    itl_weight: np.ndarray  #: ... how many token gaps had each value (weighted_percentile)
    preemptions: int  #: recompute preemptions (vLLM policy; 0 for trtllm)
    iterations: int  #: engine iterations over all replicas
    busy_s: np.ndarray  #: busy time per replica (aggregated, or prefill pool then decode pool)
    replica_roles: tuple[str, ...]  #: "mixed", "prefill" or "decode" per busy_s entry
    makespan_s: float  #: last finish (all finished), else the time the simulation stopped
    _pieces: list = field(repr=False, default_factory=list)
    _step_gaps: tuple = field(repr=False, default=())

    def __len__(self) -> int:
        return self.arrival_s.size

    def itl_by_request(self) -> tuple[np.ndarray, np.ndarray]:
        """(every token gap, request by request in input order; gaps per request). Requests
        cut off by ``max_time_s`` contribute the gaps they had."""
        parts: list[np.ndarray] = []
        counts = np.zeros(len(self), dtype=np.int64)
        for rid, pieces in enumerate(self._pieces):
            start = len(parts)
            run: list[float] = []
            for piece in pieces:
                if isinstance(piece, tuple):
                    if run:
                        parts.append(np.array(run))
                        run = []
                    replica, first, stop = piece
                    parts.append(self._step_gaps[replica][first:stop])
                else:
                    run.append(piece)
            if run:
                parts.append(np.array(run))
            counts[rid] = sum(part.size for part in parts[start:])
        return (np.concatenate(parts) if parts else np.zeros(0)), counts


def weighted_percentile(values: np.ndarray, weights: np.ndarray, q: float | np.ndarray
                        ) -> float | np.ndarray:
    """Percentile(s) ``q`` (0-100) of ``values`` repeated ``weights`` times, by the inverted
    CDF (the smallest value whose cumulative weight reaches q % of the total; numpy's
    ``method="inverted_cdf"`` for unit weights). NaN values are ignored; NaN if none left."""
    values = np.asarray(values, dtype=float)
    weights = np.asarray(weights, dtype=float)
    keep = np.isfinite(values) & (weights > 0)
    values, weights = values[keep], weights[keep]
    quantiles = np.asarray(q, dtype=float) / 100.0
    if not values.size:
        result = np.full(quantiles.shape, math.nan)
    else:
        order = np.argsort(values, kind="stable")
        cumulative = np.cumsum(weights[order])
        index = np.searchsorted(cumulative, quantiles * cumulative[-1], side="left")
        result = values[order][np.clip(index, 0, values.size - 1)]
    return float(result) if result.ndim == 0 else result


def to_request_metrics(result: SimResult) -> RequestMetrics:
    """The run as ``workloads.serving.RequestMetrics`` (per-request ITL gaps included)."""
    from sysplan.workloads.serving import RequestMetrics

    gaps, counts = result.itl_by_request()
    return RequestMetrics(
        arrival_s=result.arrival_s, first_token_s=result.first_token_s,
        finish_s=result.finish_s, ttft_s=result.ttft_s, tpot_s=result.tpot_s,
        itl_max_s=result.itl_max_s, itl_all_s=gaps, e2e_s=result.e2e_s,
        queue_s=result.queue_s, output_tokens=result.output_tokens, itl_counts=counts,
    )


def collect_result(ledger: Ledger, replicas: list[Replica], arrival: np.ndarray, inputs: np.ndarray,
            outputs: np.ndarray, stopped_s: float) -> SimResult:
    for replica in replicas:
        replica.book_open_slots()
    finished = np.isfinite(ledger.finish_s)
    first_token = ledger.first_token_s
    ttft = first_token - arrival
    e2e = ledger.finish_s - arrival
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(outputs > 1, (e2e - ttft) / np.maximum(outputs - 1, 1), 0.0)
    tpot[~finished] = math.nan
    itl_max = np.where(finished, ledger.itl_max_s, math.nan)
    values = [np.array([piece for pieces in ledger.pieces for piece in pieces
                        if not isinstance(piece, tuple)], dtype=float)]
    weights = [np.ones(values[0].size, dtype=np.int64)]
    for replica in replicas:
        shared = replica.step_gap_count[:replica.step] > 0
        values.append(replica.step_gap_s[:replica.step][shared])
        weights.append(replica.step_gap_count[:replica.step][shared])
    return SimResult(
        arrival_s=arrival, first_token_s=first_token, finish_s=ledger.finish_s.copy(),
        ttft_s=ttft, tpot_s=tpot, itl_max_s=itl_max, e2e_s=e2e,
        queue_s=np.array(ledger.first_scheduled_s) - arrival, input_tokens=inputs,
        output_tokens=outputs, finished=finished, rejected=ledger.rejected.copy(),
        itl_gap_s=np.concatenate(values), itl_weight=np.concatenate(weights),
        preemptions=ledger.preemptions, iterations=sum(r.iterations for r in replicas),
        busy_s=np.array([r.busy_s for r in replicas]),
        replica_roles=tuple(r.role for r in replicas),
        makespan_s=float(ledger.finish_s.max()) if finished.all() and finished.size
        else float(stopped_s),
        _pieces=ledger.pieces,
        _step_gaps=tuple(r.step_gap_s[:r.step].copy() for r in replicas),
    )
