"""Plain-language reasons: why each plan ranks where it does and why the winner wins."""

from __future__ import annotations

import numpy as np

from sysplan.core.units import GIB
from sysplan.costmodels import moe as moe_cost
from sysplan.costmodels.candidates import RECOMPUTE_NAMES, Candidates
from sysplan.costmodels.layer_cost import model_costs
from sysplan.costmodels.training import TIME_TERMS
from sysplan.costmodels.types import Estimate

_TERM_WORDS = {
    "compute_gemm": "matmuls", "compute_attention": "attention", "compute_elementwise":
    "element-wise ops and launches", "recompute": "recompute", "lm_head": "LM head and loss",
    "tp_comm": "TP communication", "cp_comm": "CP ring exchange", "ep_comm": "expert all-to-all",
    "pp_bubble": "pipeline bubble", "pp_p2p": "pipeline sends", "dp_comm": "exposed DP/ZeRO "
    "communication", "optimizer": "optimizer step",
}


def describe_layout(c: Candidates, i: int) -> str:
    """Compact layout label, e.g. 'tp8 pp4 vpp3 dp32 sp zero1 mb1 full'."""
    parts = [f"tp{c.tp[i]}", f"pp{c.pp[i]}"]
    if c.vpp[i] > 1:
        parts.append(f"vpp{c.vpp[i]}")
    parts.append(f"dp{c.dp[i]}")
    if c.cp[i] > 1:
        parts.append(f"cp{c.cp[i]}")
    if c.ep[i] > 1:
        parts.append(f"ep{c.ep[i]}" + (f" etp{c.etp[i]}" if c.etp[i] > 1 else ""))
    if c.sp[i]:
        parts.append("sp")
    recompute = RECOMPUTE_NAMES[int(c.recompute[i])]
    parts += [f"zero{c.zero[i]}", f"mb{c.mb[i]}",
              "no-recompute" if recompute == "none" else f"{recompute}-recompute"]
    return " ".join(parts)


def why_line(estimate: Estimate, usable: float, rank: int, gap: float) -> str:
    """One line: the largest overhead and the memory margin."""
    b = estimate.breakdown
    overheads = {k: v for k, v in b.items() if not k.startswith("compute_")}
    worst = max(overheads, key=overheads.get)
    share = overheads[worst] / estimate.step_time_s
    margin = (usable - estimate.memory.total_bytes) / GIB
    lead = "best" if rank == 1 else f"{gap:.1%} behind the best"
    return (f"{lead}; largest overhead {_TERM_WORDS[worst]} ({share:.0%}); "
            f"{margin:.1f} GiB memory to spare")


def _terms_summary(priced, i: int, step: float) -> str:
    shares = sorted(((float(priced.time[k][i]) / step, k) for k in TIME_TERMS), reverse=True)
    return ", ".join(f"{_TERM_WORDS[k]} {s:.0%}" for s, k in shares[:3] if s >= 0.01)


def _alternative(c: Candidates, value, fits, winner: int, field: str) -> int | None:
    """Best feasible configuration whose ``field`` differs from the winner's."""
    mask = fits & (getattr(c, field) != getattr(c, field)[winner])
    if not mask.any():
        return None
    index = np.flatnonzero(mask)
    return int(index[np.argmax(value[index])])


def _shortfall(value, best: int, other: int) -> float:
    """How much worse plan ``other`` is than plan ``best`` as a fraction of the best, positive
    when worse: tokens/s lost (values are rates, higher is better) or extra hours or dollars
    (values are minus hours or minus dollars)."""
    if value[best] > 0:
        return float(1.0 - value[other] / value[best])
    return float(value[other] / value[best] - 1.0)  # (-other cost) / (-best cost) - 1


def explain_winner(model, job, cluster, c: Candidates, priced, rates, value, fits, order,
                   usable, efficiency=None, objective: str = "throughput") -> str:
    """One paragraph: what the winner is, what binds it, and what the runner-ups lose."""
    w = int(order[0])
    step = float(priced.step_time_s[w])
    text = [(
        f"{describe_layout(c, w)} wins at {rates['tokens_per_s_per_gpu'][w]:,.0f} tokens/s "
        f"per GPU (MFU {rates['mfu'][w]:.1%}); its step is mostly "
        f"{_terms_summary(priced, w, step)}."
    )]
    fastest = int(np.argmax(value))
    if not fits[fastest]:
        need = priced.memory_bytes[fastest] / GIB
        best = "cheapest" if objective == "cost" else "fastest"
        text.append(
            f"Memory binds: the {best} layout overall, {describe_layout(c, fastest)}, "
            f"would be {-_shortfall(value, w, fastest):.0%} better but needs {need:.1f} GiB "
            f"of the {usable / GIB:.1f} GiB usable.")
    text.append(_communication_sentence(cluster, c, priced, w, step))
    text.append(moe_sentence(model, job, cluster, c.take(np.array([w])), priced.time, w, step,
                             efficiency))
    shown = set()
    for field, label in (("tp", "TP"), ("pp", "PP"), ("recompute", "recompute")):
        alt = _alternative(c, value, fits, w, field)
        if alt is None or alt in shown:  # one plan can differ in several fields
            continue
        shown.add(alt)
        loss = _shortfall(value, w, alt)
        delta = {k: float(priced.time[k][alt] - priced.time[k][w]) for k in TIME_TERMS}
        cause = max(delta, key=delta.get)
        where = _tier_phrase(cluster, c, alt, cause)
        text.append(
            f"The best plan with other {label} ({describe_layout(c, alt)}) is {loss:.1%} "
            f"worse, mostly from more {_TERM_WORDS[cause]}{where}.")
    return " ".join(t for t in text if t)


def _launch_text(job, launches: float, launch: float) -> str:
    """The MoE block's kernels, their fixed cost, and what CUDA-graph capture
    (``job.cuda_graphs``) replays: a replayed kernel costs ``MOE_GRAPHED_SHARE`` of an eager one
    (the graph removes the host's launch calls, not the kernel's own fixed GPU time)."""
    share = f"{moe_cost.MOE_GRAPHED_SHARE:.0%} of an eager kernel's cost"
    if job.cuda_graphs == "full":
        return (f"{launches:.0f} kernels replayed from a CUDA graph at {share}: "
                f"{launch * 1e3:.2f} ms")
    graphed = (f"; the router's and preprocessing's {2 * moe_cost.MOE_SCOPED_KERNELS} replayed from CUDA "
               f"graphs at {share}" if job.cuda_graphs == "scoped" else "")
    experts = ("one fused grouped kernel per linear for all local experts"
               if job.moe_fused_experts else "one GEMM per local expert")
    return (f"{launches:.0f} kernel launches {launch * 1e3:.2f} ms (small kernels: {experts}, "
            f"router, permutation{graphed})")


def moe_sentence(model, job, cluster, one: Candidates, time, i: int, step: float,
                 efficiency=None) -> str:
    """What one MoE layer of configuration ``one`` costs per micro-batch: expert GEMMs (local
    experts and tokens per expert), the dispatch all-to-all and the fabric tier it crosses,
    permute/router passes, and the load imbalance assumed."""
    if model.moe is None:
        return ""
    costs = model_costs(model, job, cluster, one, efficiency)
    layer, moe = costs.kinds["moe"], costs.kinds["moe"].moe
    mode = {0: (0.0, 0.0), 1: (0.0, 1.0), 2: (1.0, 0.0)}[int(one.recompute[0])]
    total = float(layer.seconds(*mode)[0])
    gemm = float((moe.expert_gemm_s + moe.expert_gemm_bwd_s)[0])
    dispatch = float(moe.dispatch_s[0])
    passes = 3.0 * float(moe.elementwise_s[0])
    launch_text = _launch_text(job, float((moe.kernels + moe.kernels_bwd)[0]),
                               float((moe.launch_s + moe.launch_bwd_s)[0]))
    ep, etp = int(one.ep[0]), int(one.etp[0])
    dispatcher = moe.dispatcher_name()
    tier = cluster.tiers[cluster.tier_index_for_span(ep * etp)].name
    mib = float(moe.dispatch_bytes[0]) / 2**20
    if ep > 1 and dispatcher == "allgather":
        where = (f"all-gather dispatcher (cheaper than all-to-all here: top-{model.moe.top_k} "
                 f"copies outweigh gathering every token) {dispatch * 1e3:.2f} ms over {tier} "
                 f"(EP {ep}, {mib:.0f} MiB gathered)")
    elif ep > 1 and dispatcher == "flex":
        where = (f"flex (DeepEP-style) dispatch + combine {dispatch * 1e3:.2f} ms over {tier} "
                 f"(EP {ep}: each token sent once per destination GPU"
                 + (" and once per remote node" if ep * etp > cluster.tiers[0].domain_size
                    else "")
                 + f", {mib:.0f} MiB per rank each way)")
    elif ep > 1:
        where = (f"dispatch + combine all-to-all {dispatch * 1e3:.2f} ms over {tier} "
                 f"(EP {ep}, {mib:.0f} MiB per rank each way)")
    else:
        where = "no dispatch all-to-all (EP 1: every expert on every GPU)"
    share = float(time["ep_comm"][i]) / step
    return (f"Each of the {model.num_moe_layers} MoE layers costs {total * 1e3:.2f} ms per "
            f"micro-batch (forward + backward): expert grouped GEMMs {gemm * 1e3:.2f} ms "
            f"({float(moe.local_experts[0]):.0f} local experts of "
            f"{float(moe.tokens_per_expert[0]):,.0f} tokens each, top-{model.moe.top_k} of "
            f"{model.moe.num_experts}, width {model.moe.expert_ffn_hidden // etp}), {where}, "
            f"router and permute/unpermute passes {passes * 1e3:.2f} ms, "
            f"{launch_text}; a load imbalance of "
            f"{moe.imbalance:.2f}x (busiest over mean rank) stretches the expert GEMMs"
            + ("" if dispatcher == "allgather" else " and the dispatch")
            + f"; EP communication is {share:.1%} of the step"
            + (", what batch-level overlap leaves exposed (--ep-comm-overlap)."
               if job.ep_comm_overlap else
               ", not overlapped (Megatron's default 1F1B; --ep-comm-overlap hides it behind "
               "another micro-batch's compute)."))


def _communication_sentence(cluster, c: Candidates, priced, i: int, step: float) -> str:
    """Which fabric tier carries the winner's largest communication term, and its share."""
    terms = {k: float(priced.time[k][i]) for k in _SPANS}
    term = max(terms, key=terms.get)
    if terms[term] <= 0.0:
        return "Its groups need no communication."
    return (f"Its largest communication is {_TERM_WORDS[term]}"
            f"{_tier_phrase(cluster, c, i, term)} ({terms[term] / step:.1%} of the step).")


#: Consecutive ranks a communication term's group spans (ranks are placed tp, cp, dp, pp
#: innermost first), as a function of the layout.
_SPANS = {
    "tp_comm": lambda c, i: c.tp[i],
    "cp_comm": lambda c, i: c.tp[i] * c.cp[i],
    "ep_comm": lambda c, i: c.etp[i] * c.ep[i],
    "dp_comm": lambda c, i: c.tp[i] * c.cp[i] * c.dp[i],
    "pp_p2p": lambda c, i: c.tp[i] * c.cp[i] * c.dp[i] * c.pp[i],
}


def _tier_phrase(cluster, c: Candidates, i: int, term: str) -> str:
    """' over <tier>' for a communication term: the fabric tier its group crosses."""
    if term not in _SPANS or not cluster.tiers:
        return ""
    tier = cluster.tiers[cluster.tier_index_for_span(int(_SPANS[term](c, i)))]
    return f" over {tier.name}"
