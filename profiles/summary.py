"""Headline numbers of a profile, and the cluster file of a CPU node built from them.

``sysplan profile`` prints the headline numbers (best GEMM rate, copy bandwidth, the eager
chain's times, bus bandwidth per collective) and, on a CPU, writes ``local-cpu.yaml`` so that
``sysplan train --cluster local-cpu.yaml`` prices plans for the machine that was measured.
"""

from __future__ import annotations

from dataclasses import dataclass

from sysplan.profiles.collectives import bus_bandwidth
from sysplan.profiles.schema import CollectiveTable, EagerTable, GemmTable, MemoryTable, Profile


@dataclass(frozen=True)
class BusBandwidth:
    """One collective at its largest measured message: group, bytes, bus bandwidth."""

    op: str
    tier: str
    group_size: int
    message_bytes: int
    bytes_per_s: float


def best_gemm(table: GemmTable) -> tuple[float, tuple[int, int, int]]:
    """Highest FLOP/s any GEMM of the table reached, and its (m, n, k)."""
    # A GEMM [m, k] x [k, n] is 2 m n k FLOPs (one multiply and one add per term).
    rate, shape = max((2 * m * n * k / t, (m, n, k)) for m, n, k, t in table.rows)
    return rate, shape


def copy_bandwidth(table: MemoryTable) -> float | None:
    """Highest copy bandwidth (bytes moved per second), or None without copy rows."""
    rates = [moved / seconds for op, moved, seconds in table.rows if op == "copy"]
    return max(rates) if rates else None


def eager_line(table: EagerTable) -> str:
    """Forward + backward time of the eager chain per token count, smallest first."""
    return "; ".join(f"{n:,} token{'' if n == 1 else 's'} {1e3 * fwd:.2f} + {1e3 * bwd:.2f} ms"
                     for n, *_dims, fwd, bwd in sorted(table.rows))


def largest_bus_bandwidths(table: CollectiveTable) -> list[BusBandwidth]:
    """Per op and tier: the bus bandwidth at the largest group, then the largest message."""
    best: dict[tuple[str, str], tuple] = {}
    for op, tier, group, size, seconds in table.rows:
        key = (op, tier)
        if key not in best or (group, size) > best[key][:2]:
            best[key] = (group, size, seconds)
    return [BusBandwidth(op, tier, group, size, bus_bandwidth(op, group, size, seconds))
            for (op, tier), (group, size, seconds) in best.items()]


def latency(table: CollectiveTable) -> float:
    """Per-message latency: the smallest send_recv, else the smallest all_reduce per step."""
    sends = [(size, t) for op, _, _, size, t in table.rows if op == "send_recv"]
    if sends:
        return min(sends)[1]
    # A ring all_reduce takes 2 (n - 1) latency-bound steps (Thakur et al. 2005, sec. 4.5).
    return min((size, t / (2 * (n - 1))) for op, _, n, size, t in table.rows)[1]


def local_cpu_cluster_yaml(profile: Profile, memory_bytes: int, name: str = "local-cpu") -> str:
    """A single-node cluster file whose "GPUs" are the profile's CPU processes.

    Each device is one process with its share of the cores, as the profile measured it: its
    peak is the best fp32 GEMM, its memory bandwidth the copy bandwidth, its memory
    ``memory_bytes / devices``; the one fabric tier is gloo over shared memory.
    """
    device = profile.device
    assert device is not None and device.kind == "cpu" and profile.gemm and profile.memory
    devices = device.count
    peak, _ = best_gemm(profile.gemm)
    copy = copy_bandwidth(profile.memory) or 1e9
    if profile.collectives is not None:
        reduce = [b for b in largest_bus_bandwidths(profile.collectives) if b.op == "all_reduce"]
        link = reduce[0].bytes_per_s if reduce else copy / 2
        alpha, link_note = latency(profile.collectives), "all_reduce bus bandwidth, measured"
    else:
        link, alpha, link_note = copy / 2, 10e-6, "no collectives measured: half the copy rate"
    per_device_gib = max(int(memory_bytes / devices / 2**30 * 10) / 10, 0.1)  # 0.1 GiB steps
    return f"""\
# A sysplan cluster file for this machine, written by `sysplan profile` with the profile
# {profile.name}. Each "GPU" is one CPU process with its share of the cores, as
# the profile measured it; the processes talk over gloo. Plan for it with
#   sysplan train --model gpt2 --cluster {name}.yaml --gpus {devices}
name: {name}
description: {_quoted(f"{device.name}, {devices} processes (measured by sysplan profile)")}
source: sysplan profile {profile.name} ({device.date})
gpu:
  name: cpu
  vendor: other
  gpu_class: cpu
  memory: {per_device_gib}GiB  # RAM {memory_bytes / 2**30:.1f} GiB / {devices} processes
  memory_bandwidth: {copy / 1e9:.3f}GB/s  # measured copy bandwidth of one process
  power: 100W  # unknown: a placeholder
  peak:
    fp32: {peak / 1e9:.3f}GFLOP/s  # best measured fp32 GEMM of one process
    bf16: {peak / 1e9:.3f}GFLOP/s  # a CPU runs fp32; bf16 prices use the fp32 rate
  source: measured by sysplan profile ({profile.name})
gpus_per_node: {devices}
default_nodes: 1
max_nodes: 1
tiers:
  - name: gloo (shared memory)
    domain: node
    bandwidth: {link / 1e9:.3f}GB/s  # {link_note}
    latency: {max(alpha * 1e6, 0.1):.1f}us  # smallest send_recv, measured
"""


def _quoted(text: str) -> str:
    """``text`` as a YAML double-quoted scalar."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
