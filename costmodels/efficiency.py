"""How fast each kind of work runs: default curves, or a measured profile's tables.

``Efficiency`` answers, for arrays of operations, the seconds a GEMM, a fused attention or a
memory-bound pass takes and the share of link bandwidth a collective reaches. Built with
``Efficiency.default(cluster)`` it uses the uncalibrated curves below; built with
``Efficiency.from_profile(profile, cluster)`` it interpolates the profile's measurements and
applies its calibration factors. Outside the measured points it falls back to the roofline at
the nearest measured efficiency and, when tracking, records the term as extrapolated. A CPU
profile's collectives are not ring-shaped (gloo): they are priced from the measured times
themselves (``measured_collectives``), not from a bandwidth fraction.

The default curves are fractions of datasheet peak whose shapes come from the one node we
measured (``shared/data/measured/h100``, H100 SXM 80GB at 700 W, 2026-11-22);
``benchmarks/derive_default_efficiency.py`` recomputes them. GPUs we have not measured reuse
the H100 fractions of their own datasheet peak. Nothing here is fitted to published runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from sysplan.costmodels.eager import EagerRates, eager_rates
from sysplan.costmodels.lookup import ScatteredTable
from sysplan.costmodels.measured_collectives import MeasuredCollectives
from sysplan.hardware.types import GPU, Cluster
from sysplan.profiles.loader import bundled_for_gpu
from sysplan.profiles.schema import Calibration, Profile

# measured/h100/gemm.csv: median bf16 TFLOP/s of the layer-shape GEMMs per log2(FLOPs) bucket,
# divided by the datasheet dense peak (989.4 TFLOP/s), made monotone.
_GEMM_LOG2_FLOPS = np.array([30.0, 31.0, 32.0, 33.0, 33.5, 34.0, 35.0, 36.0, 38.0, 40.0, 42.0, 44.0])
_GEMM_FRACTION = np.array([0.05, 0.10, 0.21, 0.33, 0.55, 0.59, 0.65, 0.67, 0.70, 0.70, 0.71, 0.72])

# measured/h100/attention.csv: median forward+backward TFLOP/s of causal attention (head dim
# 128) over batch x heads, per sequence length, divided by the dense bf16 peak.
_ATTN_LOG2_SEQ = np.array([10.0, 11.0, 12.0, 13.0, 14.0, 15.0])
_ATTN_FRACTION = {
    "flash": np.array([81.3, 173.8, 240.9, 285.2, 320.5, 323.5]) / 989.4,
    "cudnn": np.array([108.6, 266.4, 427.9, 495.9, 535.1, 549.7]) / 989.4,
}
# FlashAttention-2 (Dao 2023, Fig. 5, A100 80GB, causal, head dim 128, fwd+bwd TFLOP/s at
# seq 512..16k) for Ampere, where the Hopper table above (FA2 not tuned for Hopper) is wrong.
_ATTN_AMPERE_LOG2_SEQ = np.array([9.0, 10.0, 11.0, 12.0, 13.0, 14.0])
_ATTN_AMPERE_FRACTION = np.array([88.0, 119.0, 152.0, 173.0, 187.0, 196.0]) / 312.0

# FlashAttention-3 (Shah et al. 2024, arXiv 2407.08608, Figs. 5 and 6: H100 SXM5, bf16,
# cuDNN, seq 512..16k): forward and backward TFLOP/s at head dim 64 over those at head dim
# 128 (the tables above and `sysplan profile`'s default rows are head dim 128); fewer MACs per
# loaded key and per softmax exponential keep small heads further from the tensor-core peak.
_ATTN_HD64_LOG2_SEQ = np.array([9.0, 10.0, 11.0, 12.0, 13.0, 14.0])
_ATTN_HD64_FWD = (np.array([335.0, 373.0, 395.0, 408.0, 412.0, 413.0])
                  / np.array([497.0, 574.0, 617.0, 609.0, 600.0, 595.0]))
_ATTN_HD64_BWD = (np.array([266.0, 348.0, 395.0, 417.0, 432.0, 433.0])
                  / np.array([305.0, 408.0, 465.0, 499.0, 518.0, 516.0]))


def head_dim_rate(head_dim, seq_len, backward: bool) -> np.ndarray:
    """Fused attention's rate at ``head_dim`` relative to head dim 128: the published head
    dim 64 ratio (above), log2-interpolated to 1 at 128 and held outside [64, 128] (no
    published bf16 ratio beyond: larger heads are priced as 128)."""
    log2 = np.log2(np.maximum(seq_len, 1.0))
    at_64 = np.interp(log2, _ATTN_HD64_LOG2_SEQ, _ATTN_HD64_BWD if backward else _ATTN_HD64_FWD)
    weight = np.clip(np.log2(np.maximum(head_dim, 1.0)) - 6.0, 0.0, 1.0)
    return at_64 + (1.0 - at_64) * weight


#: measured/h100/env.json: 4 GiB device copy at 3,013 GB/s of the 3.35 TB/s datasheet.
MEMORY_BOUND_FRACTION = 3013.0 / 3350.0

#: Collective bus bandwidth reached of the link rate, per tier position. nccl-tests
#: (NVIDIA/nccl-tests doc/PERFORMANCE.md convention) on DGX A100/H100 report all-reduce bus
#: bandwidth of roughly 230/300 and 360/450 GB/s inside a node, and 90 %+ of line rate on
#: InfiniBand; uncalibrated until `sysplan profile` measures collectives.
COLLECTIVE_FRACTION_INNER = 0.78
COLLECTIVE_FRACTION_NETWORK = 0.90

#: How a default efficiency's ``fitted_on`` starts when its scales come from cited measurements
CITED = "cited: "
#: The H100 curves' best GEMM (measured/h100/env.json: 8192^3 bf16 at 757.7 of 989.4 TFLOP/s)
#: and copy (3,013 of 3,350 GB/s) as fractions of the datasheet: what the cited AMD
#: measurements below are divided by.
_H100_BEST_GEMM_FRACTION = 757.7 / 989.4
#: Published kernel efficiencies of GPU classes sysplan has no profile for, as scales on the
#: H100-shaped default curves (still uncalibrated until `sysplan profile` measures the node):
#: - cdna2 (MI250X, one GCD): best bf16 GEMM 127 TFLOP/s of 191.5 (stas00/ml-engineering issue
#:   76, reproducing the maximum-achievable-matmul table's 147 with the cache flushed);
#:   BabelStream copy at least 1.2 TB/s of 1.64 per GCD (ROCm system-acceptance-docs,
#:   gpus/mi250.md, a pass threshold: a lower bound).
#: - cdna3 (MI300X): best bf16 GEMM 668.4 TFLOP/s of 1,300, 51.4 % (stas00/ml-engineering,
#:   compute/accelerator/README.md, maximum achievable matmul FLOPS table v2; AMD's own
#:   hipBLASLt figure is 708 of 1,307.4, rocm-blogs "measuring max-achievable FLOPs" part 2
#:   table 1); STREAM copy 4.15 TB/s of 5.3 (Azure AI-benchmarking-guide ND MI300X v5 results);
#:   RCCL all-reduce bus bandwidth 315 GB/s of the 448 GB/s Infinity Fabric mesh at 1 GiB
#:   (rocm-blogs "MI300X RCCL xGMI", all_reduce_perf), against 0.78 of NVLink here.
#: - blackwell (B200, B300, GB200, GB300): a training run holds its GEMMs at the power-capped
#:   clock, not the boost clock a short burst reaches. B200's bf16 matmul reaches 1,751 TFLOP/s
#:   in bursts (77.8 % of 2,250, about the H100 curve's 76.6 % top) but sustains 1,426 with all
#:   8 GPUs of the node busy (stas00/ml-engineering compute/accelerator/benchmarks/README.md,
#:   MAMF vs MSMF, "All 8 GPUs x 5 rounds", torch 2.13 + CUDA 13.0); the sustained rate scales
#:   the curve, as the H100 profile's gemm_scale (0.82, fitted on H100 runs) does there.
CITED_DEFAULTS = {
    "cdna2": Calibration(gemm_scale=(127.0 / 191.5) / _H100_BEST_GEMM_FRACTION,
                         elementwise_scale=(1.2 / 1.6384) / MEMORY_BOUND_FRACTION,
                         fitted_on=CITED + "published MI250X GEMM and BabelStream rates"),
    "cdna3": Calibration(gemm_scale=(668.4 / 1300.0) / _H100_BEST_GEMM_FRACTION,
                         elementwise_scale=(4.15 / 5.3) / MEMORY_BOUND_FRACTION,
                         comm_scale_node=(315.0 / 448.0) / COLLECTIVE_FRACTION_INNER,
                         fitted_on=CITED + "published MI300X GEMM, STREAM and RCCL rates"),
    "blackwell": Calibration(gemm_scale=(1426.4 / 2250.0) / _H100_BEST_GEMM_FRACTION,
                             attention_scale=1426.4 / 1751.2,
                             fitted_on=CITED + "published B200 sustained (power-capped) matmul "
                             "rate"),
}

#: Fused attention's backward does 2.5 x the forward FLOPs (FlashAttention-2, Dao 2023, 4.1).
ATTENTION_BWD_FLOPS = 2.5

#: The terms an efficiency prices; a profile without the matching table leaves it
#: uncalibrated ("communication" needs its collectives table).
TERMS = {"gemm": "gemm", "attention": "attention", "elementwise": "memory",
         "communication": "collectives"}
UNCALIBRATED_TERMS = tuple(TERMS)

#: Messages at least this large set a tier's measured bus bandwidth (the bandwidth term;
#: latency stays the tier's alpha).
LARGE_MESSAGE_BYTES = 16 * 2**20


def default_gemm_fraction(flops: np.ndarray) -> np.ndarray:
    """Fraction of dense peak one GEMM of ``flops`` reaches (H100-measured shape)."""
    log2 = np.log2(np.maximum(flops, 1.0))
    return np.interp(log2, _GEMM_LOG2_FLOPS, _GEMM_FRACTION)


def default_attention_fraction(gpu: GPU, seq_len: np.ndarray, backend: str) -> np.ndarray:
    """Fraction of dense bf16 peak causal fused attention reaches at ``seq_len`` keys."""
    log2 = np.log2(np.maximum(seq_len, 1.0))
    if gpu.gpu_class == "ampere":
        return np.interp(log2, _ATTN_AMPERE_LOG2_SEQ, _ATTN_AMPERE_FRACTION)
    return np.interp(log2, _ATTN_LOG2_SEQ, _ATTN_FRACTION.get(backend, _ATTN_FRACTION["flash"]))


@dataclass(frozen=True)
class Efficiency:
    """Seconds per operation on one cluster's GPUs (defaults, or a profile's measurements)."""

    name: str
    gpu: GPU
    calibration: Calibration = field(default_factory=Calibration)
    gemm: ScatteredTable | None = None  # efficiency over (log2 m, log2 n k)
    attention: dict[str, tuple[ScatteredTable, ScatteredTable]] | None = None  # fwd, bwd
    attention_head_dim: float = 128.0  # head dim the attention rates were measured at
    memory_fraction: float = MEMORY_BOUND_FRACTION
    collective: dict[str, float] | None = None  # "node"/"network" -> share of link bandwidth
    measured_collectives: MeasuredCollectives | None = None  # CPU profiles: seconds per op
    op_forward_s: float = 0.0  # per framework op beyond its work (profile ``overhead``)
    op_backward_s: float = 0.0  # and per op's backward; 0 where not measured
    eager: EagerRates | None = None  # eager PyTorch's element-wise chain (profile ``eager``)
    contention: dict[int, float] | None = None  # CPU: slowdown with k processes (profile)
    uncalibrated: tuple[str, ...] = UNCALIBRATED_TERMS
    seen: set[str] | None = None  # extrapolated terms, when tracking

    @classmethod
    def default(cls, cluster: Cluster) -> Efficiency:
        """The uncalibrated curves, as fractions of this cluster's datasheet peaks."""
        gpu_class = cluster.gpu.gpu_class
        return cls(name=f"default-{gpu_class}", gpu=cluster.gpu,
                   calibration=CITED_DEFAULTS.get(gpu_class, Calibration()))

    @classmethod
    def from_profile(cls, profile: Profile, cluster: Cluster) -> Efficiency:
        """Lookups built from ``profile``'s tables, relative to this cluster's datasheet
        (built once per profile and cluster: the grids take tens of milliseconds)."""
        return _from_profile(profile, cluster)

    @classmethod
    def _build(cls, profile: Profile, cluster: Cluster) -> Efficiency:
        gpu = cluster.gpu
        attention = None
        if profile.attention is not None:
            attention = _attention_tables(profile, gpu.peak("bf16"))
        memory = MEMORY_BOUND_FRACTION
        if profile.memory is not None:
            best = max(b / t for op, b, t in profile.memory.rows if op == "copy") \
                if any(r[0] == "copy" for r in profile.memory.rows) else None
            memory = min(1.0, best / gpu.hbm_bandwidth_bytes_per_s) if best else memory
        return cls(
            name=profile.name, gpu=gpu, calibration=profile.calibration or Calibration(),
            gemm=_gemm_table(profile, gpu) if profile.gemm is not None else None,
            attention=attention, memory_fraction=memory,
            attention_head_dim=_median_head_dim(profile),
            collective=_collective_fractions(profile, cluster),
            measured_collectives=_measured_collectives(profile),
            op_forward_s=profile.overhead.forward_s if profile.overhead else 0.0,
            op_backward_s=profile.overhead.backward_s if profile.overhead else 0.0,
            eager=eager_rates(profile.eager.rows, 4.0 if profile.eager.dtype == "fp32" else 2.0,
                              host_bound=gpu.gpu_class == "cpu") if profile.eager else None,
            contention=dict(profile.contention) if profile.contention else None,
            uncalibrated=tuple(t for t, table in TERMS.items() if getattr(profile, table) is None),
        )

    @classmethod
    def for_cluster(cls, cluster: Cluster) -> Efficiency:
        """The bundled profile of the cluster's GPU when sysplan ships one; else one measured
        on the same die (``same_die_profile``), its fractions carried over; else defaults."""
        profile = bundled_for_gpu(cluster.gpu.name)
        if profile is not None:
            return cls.from_profile(profile, cluster)
        measured = same_die_profile(cluster.gpu)
        if measured is not None:
            return _transferred(*measured, cluster)
        return cls.default(cluster)

    def tracking(self) -> Efficiency:
        """A copy that records which terms left the measured range."""
        return replace(self, seen=set())

    def _note(self, term: str, outside: np.ndarray | bool) -> None:
        if self.seen is not None and np.any(outside):
            self.seen.add(term)

    def gemm_seconds(self, m, n, k, peak: float) -> np.ndarray:
        """Seconds of GEMMs [m, k] x [k, n] on a GPU of dense ``peak`` FLOP/s."""
        flops = 2.0 * np.asarray(m, dtype=float) * n * k
        if self.gemm is None:
            fraction = default_gemm_fraction(flops)
        else:
            fraction, outside = self.gemm(np.log2(np.maximum(m, 1.0)),
                                          np.log2(np.maximum(np.asarray(n, float) * k, 1.0)))
            self._note("gemm", outside)
        return flops / (peak * fraction * self.calibration.gemm_scale)

    def attention_seconds(self, flops_fwd, batch_heads, seq, backend: str,
                          head_dim: float = 128.0):
        """(forward, backward) seconds of causal fused attention of ``flops_fwd`` with heads
        of ``head_dim`` (the tables' rates carried from their head dim by ``head_dim_rate``)."""
        peak = self.gpu.peak("bf16") * self.calibration.attention_scale
        scale_f, scale_b = (head_dim_rate(self.attention_head_dim, seq, b)
                            / head_dim_rate(head_dim, seq, b) for b in (False, True))
        if self.attention is None:
            fraction = default_attention_fraction(self.gpu, seq, backend)
            forward = flops_fwd / (peak * fraction)
            return forward * scale_f, ATTENTION_BWD_FLOPS * forward * scale_b
        tables = self.attention.get(backend)
        self._note("attention", tables is None)
        fwd_table, bwd_table = tables or next(iter(self.attention.values()))
        x, y = np.log2(np.maximum(batch_heads, 1.0)), np.log2(np.maximum(seq, 1.0))
        (fwd, out_f), (bwd, out_b) = fwd_table(x, y), bwd_table(x, y)
        self._note("attention", out_f | out_b)
        return (scale_f * flops_fwd / (peak * fwd),
                scale_b * ATTENTION_BWD_FLOPS * flops_fwd / (peak * bwd))

    @property
    def memory_bytes_per_s(self) -> float:
        """HBM bandwidth memory-bound kernels reach."""
        scale = self.calibration.elementwise_scale
        return self.gpu.hbm_bandwidth_bytes_per_s * self.memory_fraction * scale

    def collective_fraction(self, tier_index, num_tiers: int) -> np.ndarray:
        """Share of link bandwidth a collective reaches on tier ``tier_index``."""
        outer = (np.asarray(tier_index) >= num_tiers - 1) & (num_tiers > 1)
        c = self.calibration
        node = COLLECTIVE_FRACTION_INNER if not self.collective else \
            self.collective.get("node", COLLECTIVE_FRACTION_INNER)
        network = COLLECTIVE_FRACTION_NETWORK if not self.collective else \
            self.collective.get("network", COLLECTIVE_FRACTION_NETWORK)
        return np.where(outer, network * c.comm_scale_network, node * c.comm_scale_node)


def same_die_profile(gpu: GPU) -> tuple[Profile, GPU] | None:
    """A bundled profile measured on another package of ``gpu``'s die: same architecture and
    same dense bf16 and fp8 peaks (same SMs and clocks): H200, GH200 and the 500 W H100 96 GB
    parts against the H100 SXM (one GH100 die, 132 SMs at 1,980 MHz). A lower power limit
    throttles more under dense load; on torchtitan's 500 W runs the H100 profile still lands
    within 12 % both ways (benchmarks/training_accuracy.py), so power does not rule it out.
    Returns it with the GPU it was measured on."""
    from sysplan.hardware import list_gpus, load_gpu

    for name in list_gpus():
        other = load_gpu(name)
        if (other.name == gpu.name or other.gpu_class != gpu.gpu_class
                or other.peak_flops != gpu.peak_flops):
            continue
        profile = bundled_for_gpu(other.name)
        if profile is not None:
            return profile, other
    return None


def _transferred(profile: Profile, measured_on: GPU, cluster: Cluster) -> Efficiency:
    """``profile``'s tables priced as fractions of the GPU they were measured on (GEMM and
    attention against its peaks, memory-bound passes against its HBM bandwidth), applied to
    ``cluster``'s GPU; collectives stay uncalibrated (another node's fabric)."""
    built = Efficiency._build(profile, cluster.model_copy(update={"gpu": measured_on}))
    return replace(built, name=f"{profile.name} (same die, carried to {cluster.gpu.name})",
                   gpu=cluster.gpu, collective=None, measured_collectives=None,
                   uncalibrated=tuple(sorted({*built.uncalibrated, "communication"})))


_BUILT: dict[tuple[int, str], Efficiency] = {}


def _from_profile(profile: Profile, cluster: Cluster) -> Efficiency:
    key = (hash(profile), cluster.model_dump_json())
    if key not in _BUILT:
        if len(_BUILT) > 16:
            _BUILT.clear()
        _BUILT[key] = Efficiency._build(profile, cluster)
    return _BUILT[key]


def _gemm_table(profile: Profile, gpu: GPU) -> ScatteredTable:
    """GEMM efficiency (FLOP/s over the datasheet peak of the table's dtype) per shape."""
    rows = np.array([r[:4] for r in profile.gemm.rows], dtype=float)
    m, n, k, t = rows.T
    peak = gpu.peak(profile.gemm.dtype)
    return ScatteredTable(np.log2(m), np.log2(n * k), 2.0 * m * n * k / t / peak)


def _attention_tables(profile: Profile, peak: float) -> dict[str, tuple[ScatteredTable, ...]]:
    """Per backend, forward and backward efficiency over (log2 batch x heads, log2 seq)."""
    tables = {}
    for backend in sorted({r[0] for r in profile.attention.rows}):
        rows = [r for r in profile.attention.rows if r[0] == backend]
        bh = np.array([r[1] for r in rows], dtype=float)
        seq = np.array([r[2] for r in rows], dtype=float)
        dim = np.array([r[3] for r in rows], dtype=float)
        # causal forward FLOPs 4 b h s^2 d / 2 (FlashAttention-2, Dao 2023, section 4.1)
        flops = 4.0 * bh * seq**2 * dim / 2.0
        fwd = flops / np.array([r[5] for r in rows]) / peak
        bwd = ATTENTION_BWD_FLOPS * flops / np.array([r[6] for r in rows]) / peak
        x, y = np.log2(bh), np.log2(seq)
        tables[backend] = (ScatteredTable(x, y, fwd), ScatteredTable(x, y, bwd))
    return tables


def _median_head_dim(profile: Profile) -> float:
    """Head dim of the profile's attention rows (their median; 128 without rows)."""
    if profile.attention is None or not profile.attention.rows:
        return 128.0
    return float(np.median([r[3] for r in profile.attention.rows]))


def _collective_fractions(profile: Profile, cluster: Cluster) -> dict[str, float] | None:
    """Per tier, the median large-message bus bandwidth over the tier's link bandwidth."""
    if profile.collectives is None:
        return None
    inner, outer = cluster.tiers[0], cluster.tiers[-1]
    fractions = {}
    for tier, link in (("node", inner), ("network", outer)):
        rows = [r for r in profile.collectives.rows
                if r[1] == tier and r[3] >= LARGE_MESSAGE_BYTES and r[0] != "send_recv"]
        if rows:
            busbw = np.median([bus_bandwidth(op, n, size, t) for op, _, n, size, t in rows])
            fractions[tier] = float(min(1.0, busbw / link.effective_bandwidth_bytes_per_s))
    return fractions or None


def _measured_collectives(profile: Profile) -> MeasuredCollectives | None:
    """A CPU profile's collectives table as a lookup of seconds (gloo is not NCCL's ring, so
    a ring formula at a bus-bandwidth fraction mis-prices it); None for a GPU profile."""
    if profile.device is None or profile.device.kind != "cpu" or profile.collectives is None:
        return None
    return MeasuredCollectives.from_table(profile.collectives)


def bus_bandwidth(op: str, ranks: int, message_bytes: float, seconds: float) -> float:
    """nccl-tests bus bandwidth (doc/PERFORMANCE.md): algbw x 2(n-1)/n for all-reduce,
    x (n-1)/n for all-gather, reduce-scatter and all-to-all, x 1 for send/recv."""
    algorithm = message_bytes / seconds
    factor = {"all_reduce": 2.0 * (ranks - 1) / ranks, "send_recv": 1.0}.get(
        op, (ranks - 1) / ranks)
    return algorithm * factor
