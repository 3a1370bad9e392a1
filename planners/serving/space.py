"""The serving search space: the question, replica layouts whose weights and one request fit,
and deployments of them (aggregated replicas, or prefill/decode pools); the proven bounds
that prune them live in ``planners.serving.bound``."""


from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from sysplan.core.errors import InputError
from sysplan.costmodels.efficiency import Efficiency
from sysplan.costmodels.serving.cost import ServingCost
from sysplan.costmodels.serving.deployment import Deployment, EngineKnobs, ReplicaLayout
from sysplan.costmodels.serving.engines import default_knobs, trtllm_bench_settings
from sysplan.hardware.types import Cluster
from sysplan.models.spec import ModelSpec
from sysplan.planners.serving.bound import Bound
from sysplan.planners.serving.progress import SearchProgress
from sysplan.planners.serving.types import ServePins
from sysplan.workloads.serving import Requests, ServeWorkload, make_requests
from sysplan.workloads.slo import Slo

MAX_REPLICAS = 64  # replicas of one layout the search considers


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
    top: int = 5  # the same default as sysplan train --top
    trials: int = 0
    timeout_s: float | None = None
    storage: str | None = None
    routing: str = "least-loaded"
    #: prices the kernels (--profile); None: the cluster's bundled or same-die profile, else
    #: the datasheet curves (``Efficiency.for_cluster``)
    efficiency: Efficiency | None = None
    #: also simulate the best deployment at a few rates around its own (``frontier``)
    latency_curve: bool = False
    #: counters the CLI polls to show progress (``progress.SearchProgress``); None: none kept
    progress: SearchProgress | None = field(default=None, compare=False, hash=False)


def replica_layouts(q: ServeQuestion, cost: ServingCost) -> list[ReplicaLayout]:
    """Layouts whose weights fit and whose KV cache (under their engine knobs) holds one
    full-length request."""
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
                    if layout.gpus <= q.max_gpus and cost.kv_capacity_tokens(
                            layout, layout_knobs(q, layout)) >= longest:
                        layouts.append(layout)
    # a pipeline adds latency and no throughput to one batch: keep PP only where nothing
    # smaller fits (vLLM runs one batch through the stages at a time)
    if not pins.pp and any(lay.pp == 1 for lay in layouts):
        layouts = [lay for lay in layouts if lay.pp == 1]
    return layouts


def workload_sample(workload: ServeWorkload) -> Requests:
    """Up to 2,000 of the workload's requests (their lengths do not depend on the rate)."""
    update = {"num_requests": min(workload.num_requests, 2000)}
    if workload.rate is None and workload.concurrency is None:
        update["rate"] = 1.0
    return make_requests(workload.model_copy(update=update))


def _longest_request(workload: ServeWorkload) -> int:
    requests = workload_sample(workload)
    return int(np.max(requests.input_tokens + requests.output_tokens))


def mean_lengths(workload: ServeWorkload) -> tuple[float, float]:
    """Mean input and output tokens: the length specs', or a trace's."""
    if workload.isl is not None and workload.osl is not None:
        return workload.isl.mean, workload.osl.mean
    requests = workload_sample(workload)
    return float(np.mean(requests.input_tokens)), float(np.mean(requests.output_tokens))


def passes_bound(bound: Bound, slos: tuple[Slo, ...]) -> bool:
    """Whether the proven floors leave room for the SLO (a floor above a bound rules the
    layout out: no request, hence no percentile, can be faster)."""
    for slo in slos:
        floor = {"ttft": bound.ttft_s, "tpot": bound.tpot_s, "itl": bound.tpot_s,
                 "e2e": bound.e2e_s}[slo.metric]
        if floor > slo.bound_s:
            return False
    return True


def aggregated(layout: ReplicaLayout, replicas: int, knobs: EngineKnobs) -> Deployment:
    return Deployment(replica=layout, replicas=replicas, engine=knobs)


def disaggregated(prefill: ReplicaLayout, x: int, decode: ReplicaLayout, y: int,
                  knobs: EngineKnobs) -> Deployment:
    return Deployment(disaggregated=True, prefill=prefill, prefill_replicas=x, decode=decode,
                      decode_replicas=y, engine=knobs)


def disaggregated_candidates(q: ServeQuestion, prefills: list[ReplicaLayout],
                             decodes: list[ReplicaLayout], rate: float | None,
                             knobs: EngineKnobs, ceiling: Callable[[Deployment], float]
                             ) -> list[Deployment]:
    """xPyD pools of the same precision within the GPU budget (all of it without a target
    rate), whose proven ceiling reaches the rate, best ceiling per GPU first (DistServe rate
    matching, serving-formulas 4.4: the ceiling is the slower pool's)."""
    if q.pins.disagg is False or q.max_gpus < 2:
        return []
    pins, found = q.pins, []
    for p in prefills:
        if pins.prefill_tp and p.tp != pins.prefill_tp:
            continue
        for d in decodes:
            if (pins.decode_tp and d.tp != pins.decode_tp) or (
                    (p.weights_precision, p.kv_precision) != (d.weights_precision,
                                                              d.kv_precision)):
                continue
            for x in [pins.prefill_replicas] if pins.prefill_replicas else range(1, 9):
                for y in [pins.decode_replicas] if pins.decode_replicas else range(1, 9):
                    gpus = x * p.gpus + y * d.gpus
                    if gpus > q.max_gpus or (rate is None and gpus < q.max_gpus):
                        continue  # throughput mode: pools that use the GPU budget
                    candidate = disaggregated(p, x, d, y, knobs)
                    if rate is None or ceiling(candidate) > rate:
                        found.append(candidate)
    found.sort(key=lambda c: (c.num_gpus if rate is not None else 0,
                              -ceiling(c) / c.num_gpus, c.prefill.tp, c.decode.tp,
                              c.prefill_replicas, c.decode_replicas))
    return found


def is_offline(workload: ServeWorkload) -> bool:
    """Every request queued at once (``--rate inf``)."""
    return workload.rate is not None and math.isinf(workload.rate)


def layout_knobs(q: ServeQuestion, layout: ReplicaLayout) -> EngineKnobs:
    """The engine knobs of one layout: the pinned ones, else the engine's own defaults for
    this GPU and layout (``costmodels.serving.engines.default_knobs``); an offline question
    on TensorRT-LLM runs the engine ``trtllm-bench`` builds for the lengths
    (``trtllm_bench_settings``)."""
    if q.engine == "trtllm" and is_offline(q.workload):
        isl, osl = mean_lengths(q.workload)
        knobs = trtllm_bench_settings(q.model, q.cluster.gpu, layout.tp, layout.pp,
                                      layout.weights_precision, layout.kv_precision, isl, osl)
    else:
        knobs = default_knobs(q.engine, q.cluster.gpu, layout.gpus)
    pinned = {"max_num_seqs": q.pins.max_num_seqs,
              "max_num_batched_tokens": q.pins.max_num_batched_tokens,
              "prefix_cache_hit_rate": q.pins.prefix_cache_hit_rate,
              "capacity_policy": q.pins.capacity_policy}
    return knobs.model_copy(update={k: v for k, v in pinned.items() if v})


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
    if q.pins.capacity_policy and q.engine != "trtllm":
        raise InputError(f"--capacity-policy {q.pins.capacity_policy.replace('_', '-')}: "
                         f"TensorRT-LLM's scheduler policy; add --engine trtllm "
                         f"(got --engine {q.engine})")


def pinned_deployment(q: ServeQuestion) -> Deployment | None:
    """The one deployment the pins describe completely, if they do (precisions default to
    bf16): --tp and --replicas, or every prefill/decode pin with --disagg."""
    p = q.pins
    weights, kv = p.weights_precision or "bf16", p.kv_precision or "bf16"
    if p.disagg and p.prefill_tp and p.prefill_replicas and p.decode_tp and p.decode_replicas:
        decode = ReplicaLayout(tp=p.decode_tp, pp=1, weights_precision=weights, kv_precision=kv)
        return disaggregated(ReplicaLayout(tp=p.prefill_tp, pp=1, weights_precision=weights,
                                           kv_precision=kv), p.prefill_replicas,
                             decode, p.decode_replicas, layout_knobs(q, decode))
    if not p.disagg and p.tp and p.replicas:
        layout = ReplicaLayout(tp=p.tp, pp=p.pp or 1, weights_precision=weights, kv_precision=kv)
        return aggregated(layout, p.replicas, layout_knobs(q, layout))
    return None
