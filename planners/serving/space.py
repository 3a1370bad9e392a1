"""The serving search space: replica layouts, deployments of them, and the analytic bound
that prunes them before any simulation (stages 1 and 2 of ``planners.serving.search``)."""


from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from sysplan.core.errors import InputError
from sysplan.costmodels.serving.cost import ServingCost
from sysplan.costmodels.serving.deployment import Deployment, EngineKnobs, ReplicaLayout
from sysplan.hardware.types import Cluster
from sysplan.models.spec import ModelSpec
from sysplan.planners.serving.types import ServePins
from sysplan.workloads.serving import ServeWorkload, make_requests
from sysplan.workloads.slo import Slo

MAX_REPLICAS = 64


@dataclass(frozen=True)
class ServeQuestion:
    """Everything `sysplan serve` asks."""

    model: ModelSpec
    cluster: Cluster
    workload: ServeWorkload
    slos: tuple[Slo, ...]
    max_gpus: int
    engine: str = "vllm"
    pins: ServePins = field(default_factory=ServePins)
    gpu_hour_cost: float | None = None
    top: int = 3
    trials: int = 0
    timeout_s: float | None = None
    storage: str | None = None
    routing: str = "least-loaded"


def replica_layouts(q: ServeQuestion, cost: ServingCost, knobs: EngineKnobs) -> list[ReplicaLayout]:
    """Layouts whose weights fit and whose KV cache holds one full-length request."""
    pins, model, gpu = q.pins, q.model, q.cluster.gpu
    tps = [pins.tp] if pins.tp else [t for t in (1, 2, 4, 8, 16, 32)
                                      if t <= q.cluster.gpus_per_node and model.num_heads % t == 0]
    pps = [pins.pp] if pins.pp else [1, 2, 4]
    fp8 = "fp8" in gpu.peak_flops
    weights = [pins.weights_precision] if pins.weights_precision else (
        ["bf16", "fp8"] if fp8 else ["bf16"])
    kvs = [pins.kv_precision] if pins.kv_precision else (["bf16", "fp8"] if fp8 else ["bf16"])
    longest = _longest_request(q.workload)
    layouts = []
    for tp in tps:
        for pp in pps:
            for w in weights:
                for kv in kvs:
                    layout = ReplicaLayout(tp=tp, pp=pp, weights_precision=w, kv_precision=kv)
                    if layout.gpus <= q.max_gpus and cost.kv_capacity_tokens(layout, knobs) >= longest:
                        layouts.append(layout)
    # a pipeline adds latency and no throughput to one batch: keep PP only where nothing
    # smaller fits (vLLM runs one batch through the stages at a time)
    if not pins.pp and any(lay.pp == 1 for lay in layouts):
        layouts = [lay for lay in layouts if lay.pp == 1]
    return layouts


def _sample(workload: ServeWorkload):
    """Up to 2,000 of the workload's requests (their lengths do not depend on the rate)."""
    update = {"num_requests": min(workload.num_requests, 2000)}
    if workload.rate is None and workload.concurrency is None:
        update["rate"] = 1.0
    return make_requests(workload.model_copy(update=update))


def _longest_request(workload: ServeWorkload) -> int:
    requests = _sample(workload)
    return int(np.max(requests.input_tokens + requests.output_tokens))


def mean_lengths(workload: ServeWorkload) -> tuple[float, float]:
    """Mean input and output tokens: the length specs', or a trace's."""
    if workload.isl is not None and workload.osl is not None:
        return workload.isl.mean, workload.osl.mean
    requests = _sample(workload)
    return float(np.mean(requests.input_tokens)), float(np.mean(requests.output_tokens))


@dataclass(frozen=True)
class Bound:
    """Analytic best case of one replica layout."""

    layout: ReplicaLayout
    ttft_s: float  # one prefill of the mean prompt, no queueing
    tpot_s: float  # one decode step at batch 1
    rate_rps: float  # sustainable requests/s at full batch
    batch: int  # concurrent sequences the KV cache holds


def analytic_bound(cost: ServingCost, layout: ReplicaLayout, knobs: EngineKnobs,
                   isl: float, osl: float) -> Bound:
    """Roofline latency floors and the rate ceiling of one replica."""
    capacity = cost.kv_capacity_tokens(layout, knobs)
    batch = max(1, min(knobs.max_num_seqs, int(capacity // max(isl + osl, 1.0))))
    prefill = cost.prefill_seconds(layout, int(isl))
    step_one = cost.decode_step_seconds(layout, 1, int(isl))
    step_full = cost.decode_step_seconds(layout, batch, int(isl + osl / 2))  # per sequence
    # per request: one prefill plus its share of OSL full-batch steps (Little's law)
    rate = 1.0 / (prefill + osl * step_full / batch)
    return Bound(layout, prefill, step_one, rate, batch)


def passes_bound(bound: Bound, slos: tuple[Slo, ...]) -> bool:
    """Whether the floors leave room for the SLO (a floor above a bound rules it out)."""
    for slo in slos:
        floor = {"ttft": bound.ttft_s, "tpot": bound.tpot_s, "itl": bound.tpot_s,
                 "e2e": bound.ttft_s}.get(slo.metric, 0.0)
        if floor > slo.bound_s:
            return False
    return True


def aggregated(layout: ReplicaLayout, replicas: int, knobs: EngineKnobs) -> Deployment:
    return Deployment(replica=layout, replicas=replicas, engine=knobs)


def disaggregated(prefill: ReplicaLayout, x: int, decode: ReplicaLayout, y: int,
                  knobs: EngineKnobs) -> Deployment:
    return Deployment(disaggregated=True, prefill=prefill, prefill_replicas=x, decode=decode,
                      decode_replicas=y, engine=knobs)


def candidate_deployments(q: ServeQuestion, bounds: list[Bound], rate: float | None,
                          knobs: EngineKnobs) -> list[Deployment]:
    """Aggregated and (unless pinned off) disaggregated deployments within the GPU budget,
    cheapest first; with a rate, only replica counts whose analytic ceiling reaches it."""
    pins = q.pins
    found: list[Deployment] = []
    if pins.disagg is not True:
        for b in bounds:
            if pins.replicas:
                counts: range | list[int] = [pins.replicas]
            elif rate is None:  # throughput on the given GPUs: as many replicas as fit
                counts = [q.max_gpus // b.layout.gpus]
            else:  # the analytic minimum and two more (the bound is optimistic)
                low = max(1, math.ceil(rate / b.rate_rps))
                counts = range(low, low + 3)
            found += [aggregated(b.layout, n, knobs) for n in counts
                      if n >= 1 and n * b.layout.gpus <= q.max_gpus]
    if pins.disagg is not False and q.max_gpus >= 2:
        found += _disaggregated_candidates(q, bounds, rate, knobs)
    return sorted(found, key=lambda d: (d.num_gpus, d.disaggregated, d.replica.tp))


def _disaggregated_candidates(q, bounds, rate, knobs) -> list[Deployment]:
    """xPyD pools of the same precision: x prefill replicas matched to y decode replicas by
    their rates (DistServe rate matching, serving-formulas 4.4)."""
    pins, found = q.pins, []
    by_precision: dict[tuple[str, str], list[Bound]] = {}
    for b in bounds:
        by_precision.setdefault((b.layout.weights_precision, b.layout.kv_precision), []).append(b)
    for group in by_precision.values():
        for p in group:
            if pins.prefill_tp and p.layout.tp != pins.prefill_tp:
                continue
            prefill_rate = 1.0 / p.ttft_s if p.ttft_s > 0 else math.inf
            for d in group:
                if pins.decode_tp and d.layout.tp != pins.decode_tp:
                    continue
                # a decode-only replica spends OSL x step(B) / B per request: the bound's
                # time per request without its prefill
                decode_rate = 1.0 / max(1e-9, 1.0 / d.rate_rps - d.ttft_s)
                for x in [pins.prefill_replicas] if pins.prefill_replicas else range(1, 9):
                    for y in [pins.decode_replicas] if pins.decode_replicas else range(1, 9):
                        gpus = x * p.layout.gpus + y * d.layout.gpus
                        if gpus > q.max_gpus or (rate is None and gpus < q.max_gpus):
                            continue  # throughput mode: pools that use the GPU budget
                        if rate is not None and min(x * prefill_rate, y * decode_rate) < rate:
                            continue
                        found.append(disaggregated(p.layout, x, d.layout, y, knobs))
    return found[:200]


def base_knobs(q: ServeQuestion) -> EngineKnobs:
    """The engine's knobs as pinned, else the engine defaults for this GPU (vLLM
    arg_utils: >= 70 GiB GPUs get max_num_seqs 1024 and 8192 batched tokens when serving)."""
    big = q.cluster.gpu.memory_bytes >= 70 * 2**30
    seqs = q.pins.max_num_seqs or (1024 if big else 256)
    tokens = q.pins.max_num_batched_tokens or (8192 if big else 2048)
    return EngineKnobs(engine=q.engine, max_num_seqs=seqs, max_num_batched_tokens=tokens)


def _layout_text(layout: ReplicaLayout) -> str:
    text = f"tp{layout.tp}" + (f" pp{layout.pp}" if layout.pp > 1 else "")
    if layout.weights_precision != "bf16" or layout.kv_precision != "bf16":
        text += f" w:{layout.weights_precision} kv:{layout.kv_precision}"
    return text


def describe(d: Deployment) -> str:
    """A deployment in one short phrase: 'tp8 x2' or 'prefill tp4 x1 + decode tp8 x1'."""
    if d.disaggregated:
        return (f"prefill {_layout_text(d.prefill)} x{d.prefill_replicas} + decode "
                f"{_layout_text(d.decode)} x{d.decode_replicas}")
    return f"{_layout_text(d.replica)} x{d.replicas}"


def check_question(q: ServeQuestion) -> None:
    """InputError for a question that cannot be asked."""
    if q.max_gpus < 1:
        raise InputError(f"--gpus {q.max_gpus}: must be at least 1")
    for flag, tp in (("--tp", q.pins.tp), ("--prefill-tp", q.pins.prefill_tp),
                     ("--decode-tp", q.pins.decode_tp)):
        if tp and q.model.num_heads % tp:
            raise InputError(f"{flag} {tp}: does not divide the {q.model.num_heads} heads of "
                             f"{q.model.name}")
    if q.engine not in ("vllm", "sglang", "trtllm"):
        raise InputError(f"--engine {q.engine}: not accepted; choose vllm, sglang, trtllm or all")


def pinned_deployment(q: ServeQuestion, knobs: EngineKnobs) -> Deployment | None:
    """The one deployment the pins describe completely, if they do (precisions default to
    bf16): --tp and --replicas, or every prefill/decode pin with --disagg."""
    p = q.pins
    weights, kv = p.weights_precision or "bf16", p.kv_precision or "bf16"
    if p.disagg and p.prefill_tp and p.prefill_replicas and p.decode_tp and p.decode_replicas:
        return disaggregated(ReplicaLayout(tp=p.prefill_tp, pp=1, weights_precision=weights,
                                           kv_precision=kv), p.prefill_replicas,
                             ReplicaLayout(tp=p.decode_tp, pp=1, weights_precision=weights,
                                           kv_precision=kv), p.decode_replicas, knobs)
    if not p.disagg and p.tp and p.replicas:
        layout = ReplicaLayout(tp=p.tp, pp=p.pp or 1, weights_precision=weights, kv_precision=kv)
        return aggregated(layout, p.replicas, knobs)
    return None

