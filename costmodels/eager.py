"""Eager PyTorch's element-wise work in one decoder block, counted and priced from a profile.

The bundled executor (``executor/model.py``) runs every op of a block as its own autograd
op. Outside its GEMMs and attention core that is a chain of small element-wise ops (the
profile's ``eager`` table times exactly this chain, ``profiles/eager.py``): two RMSNorms,
RoPE on q and k, GQA's repeat of K and V, the attention output's copy, the SwiGLU activation
and two residual adds. ``chain_elements`` and ``chain_ops`` count it the way the cost model
charges it (bytes over a bandwidth plus a host cost per op), and ``eager_rates`` turns the
measured rows into those two rates, so the cost model prices the chain at the speed it was
measured at: per-op cost from a one-token row (no work), bandwidth from the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: ops of one RMSNorm x * rsqrt(mean(x^2) + eps) * w: x^2, mean, + eps, rsqrt, two products
NORM_OPS = 6
#: ops of RoPE on one tensor: x cos, two half slices, neg, cat, x sin, sum
ROPE_OPS = 7
#: ops of GQA's repeat of K or V: unsqueeze, expand, clone, view
REPEAT_OPS = 4


def chain_elements(hidden: float, heads: float, kv_heads: float, head_dim: float, ffn: float,
                   rope: bool = True, gated: bool = True) -> tuple[float, float]:
    """(replicated, TP-split) elements read + written per token by the chain's forward, one
    pass per op:
    - RMSNorm x * rsqrt(mean(x^2) + eps) * w (Zhang & Sennrich 2019, eq. 4): x^2 (2h), its
      mean (h), two products (2h each): 7h, twice; the two residual adds: 3h each;
    - RoPE x cos + rotate(x) sin (Su et al. 2021, eq. 34) on q and k: x cos (2), neg of one
      half and the concatenation (1 + 2), rotate(x) sin (2), the sum (3): 10 per element;
    - GQA's repeat of K and V to the query heads (read kv, write q, each), and the copy of
      the attention output back to [tokens, heads x d] (2q);
    - the MLP activation: SwiGLU silu(gate) (2f) times up (3f); GELU (2f)."""
    q, kv = heads * head_dim, kv_heads * head_dim
    replicated = 2 * 7 * hidden + 2 * 3 * hidden
    rotary = 10 * (q + kv) if rope else 0
    repeat = 2 * (kv + q)  # the executor repeats K and V also with one head per group
    activation = 5 * ffn if gated else 2 * ffn
    return float(replicated), float(rotary + repeat + 2 * q + activation)


def chain_ops(rope: bool = True, gated: bool = True) -> float:
    """Autograd ops the chain records (tests/test_executor.py counts them in a block): two
    norms, two residual adds, RoPE on q and k, the q/k/v head views and transposes (6), the
    output transpose and copy (2), the repeat of K and V, the activation (SwiGLU 2, GELU
    1) and the two norm weights' gradient accumulation."""
    return float(2 * NORM_OPS + 2 + (2 * ROPE_OPS if rope else 0) + 6 + 2 + 2 * REPEAT_OPS
                 + (2 if gated else 1) + 2)


@dataclass(frozen=True)
class EagerRates:
    """What the chain costs on the profiled node: host seconds per op (forward, backward)
    and the bandwidth its element-wise passes reach over the tokens they were measured at."""

    op_forward_s: float
    op_backward_s: float
    tokens: tuple[float, ...]  # ascending
    bytes_per_s: tuple[float, ...]  # forward + backward bytes / their time beyond the ops

    def bandwidth(self, tokens) -> np.ndarray:
        """Bytes per second at ``tokens`` per micro-batch: interpolated in log2(tokens)
        between the measured sizes (caches make small passes faster), held at the ends."""
        x = np.log2(np.maximum(np.asarray(tokens, dtype=float), 1.0))
        return np.interp(x, np.log2(self.tokens), self.bytes_per_s)

    def slowed(self, share: float) -> EagerRates:
        """The rates with this process getting ``share`` of a core (the host cost per op
        grows with it; the bandwidth is scaled through the calibration)."""
        return EagerRates(self.op_forward_s / share, self.op_backward_s / share, self.tokens,
                          self.bytes_per_s)


def eager_rates(rows: Sequence[tuple[int, int, int, int, int, int, float, float]],
                element_bytes: float, host_bound: bool) -> EagerRates | None:
    """Rates from the profile's ``eager`` rows (tokens, hidden, heads, kv_heads, head_dim,
    ffn, fwd_s, bwd_s). The row with the fewest tokens prices one op (its passes are a few
    kilobytes); every larger row gives the bandwidth of 3x its forward bytes (backward
    passes move twice the forward's, as ``costmodels.compute`` charges them) over its time,
    less its ops' host cost where the host runs the ops itself (``host_bound``: a CPU; a GPU
    runs kernels while the host issues the next). None without a usable pair."""
    if len(rows) < 2:
        return None
    ordered = sorted(rows)
    ops = chain_ops()
    smallest = ordered[0]
    op_f, op_b = smallest[6] / ops, smallest[7] / ops
    rates: dict[float, list[float]] = {}  # tokens -> rates of the rows measured there
    for n, h, heads, kv, d, f, fwd, bwd in ordered[1:]:
        moved = 3.0 * element_bytes * n * sum(chain_elements(h, heads, kv, d, f))
        work = fwd + bwd - (ops * (op_f + op_b) if host_bound else 0.0)
        if n > smallest[0] and work > 0:
            rates.setdefault(float(n), []).append(moved / work)
    if not rates:
        return None
    grid = sorted(rates)
    return EagerRates(op_f, op_b, tuple(grid), tuple(float(np.median(rates[n])) for n in grid))
