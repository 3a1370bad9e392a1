"""Training planner: enumerate the space, price it in one vectorised call, rank, explain."""

from __future__ import annotations

import math
import time

import numpy as np

from sysplan.core.errors import InputError, NoPlanFits
from sysplan.core.units import GIB
from sysplan.costmodels.candidates import Candidates
from sysplan.costmodels.efficiency import CITED_DEFAULTS, Efficiency, same_die_profile
from sysplan.costmodels.estimate import balanced_stage_layers, build_estimate, throughput_arrays
from sysplan.costmodels.training import price_training
from sysplan.hardware.types import Cluster
from sysplan.models.spec import ModelSpec
from sysplan.planners.accuracy import accuracy_line
from sysplan.planners.explain import describe_layout, explain_winner, why_line
from sysplan.planners.pp_layout import parse_pp_layout, rank_totals
from sysplan.planners.restage import (
    POOL,
    STAGE_CHOICES,
    pin_layout,
    pinned_winner,
    restage_plans,
    restaged_winner,
)
from sysplan.planners.runtimes import Runtime, get_runtime, job_for
from sysplan.planners.space import check_pins, divisors, enumerate_space
from sysplan.planners.types import (
    NEAR_TIE,
    Objective,
    Pins,
    Plan,
    ProfileInfo,
    TrainingResult,
)
from sysplan.profiles.loader import bundled_for_gpu
from sysplan.profiles.schema import Profile
from sysplan.workloads.training import (
    TrainJob,
    check_cuda_graphs,
    check_fused_experts,
    check_rank_capacity,
)


def _objective_values(objective: Objective, rates, gpus, train_tokens, gpu_hour_cost):
    """Higher is better: tokens/s/GPU, or minus hours to train, or minus dollars."""
    if objective == "throughput":
        return rates["tokens_per_s_per_gpu"]
    hours = train_tokens / rates["tokens_per_s"] / 3600.0
    if objective == "time-to-train":
        return -hours
    return -hours * gpus * gpu_hour_cost


def _gpu_counts(cluster: Cluster, gpus: int, objective: Objective) -> list[int]:
    """GPU counts to search: the given count, or whole nodes up to it (powers of two + max)."""
    if objective == "throughput":
        return [gpus]
    node = cluster.gpus_per_node
    nodes = gpus // node
    if nodes < 1:
        return [gpus]
    counts = {node * 2**k for k in range(int(np.log2(nodes)) + 1)} | {node * nodes}
    return sorted(counts)


def _check_objective(objective, train_tokens, gpu_hour_cost) -> None:
    if objective in ("time-to-train", "cost") and not train_tokens:
        raise InputError(f"--objective {objective} needs --train-tokens (e.g. 15T)")
    if objective == "cost" and not gpu_hour_cost:
        raise InputError("--objective cost needs --gpu-cost (dollars per GPU-hour, e.g. 2.5)")


def pricing_efficiency(cluster: Cluster, profile: Profile | None, bundled_profile: bool = True
                       ) -> tuple[Efficiency, Profile | None]:
    """The efficiency ``plan_training`` prices with, and the profile behind it: ``profile``'s,
    else the GPU's bundled profile, else one of its die, else the uncalibrated curves (those
    directly when ``bundled_profile`` is False)."""
    if profile is not None:
        return Efficiency.from_profile(profile, cluster), profile
    if bundled_profile:
        return Efficiency.for_cluster(cluster), (
            bundled_for_gpu(cluster.gpu.name) or (same_die_profile(cluster.gpu) or (None,))[0])
    return Efficiency.default(cluster), None


def efficiency_named(name: str, cluster: Cluster) -> Efficiency | None:
    """The efficiency ``plan_training`` called ``name`` on ``cluster`` when it needs no file:
    the bundled profile's or the uncalibrated curves (a saved plan's ``profile.name``); None
    for a profile measured elsewhere."""
    for eff in (Efficiency.for_cluster(cluster), Efficiency.default(cluster)):
        if eff.name == name:
            return eff
    return None


def plan_training(model: ModelSpec, cluster: Cluster, job: TrainJob, *, num_gpus: int | None = None,
                  pins: Pins | None = None, objective: Objective = "throughput", top: int = 5,
                  memory_headroom_bytes: float = 4 * GIB, train_tokens: float | None = None,
                  gpu_hour_cost: float | None = None,
                  runtimes: tuple[str, ...] = (), profile: Profile | None = None,
                  bundled_profile: bool = True, stages: str = "uniform") -> TrainingResult:
    """Rank every configuration of ``job`` on ``cluster`` and return the best ``top``.

    ``runtimes`` (names in ``planners.runtimes.RUNTIMES``) keeps only configurations every
    one of them can run. ``profile`` prices the work with measured efficiencies; without
    one, the bundled profile of the cluster's GPU is used when there is one (unless
    ``bundled_profile`` is False), else the uncalibrated defaults. ``stages="dp"`` re-splits
    the pipeline stages of the best plans by DP (``planners.restage``). Raises InputError for a question that cannot be asked (bad pins,
    missing objective inputs, a model or pins a runtime cannot run) and NoPlanFits when no
    configuration fits in memory.
    """
    gpus = num_gpus or cluster.default_gpus
    pins = pins or Pins()
    if gpus < 1:
        raise InputError(f"--gpus {gpus}: must be at least 1")
    if cluster.max_nodes is not None and gpus > cluster.max_nodes * cluster.gpus_per_node:
        raise InputError(f"--gpus {gpus:,}: {cluster.name} has {cluster.max_nodes:,} nodes "
                         f"(max_nodes) of {cluster.gpus_per_node}; accepted: at most "
                         f"{cluster.max_nodes * cluster.gpus_per_node:,} GPUs")
    if top < 1:
        raise InputError(f"--top {top}: must be at least 1")
    _check_objective(objective, train_tokens, gpu_hour_cost)
    if stages not in STAGE_CHOICES:
        raise InputError(f"--stages {stages}: not accepted; choose one of "
                         f"{', '.join(STAGE_CHOICES)}")
    check_pins(model, job, gpus, pins)
    chunks = ()
    if pins.pp_layout is not None:
        if stages == "dp":
            raise InputError(f"--pp-layout {pins.pp_layout}: pins the stages, which --stages dp "
                             "would re-split; accepted: one of them")
        chunks = parse_pp_layout(pins.pp_layout, model.num_layers, model.mtp_layers, pins.pp,
                                 pins.vpp)
        pins = pins.model_copy(update={"vpp": len(chunks) // pins.pp})
        if "deepspeed" in runtimes and (rank_totals(chunks, pins.pp)
                                        != balanced_stage_layers(model.num_layers, pins.pp)):
            raise InputError(f"--pp-layout {pins.pp_layout}: Megatron-DeepSpeed splits layers "
                             "evenly over pipeline stages; accepted runtimes for an uneven "
                             "layout: megatron, torchtitan")
    check_cuda_graphs(model, job)
    check_fused_experts(model, job, cluster.gpu)
    check_rank_capacity(model, job)
    targets = [get_runtime(name) for name in runtimes]
    for runtime in targets:
        runtime.check_model(model)
    job = job_for(targets, job)
    usable = cluster.gpu.memory_bytes - memory_headroom_bytes
    if usable <= 0:
        raise InputError(
            f"--memory-headroom {memory_headroom_bytes / GIB:g}GiB: leaves no memory on the "
            f"{cluster.gpu.memory_bytes / GIB:g} GiB {cluster.gpu.name} (use less than that)")
    started = time.perf_counter()
    spaces = [enumerate_space(model, job, cluster, n, pins)
              for n in _gpu_counts(cluster, gpus, objective)]
    c = _concat([s for s in spaces if len(s)])
    if c is None:
        raise InputError(f"no layout of {gpus} GPUs satisfies the pinned knobs and the "
                         f"global batch of {job.global_batch} sequences")
    c = _runnable(c, targets, model, job)
    eff, profile = pricing_efficiency(cluster, profile, bundled_profile)
    priced = price_training(model, job, cluster, c, eff)
    rates = throughput_arrays(model, job, cluster, c, priced)
    memory = priced.memory_bytes
    fits = memory <= usable
    elapsed = time.perf_counter() - started
    if not fits.any():
        raise NoPlanFits(_closest_miss(c, memory, usable, model, cluster))
    value = _objective_values(objective, rates, c.gpus, train_tokens, gpu_hour_cost)
    order = _rank(c, value, memory, fits)
    resplit = stages == "dp" or bool(chunks)
    pool = order[:max(top, POOL)] if resplit else order[:top]
    plans = _plans(model, job, cluster, c, priced, rates, value, pool, usable, eff)
    stage_notes: tuple[str, ...] = ()
    if stages == "dp":
        restaged = restage_plans(plans, model, job, cluster, eff, usable, targets,
                                 maximise_value=objective == "throughput")
        plans, stage_notes = list(restaged.plans[:top]), restaged.notes
    elif chunks:
        restaged = pin_layout(plans, pins.pp_layout, chunks, model, job, cluster, eff, usable,
                              maximise_value=objective == "throughput")
        plans, stage_notes = list(restaged.plans[:top]), restaged.notes
    result_plans = tuple(_with_extrapolation(plan, model, job, cluster, eff) for plan in plans)
    extrapolated = sorted({t for plan in result_plans for t in plan.estimate.extrapolated_terms})
    return TrainingResult(
        model=model.name, cluster=cluster.name, num_gpus=gpus, objective=objective,
        searched=len(c), feasible=int(fits.sum()), search_time_s=elapsed,
        profile=ProfileInfo(name=eff.name, calibrated=profile is not None,
                            extrapolated_terms=tuple(extrapolated),
                            uncalibrated_terms=eff.uncalibrated,
                            fitted_on=eff.calibration.fitted_on),
        plans=result_plans, job=job, runtimes=tuple(runtimes), model_spec=model,
        cluster_spec=cluster,
        explanation=("Among even stage splits: " if resplit else "")
        + explain_winner(model, job, cluster, c, priced, rates, value, fits, order, usable, eff,
                         objective=objective)
        + (restaged_winner(result_plans[0]) if stages == "dp" else "")
        + (pinned_winner(result_plans[0], pins.pp_layout) if chunks else ""),
        accuracy=accuracy_line(model.moe is not None, job.seq_len,
                               not eff.name.startswith("default-"), cluster.gpu.gpu_class),
        notes=_notes(model, cluster, profile) + stage_notes
        + tuple(n for n in [batch_divisor_note(job.global_batch, gpus)] if n),
        memory_headroom_bytes=float(memory_headroom_bytes), train_tokens=train_tokens,
        gpu_hour_cost=gpu_hour_cost, gpu_counts=_best_per_gpu_count(c, rates, fits),
    )


def _best_per_gpu_count(c: Candidates, rates, fits) -> tuple[dict[str, float], ...]:
    """For each GPU count searched, the fastest fitting layout's tokens/s (fewer GPUs first)."""
    rows = []
    for gpus in np.unique(c.gpus):
        index = np.flatnonzero(fits & (c.gpus == gpus))
        if index.size:
            rows.append({"num_gpus": float(gpus),
                         "tokens_per_s": float(rates["tokens_per_s"][index].max())})
    return tuple(rows)


#: What published runs reached on GPUs sysplan has no profile for, said beside the defaults.
PUBLISHED_MFU = {
    "cdna2": ("published MI250X (Frontier) LLM training reached 32-38 % of the bf16 peak "
              "(Dash et al. 2023, arXiv 2312.12705: 22B 38.4 %, 175B 36.1 %, 1T 32.0 %, "
              "Megatron-DeepSpeed); the defaults scale the H100-shaped curves to the best "
              "published MI250X GEMM (127 of 191.5 TFLOP/s) and copy rates, but keep H100 "
              "attention and collective fractions and today's kernels, so MFU here reads "
              "above that range until `sysplan profile` measures the node"),
    "cdna3": ("no published MI300X training MFU was found to check against; the defaults scale "
              "the H100-shaped curves to published MI300X GEMM (51 % of peak at best), STREAM "
              "and RCCL rates until `sysplan profile` measures the node"),
    "blackwell": ("the defaults hold GEMMs and attention at B200's sustained, power-capped matmul "
                  "rate (1,426 of 2,250 bf16 TFLOP/s with all 8 GPUs busy, 1,751 in short "
                  "bursts: stas00/ml-engineering MSMF and MAMF) on every Blackwell part, "
                  "GB200/GB300's higher power limits included, until `sysplan profile` "
                  "measures the node"),
}


def batch_divisor_note(sequences: int, gpus: int) -> str | None:
    """A warning when the global batch of ``sequences`` leaves out most data-parallel degrees
    ``gpus`` allows (DP must divide the batch: each replica takes whole micro-batches), naming
    the nearest batch that admits them all (or as many as a batch near it can)."""
    degrees = [d for d in divisors(gpus) if d <= sequences]
    admitted = [d for d in degrees if sequences % d == 0]
    if 2 * len(admitted) >= len(degrees):
        return None
    step = math.lcm(*degrees)
    if step <= 2 * sequences:  # a multiple of every degree lies near the batch
        better = max(step, round(sequences / step) * step)
    else:  # the nearest batch admitting the most degrees within a window around it
        window = range(max(1, sequences - 1024), sequences + 1025)
        better = max(window, key=lambda b: (sum(b % d == 0 for d in degrees),
                                            -abs(b - sequences)))
    gained = sum(better % d == 0 for d in degrees)
    if gained <= len(admitted):
        return None
    return (f"global batch of {sequences:,} sequences: data parallelism must divide it, which "
            f"leaves {len(admitted)} of the {len(degrees)} DP degrees {gpus:,} GPUs allow "
            f"({', '.join(map(str, admitted))}); {better:,} sequences would allow {gained} "
            f"(--global-batch {better})")


def _notes(model: ModelSpec, cluster: Cluster, profile: Profile | None) -> tuple[str, ...]:
    """Assumptions a reader should know about this search."""
    if profile is None:
        scaled = (", scaled to published kernel rates"
                  if cluster.gpu.gpu_class in CITED_DEFAULTS else "")
        notes = [(f"efficiencies are uncalibrated defaults for {cluster.gpu.gpu_class} GPUs "
                  f"(H100-measured fractions of datasheet peak{scaled}) until a profile is "
                  "given")]
        if cluster.gpu.gpu_class in PUBLISHED_MFU:
            notes.append(PUBLISHED_MFU[cluster.gpu.gpu_class])
    else:
        measured = profile.device.name if profile.device else profile.name
        missing = [t for t in ("gemm", "attention", "memory", "collectives")
                   if t not in profile.tables]
        notes = [f"profile {profile.name} (measured on {measured}) prices "
                 f"{', '.join(profile.tables)}"
                 + (f"; {', '.join(missing)} use the uncalibrated defaults" if missing else "")]
        if profile.calibration is not None and profile.calibration.fitted_on:
            factors = ", ".join(f"{k} {v:.3g}" for k, v in profile.calibration.model_dump().items()
                                if isinstance(v, float) and not k.startswith("serve_")
                                and v != 1.0)
            fitted = f" fitted on {profile.calibration.fitted_on}" if profile.calibration.fitted_on \
                else ""
            notes.append(f"calibration{fitted}: {factors}")
        if profile.device and profile.device.gpu and profile.device.gpu != cluster.gpu.name:
            notes.append(f"profile measured on {profile.device.gpu}, applied to "
                         f"{cluster.gpu.name} as fractions of its datasheet peaks")
    if model.num_layers % 2 and model.num_layers > 1:
        notes.append(f"{model.num_layers} layers do not split evenly over every PP degree; "
                     "uneven stages put the extra layers on middle stages")
    if model.moe is not None:
        notes.append("MoE routing assumed balanced up to the job's load-imbalance factor")
    return tuple(notes)


def _runnable(c: Candidates, targets: list[Runtime], model: ModelSpec,
              job: TrainJob) -> Candidates:
    """The configurations every target runtime runs; InputError naming what blocks all."""
    for runtime in targets:
        ok = runtime.mask(c, model, job)
        if not ok.any():
            blocked = runtime.unsupported(c.config(0, ()), model, job)
            raise InputError(f"--runtime {runtime.name}: every layout left by the pinned knobs "
                             f"needs a feature {runtime.title} lacks: {'; '.join(blocked)}")
        c = c.take(ok)
    return c


def _with_extrapolation(plan: Plan, model: ModelSpec, job: TrainJob, cluster: Cluster,
                        eff: Efficiency) -> Plan:
    """The plan, its estimate naming the terms priced outside the profile's points."""
    if eff.gemm is None and eff.attention is None:
        return plan
    tracked = eff.tracking()
    price_training(model, job, cluster, Candidates.from_configs([plan.parallel]), tracked)
    estimate = plan.estimate.model_copy(update={"extrapolated_terms": tuple(sorted(tracked.seen))})
    return plan.model_copy(update={"estimate": estimate})


def _concat(spaces: list[Candidates]) -> Candidates | None:
    if not spaces:
        return None
    if len(spaces) == 1:
        return spaces[0]
    names = spaces[0].__dataclass_fields__
    return Candidates(**{k: np.concatenate([getattr(s, k) for s in spaces]) for k in names})


def _rank(c: Candidates, value, memory, fits) -> np.ndarray:
    """Feasible indices, best first; ties broken by fewer GPUs, less memory, then simpler
    layouts (smaller tp, pp, cp, zero) so the order is deterministic (house style 13)."""
    index = np.flatnonzero(fits)
    keys = (c.recompute[index], c.zero[index], c.vpp[index], c.cp[index], c.pp[index],
            c.tp[index], memory[index], c.gpus[index], -np.round(value[index], 9))
    return index[np.lexsort(keys)]


#: The job's overlap switches; off, communication is priced fully exposed.
OVERLAPS = ("overlap_grad_reduce", "overlap_param_gather", "tp_comm_overlap", "ep_comm_overlap")
#: Step-time terms that are communication.
COMM_TERMS = ("tp_comm", "cp_comm", "ep_comm", "dp_comm", "pp_p2p")


def _plans(model, job, cluster, c, priced, rates, value, chosen, usable, eff) -> list[Plan]:
    plans = []
    best = float(value[chosen[0]])
    # what overlap hides on the shown plans: their communication priced with every overlap
    # switch off, less the exposed terms (one more vectorised pricing of the few shown)
    bare = price_training(model, job.model_copy(update=dict.fromkeys(OVERLAPS, False)),
                          cluster, c.take(np.asarray(chosen)), eff)
    for rank, i in enumerate(chosen, start=1):
        config, estimate = build_estimate(model, job, cluster, c, priced, rates, int(i), usable)
        hidden = {k: float(bare.time[k][rank - 1] - priced.time[k][i]) for k in COMM_TERMS}
        estimate = estimate.model_copy(update={
            "overlapped": {k: v for k, v in hidden.items() if v > 1e-9}})
        gap = abs(best - float(value[i])) / max(abs(best), 1e-30)
        plans.append(Plan(
            rank=rank, parallel=config, estimate=estimate, num_gpus=int(c.gpus[i]),
            objective_value=float(value[i]), near_tie=rank > 1 and gap <= NEAR_TIE,
            why=why_line(estimate, usable, rank, gap),
        ))
    return plans


def _closest_miss(c, memory, usable, model, cluster) -> str:
    i = int(np.argmin(memory))
    over = (memory[i] - usable) / GIB
    return (f"no configuration of {model.name} fits in {usable / GIB:.1f} GiB per "
            f"{cluster.gpu.name}; closest: {describe_layout(c, i)} needs "
            f"{memory[i] / GIB:.1f} GiB ({over:.1f} GiB over). Add GPUs, shorten --seq-len, "
            f"or lower --memory-headroom")
