"""Pictures of a `sysplan train` result: the winning plan's pipeline timeline, its memory per
stage against the usable line, its step-time waterfall, and (``--objective cost`` or
``time-to-train``) days and dollars against GPUs.

Each ``*_figure`` takes a ``TrainingResult`` (what ``plan_training`` returns and what
``plan_json.load_plan_json`` reads back) and returns a matplotlib Figure; ``figures`` names
the ones that apply.
"""

from __future__ import annotations

from typing import Any

from sysplan.core.units import GIB
from sysplan.planners.types import Plan, TrainingResult
from sysplan.plots import new_figure
from sysplan.plots.schedule import drawn_microbatches, simulate, stage_times, step_span

#: Colours of the timeline's operations and the memory terms (colour-blind safe, Okabe-Ito).
COLOURS = {"F": "#0072B2", "B": "#E69F00", "W": "#009E73", "comm": "#D55E00",
           "dp_comm": "#999999", "optimizer": "#CC79A7"}
TIMELINE_LABELS = {"F": "forward", "B": "backward", "W": "weight gradient",
                   "comm": "exposed TP/CP/EP comm", "dp_comm": "exposed DP/ZeRO comm",
                   "optimizer": "optimizer step"}
MEMORY_TERMS = (("weights_bytes", "weights", "#0072B2"), ("gradients_bytes", "gradients", "#56B4E9"),
                ("optimizer_bytes", "optimizer states", "#009E73"),
                ("activations_bytes", "activations", "#E69F00"),
                ("other_bytes", "logits, buffers, reserve", "#999999"))
#: Step-time terms as people read them.
TERM_LABELS = {
    "compute_gemm": "matmuls", "compute_attention": "attention",
    "compute_elementwise": "elementwise", "recompute": "recompute", "lm_head": "LM head + loss",
    "tp_comm": "TP comm", "cp_comm": "CP comm", "ep_comm": "EP comm", "pp_bubble": "PP bubble",
    "pp_p2p": "PP p2p", "dp_comm": "DP/ZeRO comm", "optimizer": "optimizer step",
}


def layout_text(plan: Plan) -> str:
    """'tp4 pp4 vpp2 dp4 ...' of a plan."""
    p = plan.parallel
    parts = [f"tp{p.tp}", f"pp{p.pp}"] + ([f"vpp{p.vpp}"] if p.vpp > 1 else [])
    parts += [f"dp{p.dp}"] + ([f"cp{p.cp}"] if p.cp > 1 else []) + (
        [f"ep{p.ep}"] if p.ep > 1 else []) + (["sp"] if p.sequence_parallel else [])
    recompute = "no-recompute" if p.recompute == "none" else f"{p.recompute}-recompute"
    return " ".join([*parts, f"zero{p.zero}", f"mb{p.micro_batch}", recompute])


def timeline_ops(plan: Plan):
    """(schedule, micro-batches drawn, m, ops) of the plan's pipeline step."""
    p = plan.parallel
    schedule = p.schedule if p.pp > 1 else "none"
    m = p.num_microbatches
    times = stage_times(plan.estimate.breakdown, p.stage_layers or (1,) * p.pp, m, p.vpp)
    shown = drawn_microbatches(m, p.pp, schedule)
    return schedule, shown, m, times, simulate(schedule, times, shown, p.vpp)


def timeline_figure(result: TrainingResult, plan: Plan | None = None) -> Any:
    """Per stage, the forward, backward, weight-gradient and exposed communication of every
    micro-batch drawn, then the exposed DP communication and the optimizer step."""
    plan = plan or result.plans[0]
    schedule, shown, m, times, ops = timeline_ops(plan)
    pp = plan.parallel.pp
    figure = new_figure(9.0, 1.2 + 0.55 * pp)
    ax = figure.add_subplot()
    bars: dict[tuple[str, int], list[tuple[float, float]]] = {}

    def bar(rank: int, start: float, width: float, key: str) -> None:
        bars.setdefault((key, rank), []).append((start, width))

    for op in ops:
        work = op.end - op.start - op.comm_s
        bar(op.rank, op.start, work, op.kind)
        if op.comm_s > 0:
            bar(op.rank, op.start + work, op.comm_s, "comm")
    span = step_span(ops)
    for rank in range(pp):
        end = max(op.end for op in ops if op.rank == rank)
        for term in ("dp_comm", "optimizer"):
            if times.tail_s[term] > 0:
                bar(rank, end, times.tail_s[term], term)
                end += times.tail_s[term]
        span = max(span, end)
    for key in TIMELINE_LABELS:  # one collection per kind and stage: a small SVG
        for (kind, rank), spans in sorted(bars.items()):
            if kind == key:
                ax.broken_barh(spans, (pp - 1 - rank - 0.4, 0.8), facecolors=COLOURS[kind],
                               edgecolor="white", linewidth=0.3,
                               label=TIMELINE_LABELS[kind] if rank == min(
                                   r for k, r in bars if k == kind) else None)
    ax.set_yticks(range(pp), [f"stage {pp - 1 - r}" for r in range(pp)])
    ax.set_xlabel("seconds into the step")
    ax.set_xlim(0, span * 1.01)
    drawn = f"{shown} of {m} micro-batches drawn" if shown < m else f"{m} micro-batches"
    name = "no pipeline" if schedule == "none" else schedule
    ax.set_title(f"{layout_text(plan)}: {name}, {drawn}", loc="left")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25 - 0.1 / pp), ncol=6,
              frameon=False, fontsize=8)
    return figure


def usable_bytes(result: TrainingResult) -> float | None:
    """GPU memory minus the headroom of the search (None when the document lacks the GPU)."""
    if result.cluster_spec is None:
        return None
    return result.cluster_spec.gpu.memory_bytes - (result.memory_headroom_bytes or 0.0)


def memory_figure(result: TrainingResult, plan: Plan | None = None) -> Any:
    """A stacked bar of each stage's memory per GPU against the usable line."""
    plan = plan or result.plans[0]
    stages = plan.estimate.memory.per_stage or ({
        "stage": 0, **plan.estimate.memory.model_dump(exclude={"terms", "per_stage"})},)
    figure = new_figure(max(4.5, 1.2 + 0.7 * len(stages)), 4.0)
    ax = figure.add_subplot()
    names = [f"stage {int(s.get('stage', i))}" for i, s in enumerate(stages)]
    bottom = [0.0] * len(stages)
    for key, label, colour in MEMORY_TERMS:
        values = [s.get(key, 0.0) / GIB for s in stages]
        ax.bar(names, values, bottom=bottom, color=colour, label=label, width=0.6)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    usable = usable_bytes(result)
    if usable is not None:
        line = "GPU memory" if result.memory_headroom_bytes is None else "usable memory"
        ax.axhline(usable / GIB, color="#D55E00", linestyle="--", linewidth=1.2,
                   label=f"{line} ({usable / GIB:.1f} GiB)")
    ax.set_ylabel("GiB per GPU")
    ax.set_title(f"memory per stage: {layout_text(plan)}", loc="left")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return figure


def waterfall_rows(plan: Plan) -> list[tuple[str, float]]:
    """(label, seconds) of the step-time terms above zero, in the cost model's order."""
    return [(TERM_LABELS.get(k, k), v) for k, v in plan.estimate.breakdown.items() if v > 0]


def _is_comm(label: str) -> bool:
    return "comm" in label or "p2p" in label


def waterfall_figure(result: TrainingResult, plan: Plan | None = None) -> Any:
    """Each named step-time term as a floating bar from the sum of those before it, then the
    step time."""
    plan = plan or result.plans[0]
    rows = waterfall_rows(plan)
    figure = new_figure(8.0, 1.2 + 0.32 * (len(rows) + 1))
    ax = figure.add_subplot()
    start = 0.0
    labels = []
    for i, (label, seconds) in enumerate(rows):
        ax.barh(i, seconds, left=start, color="#D55E00" if _is_comm(label) else "#0072B2",
                height=0.6)
        ax.text(start + seconds, i, f" {seconds:.3g} s", va="center", fontsize=7)
        start += seconds
        labels.append(label)
    ax.barh(len(rows), start, color="#333333", height=0.6)
    ax.text(start, len(rows), f" {start:.3g} s", va="center", fontsize=7)
    labels.append("step time")
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("seconds per step")
    ax.set_xlim(0, start * 1.15)
    ax.set_title(f"step time: {layout_text(plan)}", loc="left")
    return figure


def cost_rows(result: TrainingResult) -> list[tuple[int, float, float | None]]:
    """(GPUs, days, dollars or None) per GPU count searched (from ``gpu_counts``, else from
    the ranked plans); empty without --train-tokens."""
    if not result.train_tokens:
        return []
    best: dict[int, float] = {}
    for row in result.gpu_counts:
        best[int(row["num_gpus"])] = float(row["tokens_per_s"])
    for plan in result.plans:
        best[plan.num_gpus] = max(best.get(plan.num_gpus, 0.0), plan.estimate.tokens_per_s)
    rows = []
    for gpus, rate in sorted(best.items()):
        days = result.train_tokens / rate / 86_400
        dollars = days * 24 * gpus * result.gpu_hour_cost if result.gpu_hour_cost else None
        rows.append((gpus, days, dollars))
    return rows


def cost_figure(result: TrainingResult) -> Any:
    """Days to train (and dollars, with a GPU-hour cost) against GPUs; the winner marked."""
    rows = cost_rows(result)
    figure = new_figure(7.0, 4.0)
    ax = figure.add_subplot()
    gpus = [r[0] for r in rows]
    ax.plot(gpus, [r[1] for r in rows], "o-", color="#0072B2", label="days to train")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("GPUs")
    ax.set_ylabel("days to train", color="#0072B2")
    winner = result.plans[0].num_gpus
    chosen = [r for r in rows if r[0] == winner]
    if chosen:
        ax.plot([winner], [chosen[0][1]], "*", markersize=14, color="#D55E00",
                label=f"chosen: {winner} GPUs")
    ax.set_yscale("log")
    ax.set_xticks(gpus, [f"{g:,}" for g in gpus])
    handles, labels = ax.get_legend_handles_labels()
    if any(r[2] is not None for r in rows):
        twin = ax.twinx()
        twin.plot(gpus, [r[2] / 1e6 for r in rows], "s--", color="#009E73",
                  label="million dollars")
        if chosen and chosen[0][2] is not None:
            twin.plot([winner], [chosen[0][2] / 1e6], "*", markersize=14, color="#D55E00")
        twin.set_ylabel("million dollars", color="#009E73")
        twin.spines["right"].set_visible(True)
        more = twin.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    tokens = result.train_tokens or 0
    ax.set_title(f"{result.model}: {tokens / 1e12:g}T tokens, objective {result.objective}",
                 loc="left")
    ax.legend(handles, labels, loc="upper center", frameon=False)
    return figure


def figures(result: TrainingResult) -> dict[str, Any]:
    """The pictures that apply to ``result``, by file stem."""
    out = {"train-timeline": timeline_figure(result), "train-memory": memory_figure(result),
           "train-step": waterfall_figure(result)}
    if result.objective in ("cost", "time-to-train") and cost_rows(result):
        out["train-cost"] = cost_figure(result)
    return out
