"""Why the winning deployment wins, in one paragraph (the serving side of ``planners.explain``).

Four parts, each from numbers the search already has:

1. what the winner achieves under the objective of the mode (``screen.mode_of``);
2. the binding SLO: the stated percentile closest to its bound, and the margin left;
3. what limits throughput on one replica: the KV cache (requests in flight, by Little's law,
   times their mean context against the replica's KV capacity), the batch limit
   (``max_num_seqs``), compute-bound prefill, or decode (bandwidth-bound while a step's weight
   GEMMs take about as long as reading the weights from HBM, compute-bound past that: the
   roofline of Williams et al. 2009 as applied to LLM decode in Pope et al. 2022, section 2);
4. aggregated against disaggregated, and the best alternative with another TP and with the
   other layout, and how much worse it is (a positive percentage): from the verified plans
   where one differs so, else from the simulations of the screen (``explored``), said so.

Pure: no simulation is run here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from sysplan.core.units import GIB
from sysplan.costmodels.serving.cost import ServingCost
from sysplan.costmodels.serving.deployment import Batch, Deployment, ReplicaLayout
from sysplan.planners.serving.screen import mode_of
from sysplan.planners.serving.space import ServeQuestion, describe, mean_lengths
from sysplan.planners.serving.types import ServePlan, ServeResult

#: KV cache share (of a replica's capacity) held by the requests in flight that counts as the
#: limit, and the share of max_num_seqs that does.
KV_LIMIT = 0.85
SEQS_LIMIT = 0.9
#: Decode step GEMMs this many times the weight read time count as compute-bound.
COMPUTE_BOUND = 1.5
#: An SLO this close to its bound (observed / bound) binds.
BINDING = 0.9


def explain_serving(q: ServeQuestion, cost: ServingCost, result: ServeResult) -> str:
    """One paragraph: what the winner achieves, what binds, what limits it, what else was
    close (empty when there is no plan)."""
    if not result.plans:
        return ""
    best = result.plans[0]
    mode = mode_of(q)
    pinned = result.searched <= 1
    parts = [_winner(q, best, mode, pinned), _slo_sentence(best, mode),
             _limit_sentence(q, cost, best, mode)]
    if not pinned:
        parts += _alternatives(q, best, result, mode)
    return " ".join(p for p in parts if p)


# --- 1. the winner ------------------------------------------------------------------------


def _winner(q: ServeQuestion, plan: ServePlan, mode: str, pinned: bool) -> str:
    d, s = plan.deployment, plan.summary
    per_gpu = s["output_tokens_per_s"] / plan.num_gpus
    kind = "disaggregated" if d.disaggregated else "aggregated"
    gpus = f"{plan.num_gpus} GPU{'' if plan.num_gpus == 1 else 's'}"
    if pinned:
        return (f"{describe(d)} ({kind}, {gpus}, every dimension pinned) gives "
                f"{per_gpu:,.0f} output tokens/s per GPU"
                + (f" at {plan.rate_rps:,.3g} requests/s." if plan.rate_rps else "."))
    head = f"{describe(d)} ({kind}, {gpus}) wins"
    if mode == "rate":
        price = (f" at ${plan.cost_per_hour:,.2f}/hour" if plan.cost_per_hour is not None
                 else "")
        return (f"{head}: the {'cheapest' if q.gpu_hour_cost else 'fewest GPUs'} serving "
                f"{plan.rate_rps:,.3g} requests/s within the SLO{price} "
                f"({per_gpu:,.0f} output tokens/s per GPU).")
    if mode == "max-rate" and plan.max_rate_rps:
        return (f"{head} at {plan.max_rate_rps:,.3g} requests/s within the SLO, "
                f"{per_gpu:,.0f} output tokens/s per GPU.")
    where = "offline (all requests queued)" if mode == "offline" else (
        f"with {q.workload.concurrency} requests in flight" if mode == "closed"
        else "at the load asked")
    return f"{head} at {per_gpu:,.0f} output tokens/s per GPU {where}."


# --- 2. the binding SLO -------------------------------------------------------------------


def _slo_sentence(plan: ServePlan, mode: str) -> str:
    checks = [c for c in plan.summary["slo_checks"] if c["observed_s"] is not None]
    if not checks:
        return "No SLO was stated, so nothing but throughput binds."
    tightest = max(checks, key=lambda c: c["observed_s"] / c["slo"]["bound_s"])
    slo, observed = tightest["slo"], tightest["observed_s"]
    ratio = observed / slo["bound_s"]
    name = f"{slo['metric'].upper()} p{slo['percentile']:g}"
    if ratio > 1:
        return (f"It misses {name}: {_ms(observed)} against {_ms(slo['bound_s'])}, "
                f"{ratio - 1:.0%} over the bound.")
    text = (f"The tightest SLO is {name}: {_ms(observed)} of {_ms(slo['bound_s'])}, "
            f"{1 - ratio:.0%} below the bound")
    if ratio >= BINDING:
        return text + " (it binds)."
    if mode == "max-rate":
        return text + ", so throughput (a growing queue), not latency, stops a higher rate."
    return text + "."


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:,.0f} ms" if ms >= 10 else f"{ms:.2g} ms"


# --- 3. what limits throughput ------------------------------------------------------------


def _limit_sentence(q: ServeQuestion, cost: ServingCost, plan: ServePlan, mode: str) -> str:
    d, s = plan.deployment, plan.summary
    inputs, outputs = mean_lengths(q.workload)
    computed = max(inputs * (1.0 - d.engine.prefix_cache_hit_rate), 1.0)
    context = inputs + outputs / 2.0  # mean KV tokens a request holds while decoding
    rate = plan.max_rate_rps or plan.rate_rps
    e2e = s["e2e_s"]["p50"] or 0.0
    if not d.disaggregated:
        in_flight = _in_flight(q, d, d.replica, d.replicas, rate, e2e, context, mode)
        return "Throughput is limited by " + _replica_limit(
            cost, d, d.replica, in_flight, computed, outputs, context, prefill=True) + "."
    prefill_share = (rate / d.prefill_replicas * _prefill_s(cost, d, d.prefill, computed)
                     if rate and math.isfinite(rate) else None)
    decode_e2e = max(e2e - (s["ttft_s"]["p50"] or 0.0), 0.0)
    in_flight = _in_flight(q, d, d.decode, d.decode_replicas, rate, decode_e2e, context, mode)
    busy = (f"its prefill replicas are busy about {min(prefill_share, 1.0):.0%} of the time "
            "with compute-bound prompts" if prefill_share is not None else
            "its prefill replicas run compute-bound prompts")
    return (f"Disaggregated, {busy}; the decode side is limited by "
            + _replica_limit(cost, d, d.decode, in_flight, computed, outputs, context,
                             prefill=False) + ".")


def _in_flight(q: ServeQuestion, d: Deployment, layout: ReplicaLayout, replicas: int,
               rate: float | None, latency_s: float, context: float, mode: str) -> float:
    """Requests in flight on one replica: Little's law (rate x time in the system) at a
    rate; offline, what the engine admits (its batch limit or a full KV cache); closed loop,
    the concurrency's share."""
    if mode == "closed" and q.workload.concurrency:
        return q.workload.concurrency / replicas
    if rate is not None and math.isfinite(rate):
        return rate / replicas * latency_s
    return float(min(d.engine.max_num_seqs, 1e12))  # offline: the engine fills its batch


def _prefill_s(cost: ServingCost, d: Deployment, layout: ReplicaLayout, tokens: float) -> float:
    """Seconds one mean prompt takes, in chunks of at most max_num_batched_tokens."""
    chunk = max(1, min(int(tokens), d.engine.max_num_batched_tokens))
    return cost.prefill_seconds(layout, chunk) * tokens / chunk


def _replica_limit(cost: ServingCost, d: Deployment, layout: ReplicaLayout, in_flight: float,
                   computed: float, outputs: float, context: float, *, prefill: bool) -> str:
    """The phrase naming one replica's limit, with the numbers behind it."""
    kv_tokens = cost.kv_capacity_tokens(layout, d.engine)
    in_flight = max(min(in_flight, kv_tokens / max(context, 1.0), d.engine.max_num_seqs), 1.0)
    kv_share = in_flight * context / max(kv_tokens, 1)
    batch = max(1, round(in_flight))
    step = cost.iteration_breakdown(layout, Batch.decode(batch, int(batch * context)))
    decode_s = max(outputs - 1.0, 0.0) * step.total_s / batch
    prefill_s = _prefill_s(cost, d, layout, computed) if prefill else 0.0
    prefill_share = prefill_s / max(prefill_s + decode_s, 1e-12)
    held = f"{kv_share:.0%}" if kv_share >= 0.005 else "under 1%"
    kv = (f"about {in_flight:,.0f} requests in flight per replica hold {held} of its "
          f"{kv_tokens:,}-token KV cache")
    if kv_share >= KV_LIMIT:
        return (f"KV-cache memory: {kv} ({cost.kv_cache_bytes_per_gpu(layout, d.engine) / GIB:.1f}"
                f" GiB per GPU beside {cost.weight_bytes_per_gpu(layout) / GIB:.1f} GiB of "
                "weights)")
    if in_flight >= SEQS_LIMIT * d.engine.max_num_seqs:
        return (f"the batch limit: {kv}, at max_num_seqs {d.engine.max_num_seqs} (more "
                "sequences per step would raise throughput)")
    if prefill and prefill_share >= 0.5:
        return (f"compute-bound prefill: prompts of {computed:,.0f} tokens take "
                f"{prefill_share:.0%} of each replica's busy time; {kv}")
    weights_read_s = cost.weight_bytes_per_gpu(layout) / cost.cluster.gpu.hbm_bandwidth_bytes_per_s
    bound = "compute" if step.gemm_s > COMPUTE_BOUND * weights_read_s else "memory bandwidth"
    share = f", {1 - prefill_share:.0%} of each replica's busy time" if prefill else ""
    return (f"decode {bound}: a decode step of {batch:,} sequences takes "
            f"{step.total_s * 1e3:.1f} ms (weight GEMMs {step.gemm_s * 1e3:.1f} ms, KV reads "
            f"{step.attention_s * 1e3:.1f} ms){share}; {kv}")


# --- 4. alternatives ----------------------------------------------------------------------


def _alternatives(q: ServeQuestion, best: ServePlan, result: ServeResult, mode: str) -> list[str]:
    d = best.deployment
    text = []
    if d.disaggregated:
        text.append("Separate prefill and decode pools win here: prompts no longer stall the "
                    "decode steps of other requests.")
    shown: set[str] = set()
    for label, other in (("TP", lambda x: _tp(x) != _tp(d)),
                         ("layout", lambda x: x.disaggregated != d.disaggregated)):
        name = ("aggregated" if d.disaggregated else "disaggregated") if label == "layout" \
            else "TP"
        verified = [p for p in result.plans[1:] if other(p.deployment)]
        if verified:
            alt = verified[0]
            if describe(alt.deployment) in shown:
                continue
            shown.add(describe(alt.deployment))
            text.append(f"The best {_other(name)} deployment ({describe(alt.deployment)}) "
                        f"{_worse(q, best, alt, mode)}.")
            continue
        sentence = _screened(q, best, result.explored, other, name, mode, shown)
        if sentence:
            text.append(sentence)
    return text


def _tp(d: Deployment) -> int:
    return (d.decode if d.disaggregated else d.replica).tp


def _other(name: str) -> str:
    return "other-TP" if name == "TP" else name


def _worse(q: ServeQuestion, best: ServePlan, alt: ServePlan, mode: str) -> str:
    """'is 12% worse (...)' between two verified plans, under the objective."""
    if mode == "rate":
        if q.gpu_hour_cost and best.cost_per_hour and alt.cost_per_hour:
            extra = alt.cost_per_hour / best.cost_per_hour - 1.0
            return f"costs {extra:.0%} more (${alt.cost_per_hour:,.2f}/hour)"
        extra = alt.num_gpus / best.num_gpus - 1.0
        if extra <= 0:
            return (f"needs as few GPUs ({alt.num_gpus}) but ranks lower on latency headroom")
        return f"needs {extra:.0%} more GPUs ({alt.num_gpus})"
    loss = 1.0 - alt.objective_value / best.objective_value if best.objective_value else 0.0
    per_gpu = alt.summary["output_tokens_per_s"] / alt.num_gpus
    return f"is {max(loss, 0.0):.1%} worse ({per_gpu:,.0f} output tokens/s per GPU)"


def _screened(q: ServeQuestion, best: ServePlan, points: Iterable[dict], other, name: str,
              mode: str, shown: set[str]) -> str:
    """A sentence on the best screened point of the other kind, or ''."""
    wanted = [p for p in points if other(_PointShape(p))
              and (p["meets_slo"] or mode == "offline")]
    if not wanted:
        return ""
    if mode == "rate":
        alt = min(wanted, key=lambda p: (p["gpus"], p["deployment"]))
        if alt["deployment"] in shown:
            return ""
        shown.add(alt["deployment"])
        extra = alt["gpus"] / best.num_gpus - 1.0
        verdict = (f"needs {extra:.0%} more GPUs ({alt['gpus']})" if extra > 0 else
                   f"met the SLO on {alt['gpus']} GPUs in a short screening run but is not "
                   "among the plans checked at full length")
        return f"The best {_other(name)} deployment screened ({alt['deployment']}) {verdict}."
    alt = max(wanted, key=lambda p: (p["output_tokens_per_s_per_gpu"], p["deployment"]))
    if alt["deployment"] in shown:
        return ""
    shown.add(alt["deployment"])
    mine = best.summary["output_tokens_per_s"] / best.num_gpus
    theirs = alt["output_tokens_per_s_per_gpu"]
    if theirs < mine:
        verdict = f"is {1 - theirs / mine:.1%} worse ({theirs:,.0f} output tokens/s per GPU)"
    else:
        verdict = (f"reached {theirs:,.0f} output tokens/s per GPU on a short screening run "
                   "but is not among the plans checked at full length")
    return f"The best {_other(name)} deployment screened ({alt['deployment']}) {verdict}."


class _PointShape:
    """An explored point seen as much like a Deployment as the alternatives ask."""

    def __init__(self, point: dict) -> None:
        self.disaggregated = bool(point["disaggregated"])
        self.tp = int(point["tp"])
        self.replica = self.decode = self
