"""Proven limits of one replica layout: latency floors and a throughput ceiling that no
simulation of it can beat. The search uses them to prune (a layout whose floor is above a
bound, a replica count whose ceiling is below the rate, the top of a rate search), never to
decide: every answer it prints comes from a simulation.

What the proofs rest on (``StepCost.iteration_seconds``, tested in
``tests/test_serve_planner_bound.py``):

1. monotone: an iteration never gets faster when any field of its ``Batch`` grows, by more
   than ``MONOTONE_SLACK`` (the attention kernel's efficiency, read at the mean chunk's
   length, rises with it: up to 0.5 % faster with more (query, key) pairs);
2. a token costs at least a bare one: a batch of ``T`` tokens (prompt tokens plus decoding
   sequences) takes at least ``g(T) = min(t(prompt-only T), t(decode-only T))``, both at the
   smallest context any real batch has.

Each bound below uses (1) at most twice, so every time it derives is scaled by
``(1 - MONOTONE_SLACK) ** 2`` (``SLACK``).

And on what the simulator's schedulers do (``costmodels.serving.replica``): a request of
``P`` prompt and ``O`` output tokens is at least ``P' = max(1, (1 - h) P)`` prompt tokens
(``h`` the prefix-cache hit rate; in chunks of at most ``P``, each its own or a shared
iteration) and ``O - 1`` decode steps of one token each; an
iteration holds at most ``max_num_batched_tokens`` tokens (more only for a prompt that runs
alone without chunking) and at most ``max_num_seqs`` decoding sequences. Recomputation after
a preemption only adds work.

Ceiling (requests/s of one replica): its busy time per request is at least
``(P' + O - 1) * min_{T <= T_max} g(T) / T`` and at least
``(O - 1) * min_{d <= max_num_seqs} t(decode-only d) / d``, so the rate is at most the
inverse of the larger (averaged over the workload's requests); a prefill-only replica's at
most ``1 / (P' min g(T) / T)``, a decode-only one's the second. Floors: TTFT >= ``P' *
min_{t <= P'} t(prompt t) / t`` (its chunks' iterations, each at least its own chunk);
every token gap >= ``t(decode 1 sequence of P tokens)``.

Minima over a range of integers are taken on a geometric grid ``t_0 < t_1 < ...``: with a
monotone ``f``, ``f(t) / t >= f(t_k) / t_{k+1}`` for ``t_k <= t <= t_{k+1}``, so the grid
minimum of that is a true lower bound of the minimum over every integer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sysplan.costmodels.serving.deployment import Batch, EngineKnobs, ReplicaLayout, StepCost

#: Ratio between grid points of the per-token minima (the bound gives away at most 3 %).
GRID_RATIO = 1.03
#: How much faster an iteration may get when a Batch field grows (relative; tested).
MONOTONE_SLACK = 0.01
#: What every derived time is scaled by (module docstring).
SLACK = (1.0 - MONOTONE_SLACK) ** 2


@dataclass(frozen=True, eq=False)
class Lengths:
    """A workload's request lengths (in tokens), as the bounds read them."""

    inputs: np.ndarray
    outputs: np.ndarray

    @classmethod
    def of(cls, inputs: np.ndarray, outputs: np.ndarray) -> Lengths:
        return cls(np.asarray(inputs, dtype=float), np.asarray(outputs, dtype=float))

    @property
    def max_total(self) -> int:
        """Largest prompt + output."""
        return int((self.inputs + self.outputs).max())

    def computed(self, hit_rate: float) -> np.ndarray:
        """Prompt tokens each request must prefill: a prefix cache serves at most the share
        ``hit_rate`` of a new prompt, and at least one token is computed."""
        return np.maximum(self.inputs * (1.0 - hit_rate), 1.0)


@dataclass(frozen=True)
class Bound:
    """Proven limits of one replica layout under one set of engine knobs."""

    layout: ReplicaLayout
    ttft_s: float  # floor on every request's TTFT (the shortest prompt, alone)
    tpot_s: float  # floor on every gap between output tokens
    e2e_s: float  # floor on every request's end-to-end latency
    rate_rps: float  # ceiling on the requests/s one aggregated replica sustains
    prefill_rate_rps: float  # ceiling of a prefill-only replica (disaggregated)
    decode_rate_rps: float  # ceiling of a decode-only replica (disaggregated)


def grid(top: int) -> list[int]:
    """Integers 1 = t_0 < t_1 < ... < t_n = top, each about GRID_RATIO times the last."""
    points = [1]
    while points[-1] < top:
        points.append(min(top, max(points[-1] + 1, int(points[-1] * GRID_RATIO))))
    return points


def min_per_token(seconds: Callable[[int], float], top: int) -> float:
    """A lower bound of min over integers 1 <= t <= top of seconds(t) / t, for a monotone
    ``seconds`` (grid argument in the module docstring)."""
    points = grid(top)
    values = [seconds(t) for t in points]
    best = values[-1] / points[-1]
    for k in range(len(points) - 1):
        best = min(best, values[k] / points[k + 1])
    return best


def analytic_bound(cost: StepCost, layout: ReplicaLayout, knobs: EngineKnobs,
                   lengths: Lengths, request_overhead_s: float = 0.0) -> Bound:
    """Floors and ceilings of one replica (see the module docstring for the proof)."""

    def bare(tokens: int) -> float:  # g(T): the cheapest batch of T tokens
        prompt = Batch(prefill_tokens=tokens, prefill_context_tokens=tokens,
                       prefill_pairs=tokens, prefill_seqs=1)
        return min(cost.iteration_seconds(layout, prompt),
                   cost.iteration_seconds(layout, Batch.decode(tokens, tokens)))

    def decode_only(seqs: int) -> float:
        return cost.iteration_seconds(layout, Batch.decode(seqs, seqs))

    def prompt(tokens: int) -> float:
        return cost.iteration_seconds(layout, Batch.prompt(tokens))

    seqs = min(knobs.max_num_seqs, knobs.max_num_batched_tokens)
    budget = knobs.max_num_batched_tokens
    if not knobs.chunked_prefill:  # a whole prompt (or a recomputed one) may run past it
        budget = max(budget, lengths.max_total + seqs)
    per_token = SLACK * min_per_token(bare, budget)
    per_decode = SLACK * min_per_token(decode_only, seqs)
    computed = lengths.computed(knobs.prefix_cache_hit_rate)
    decodes = lengths.outputs - 1
    # busy seconds per request, each a proven lower bound; the rate is at most 1 / the larger
    work_s = float(np.mean(computed + decodes)) * per_token
    decode_s = float(np.mean(decodes)) * per_decode
    prefill_s = float(np.mean(computed)) * per_token
    shortest = math.ceil(computed.min())
    ttft = SLACK * shortest * min_per_token(prompt, shortest) + request_overhead_s
    gap = SLACK * cost.iteration_seconds(layout, Batch.decode(1, int(lengths.inputs.min())))
    return Bound(
        layout=layout, ttft_s=ttft, tpot_s=gap,
        e2e_s=ttft + (int(lengths.outputs.min()) - 1) * gap,
        rate_rps=1.0 / max(work_s, decode_s),
        prefill_rate_rps=1.0 / prefill_s,
        decode_rate_rps=1.0 / decode_s if decode_s > 0 else math.inf)
