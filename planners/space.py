"""The training search space: every layout of a GPU count, with divisibility pruning.

Structural choices (tp, cp, pp, vpp, ep, etp) are few and enumerated with itertools; the
per-layout knobs (sp, zero, micro-batch, recompute) are crossed with numpy, and every
filter is an array mask, so the space is built without a Python loop per candidate.
"""

from __future__ import annotations

import itertools

import numpy as np

from sysplan.core.errors import InputError
from sysplan.costmodels.candidates import RECOMPUTE_CODES, Candidates
from sysplan.hardware.types import Cluster
from sysplan.models.spec import ModelSpec
from sysplan.planners.types import Pins
from sysplan.workloads.training import TrainJob

MAX_CP = 32


def divisors(n: int) -> list[int]:
    """Positive divisors of ``n`` in increasing order."""
    small = [d for d in range(1, int(n**0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def _powers_of_two(limit: int) -> list[int]:
    return [2**i for i in range(int(np.log2(max(limit, 1))) + 1)]


def _tp_options(model: ModelSpec, cluster: Cluster, gpus: int, pins: Pins) -> list[int]:
    if pins.tp is not None:
        return [pins.tp]
    # TP stays inside a node (its all-reduces are on the critical path) and splits heads and
    # KV groups evenly (Megatron: num_query_groups % tp == 0)
    limit = min(cluster.gpus_per_node, gpus)
    return [t for t in _powers_of_two(limit)
            if model.num_heads % t == 0 and (model.num_kv_heads % t == 0 or t % model.num_kv_heads == 0)]


def _cp_options(job: TrainJob, pins: Pins) -> list[int]:
    if pins.cp is not None:
        return [pins.cp]
    # load-balanced ring attention splits each sequence into 2 cp chunks (Megatron CP docs)
    return [c for c in _powers_of_two(MAX_CP) if job.seq_len % (2 * c) == 0 or c == 1]


def _vpp_options(model: ModelSpec, pp: int, pins: Pins) -> list[int]:
    if pp == 1:
        return [1]
    if pins.vpp is not None:
        return [pins.vpp]
    per_stage = model.num_layers // pp if model.num_layers % pp == 0 else 0
    # interleaving needs layers per stage divisible by the chunks (Megatron arguments.py)
    return [1] + [v for v in divisors(per_stage) if v > 1][:6] if per_stage else [1]


def _expert_options(model: ModelSpec, tp: int, dp: int, cp: int, pins: Pins) -> list[tuple[int, int]]:
    if model.moe is None:
        return [(1, 1)]
    pairs = []
    for etp in sorted({1, tp}):
        room = dp * cp * tp // etp  # parallel folding: EP x ETP spans the TP x CP x DP ranks
        for ep in divisors(room):
            if model.moe.num_experts % ep == 0 and (pins.ep is None or ep == pins.ep):
                pairs.append((ep, etp))
    return pairs


def structural_layouts(model: ModelSpec, job: TrainJob, cluster: Cluster, gpus: int,
                       pins: Pins) -> list[tuple[int, int, int, int, int, int, int]]:
    """(tp, cp, pp, vpp, dp, ep, etp) tuples that tile ``gpus`` exactly."""
    layouts = []
    for tp, cp in itertools.product(_tp_options(model, cluster, gpus, pins), _cp_options(job, pins)):
        if gpus % (tp * cp):
            continue
        rest = gpus // (tp * cp)
        pp_options = [pins.pp] if pins.pp is not None else divisors(rest)
        for pp in pp_options:
            if rest % pp or pp > model.num_layers:
                continue
            dp = rest // pp
            if pins.dp is not None and dp != pins.dp:
                continue
            for vpp in _vpp_options(model, pp, pins):
                for ep, etp in _expert_options(model, tp, dp, cp, pins):
                    layouts.append((tp, cp, pp, vpp, dp, ep, etp))
    return layouts


def enumerate_space(model: ModelSpec, job: TrainJob, cluster: Cluster, gpus: int,
                    pins: Pins) -> Candidates:
    """All candidate configurations for ``gpus`` GPUs, pruned by divisibility."""
    layouts = np.array(structural_layouts(model, job, cluster, gpus, pins), dtype=np.int64)
    if len(layouts) == 0:
        return Candidates.from_arrays(**{k: [] for k in _FIELDS})
    knobs = _knob_grid(job, pins)
    n_l, n_k = len(layouts), len(knobs)
    lay = np.repeat(layouts, n_k, axis=0)
    kn = np.tile(knobs, (n_l, 1))
    c = Candidates.from_arrays(
        tp=lay[:, 0], cp=lay[:, 1], pp=lay[:, 2], vpp=lay[:, 3], dp=lay[:, 4], ep=lay[:, 5],
        etp=lay[:, 6], sp=kn[:, 0], zero=kn[:, 1], mb=kn[:, 2], recompute=kn[:, 3],
        rc_layers=_recomputed_layers(model, lay[:, 2], kn[:, 4], pins.recompute_layers),
        global_batch=np.full(len(lay), job.global_batch),
    )
    partial_is_all = (kn[:, 4] < 4) & (c.rc_layers >= np.ceil(model.num_layers / c.pp))
    return c.take(_valid(c) & ~partial_is_all)


def _recomputed_layers(model: ModelSpec, pp: np.ndarray, quarters: np.ndarray,
                       pinned: int | None) -> np.ndarray:
    """Layers per stage recomputed for a quarter code (4 -> 0, meaning all)."""
    if pinned is not None:
        return np.full(len(pp), pinned, dtype=np.int64)
    per_stage = np.ceil(model.num_layers / pp)
    return np.where(quarters == 4, 0, np.ceil(per_stage * quarters / 4)).astype(np.int64)


_FIELDS = ("tp", "pp", "vpp", "dp", "cp", "ep", "etp", "sp", "zero", "mb", "recompute",
           "rc_layers", "global_batch")


def _knob_grid(job: TrainJob, pins: Pins) -> np.ndarray:
    sp = [int(pins.sequence_parallel)] if pins.sequence_parallel is not None else [0, 1]
    zero = [pins.zero] if pins.zero is not None else [0, 1, 2, 3]
    mb = [pins.micro_batch] if pins.micro_batch is not None else _powers_of_two(min(job.global_batch, 64))
    rc_names = [pins.recompute] if pins.recompute is not None else list(RECOMPUTE_CODES)
    if job.cuda_graphs == "scoped":  # Megatron: full recompute needs full-iteration graphs
        rc_names = [r for r in rc_names if r != "full"]
    rc = [RECOMPUTE_CODES[r] for r in rc_names]
    # quarters of the stage's layers fully recomputed (4 = all; fewer only with full)
    # a pinned --recompute full means all layers unless --recompute-layers says otherwise
    partial = (4, 2, 1) if pins.recompute is None else (4,)
    grid = [(s, z, b, r, q) for s, z, b, r in itertools.product(sp, zero, mb, rc)
            for q in (partial if r == RECOMPUTE_CODES["full"] else (4,))]
    return np.array(grid, dtype=np.int64)


def _valid(c: Candidates) -> np.ndarray:
    """Mask of configurations a runtime can run."""
    ok = (c.global_batch % (c.dp * c.mb)) == 0  # B = m x b x dp (Narayanan et al. 2021)
    ok &= ~((c.sp == 1) & (c.tp == 1))  # sequence parallel needs TP
    ok &= ~((c.zero > 0) & (c.dp * c.cp == 1))  # ZeRO shards over DP (x CP)
    m = np.maximum(c.global_batch // np.maximum(c.dp * c.mb, 1), 1)
    ok &= ~((c.vpp > 1) & (m % c.pp != 0))  # interleaved 1F1B: m % p == 0 (Megatron schedules)
    ok &= ~((c.ep > 1) & (c.tp > 1) & (c.sp == 0))  # MoE with TP needs SP (Megatron guide)
    return ok


def check_pins(model: ModelSpec, job: TrainJob, gpus: int, pins: Pins) -> None:
    """Raise InputError naming a pinned knob that cannot work (exit 2)."""
    for name in ("tp", "pp", "dp", "cp"):
        value = getattr(pins, name)
        if value is not None and (value < 1 or gpus % value):
            options = ", ".join(str(d) for d in divisors(gpus) if d <= 64)
            raise InputError(f"--{name} {value}: does not divide {gpus} GPUs (try {options})")
    product = 1
    for name in ("tp", "pp", "dp", "cp"):
        product *= getattr(pins, name) or 1
    if gpus % product:
        raise InputError(f"pinned tp x pp x dp x cp = {product} does not divide {gpus} GPUs")
    if pins.tp is not None and model.num_heads % pins.tp:
        raise InputError(f"--tp {pins.tp}: does not divide the {model.num_heads} attention heads "
                         f"of {model.name}")
    if pins.ep is not None and pins.ep > 1 and model.moe is None:
        raise InputError(f"--ep {pins.ep}: {model.name} is dense (no experts); use --ep 1")
    if pins.ep is not None and model.moe is not None and model.moe.num_experts % pins.ep:
        raise InputError(f"--ep {pins.ep}: does not divide the {model.moe.num_experts} experts")
    if pins.cp is not None and pins.cp > 1 and job.seq_len % (2 * pins.cp):
        raise InputError(f"--cp {pins.cp}: sequence length {job.seq_len} is not a multiple of "
                         f"2 x cp = {2 * pins.cp}")
    if pins.vpp is not None and pins.vpp > 1 and pins.pp == 1:
        raise InputError(f"--vpp {pins.vpp}: interleaving needs --pp > 1")
    if pins.pp is not None and pins.pp > model.num_layers:
        raise InputError(f"--pp {pins.pp}: more stages than the {model.num_layers} layers")
    pinned_batch = (pins.dp or 0) * (pins.micro_batch or 0)
    if pinned_batch and job.global_batch % pinned_batch:
        raise InputError(
            f"--dp {pins.dp} x --micro-batch {pins.micro_batch} = {pinned_batch} does not "
            f"divide the global batch of {job.global_batch} sequences")
    if pins.recompute == "full" and job.cuda_graphs == "scoped":
        raise InputError("--recompute full: Megatron runs full recompute only under "
                         "full-iteration CUDA graphs; accepted with --cuda-graphs scoped: none, "
                         "selective")
    if pins.recompute_layers is not None and pins.recompute != "full":
        raise InputError(f"--recompute-layers {pins.recompute_layers}: needs --recompute full")
    if pins.zero is not None and pins.zero not in (0, 1, 2, 3):
        raise InputError(f"--zero {pins.zero}: accepted 0, 1, 2, 3")
