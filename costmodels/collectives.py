"""Alpha-beta collective costs over a cluster's fabric tiers, vectorised over configurations.

A group of ``size`` ranks whose members are ``stride`` ranks apart (ranks are placed
innermost-first: TP, then CP, then DP, then PP) is split level by level: at each tier the
members that share one domain form a sub-ring, and the algorithm is hierarchical
(reduce-scatter inside, all-reduce of the 1/k shard outside, all-gather inside).

With a CPU profile (``eff.measured_collectives``) every function here returns the measured
table's time instead (costmodels/measured_collectives.py): gloo is not a ring, and on one
node ``stride`` and ``distance`` do not matter.
"""

from __future__ import annotations

import numpy as np

from sysplan.costmodels.efficiency import Efficiency
from sysplan.hardware.types import Cluster

#: Share of a GPU's compute a running collective takes from the kernels it overlaps: NCCL
#: launched 24 thread blocks for an FSDP-style all-gather on a 132-SM H100 (NVIDIA developer
#: forum, "Compute-communication overlap causes severe GEMM performance degradation", 2025:
#: the overlapped GEMM lost its one-wave fit), i.e. 24/132 of the SMs, plus the HBM traffic
#: of the copies. Uncalibrated until a profile measures overlapped GEMMs.
COLLECTIVE_COMPUTE_SHARE = 24.0 / 132.0


def _levels(cluster: Cluster, size: np.ndarray, stride: np.ndarray, eff: Efficiency | None):
    """Yield (members_at_level, bandwidth_bytes_per_s, latency_s) per tier, innermost first.

    members_at_level multiply to ``size``; a level with 1 member costs nothing.
    """
    eff = eff or Efficiency.default(cluster)
    size = np.asarray(size, dtype=float)
    stride = np.asarray(stride, dtype=float)
    below = np.ones_like(size)
    for index, tier in enumerate(cluster.tiers):
        last = index == len(cluster.tiers) - 1
        inside = size if last else np.clip(np.floor(tier.domain_size / stride), 1.0, size)
        inside = np.maximum(inside, below)
        members = inside / below
        fraction = eff.collective_fraction(np.full(size.shape, index), len(cluster.tiers))
        bandwidth = tier.effective_bandwidth_bytes_per_s * fraction
        yield members, bandwidth, tier.latency_s
        below = inside


def _measured(eff: Efficiency | None, op: str, message_bytes, size, *others) -> np.ndarray | None:
    """The measured seconds of ``op`` when ``eff`` has a CPU profile's table, else None;
    broadcast with ``others`` (stride, distance) like the ring formulas' results."""
    if eff is None or eff.measured_collectives is None:
        return None
    seconds, outside = eff.measured_collectives.seconds(op, message_bytes, size)
    eff._note("communication", outside)
    # sysplan calibrate fits comm_scale_node as a bandwidth multiplier: it divides the time
    seconds = seconds / eff.calibration.comm_scale_node
    return np.broadcast_to(seconds, np.broadcast(seconds, *others).shape).copy()


def all_reduce_time(cluster: Cluster, message_bytes, size, stride, eff: Efficiency | None = None) -> np.ndarray:
    """Hierarchical ring all-reduce: sum over tiers of 2(k-1)/k * S_l/BW + 2(k-1)*alpha.

    Ring all-reduce T = 2(n-1)alpha + 2(n-1)/n S/BW (Thakur et al. 2005; training-formulas
    4.6); the shard S_l = S / (members below) travels at each outer level.
    """
    measured = _measured(eff, "all_reduce", message_bytes, size, stride)
    if measured is not None:
        return measured
    return 2.0 * _ring_reduce_scatter(cluster, message_bytes, size, stride, eff)


def reduce_scatter_time(cluster: Cluster, message_bytes, size, stride,
                        eff: Efficiency | None = None) -> np.ndarray:
    """Hierarchical ring reduce-scatter (equal to all-gather): (k-1)/k * S_l/BW + (k-1)alpha.

    S is the full (unsharded) size (training-formulas 4.6, nccl-tests busbw convention).
    """
    measured = _measured(eff, "reduce_scatter", message_bytes, size, stride)
    if measured is not None:
        return measured
    return _ring_reduce_scatter(cluster, message_bytes, size, stride, eff)


def all_gather_time(cluster: Cluster, message_bytes, size, stride,
                    eff: Efficiency | None = None) -> np.ndarray:
    """Hierarchical ring all-gather of the full size S: the reduce-scatter's time (the ring
    runs the same steps in reverse, Thakur et al. 2005), or the measured all_gather."""
    measured = _measured(eff, "all_gather", message_bytes, size, stride)
    if measured is not None:
        return measured
    return _ring_reduce_scatter(cluster, message_bytes, size, stride, eff)


def _ring_reduce_scatter(cluster: Cluster, message_bytes, size, stride,
                         eff: Efficiency | None) -> np.ndarray:
    """Sum over tiers of (k-1)/k * S_l/BW + (k-1)alpha, S_l the shard reaching that tier."""
    message = np.asarray(message_bytes, dtype=float)
    total = np.zeros(np.broadcast(message, size, stride).shape)
    shard = message * np.ones_like(total)
    for members, bandwidth, latency in _levels(cluster, size, stride, eff):
        total = total + (members - 1.0) / members * shard / bandwidth + (members - 1.0) * latency
        shard = shard / members
    return total


def all_to_all_time(cluster: Cluster, message_bytes, size, stride, eff: Efficiency | None = None) -> np.ndarray:
    """All-to-all where each rank holds S and sends S/n to each peer.

    T = (n-1)/n * S/BW + (n-1)alpha (training-formulas 4.6); the traffic leaving a domain
    is limited by that tier's bandwidth, tiers working concurrently (time = slowest tier).
    """
    measured = _measured(eff, "all_to_all", message_bytes, size, stride)
    if measured is not None:
        return measured
    message = np.asarray(message_bytes, dtype=float)
    size = np.asarray(size, dtype=float)
    worst = np.zeros(np.broadcast(message, size, stride).shape)
    below = np.ones_like(worst)
    for members, bandwidth, latency in _levels(cluster, size, stride, eff):
        inside = below * members
        # share of a rank's S that goes to peers inside this level but outside the one below
        share = (inside - below) / size
        worst = np.maximum(worst, share * message / bandwidth + (members - 1.0) * latency)
        below = inside
    return worst


def p2p_time(cluster: Cluster, message_bytes, distance, eff: Efficiency | None = None) -> np.ndarray:
    """Point-to-point send of S between ranks ``distance`` apart: alpha + S/BW (4.6)."""
    # a send is one pair of ranks: the measured send_recv (group 2), wherever they are
    measured = _measured(eff, "send_recv", message_bytes, 2.0, distance)
    if measured is not None:
        return measured
    distance = np.asarray(distance, dtype=float)
    spans = np.array([t.domain_size for t in cluster.tiers], dtype=float)
    index = np.minimum(np.searchsorted(spans, distance + 1.0), len(spans) - 1)
    bandwidth = np.array([t.effective_bandwidth_bytes_per_s for t in cluster.tiers])[index]
    latency = np.array([t.latency_s for t in cluster.tiers])[index]
    fraction = (eff or Efficiency.default(cluster)).collective_fraction(index, len(spans))
    return latency + np.asarray(message_bytes, dtype=float) / (bandwidth * fraction)
