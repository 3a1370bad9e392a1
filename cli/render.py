"""Render a TrainingResult for humans: the one module that formats units (ms, GiB, TFLOP/s).

Everything else in sysplan is SI (seconds, bytes, FLOP/s). Tables use an ASCII-only box with
no vertical rules, so that the output copies and pastes cleanly; colours appear only on a
terminal (rich decides).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from sysplan.core.units import GIB
from sysplan.costmodels.efficiency import CITED, TERMS
from sysplan.costmodels.estimate import balanced_stage_layers
from sysplan.costmodels.types import Estimate, MemoryBreakdown, ParallelConfig
from sysplan.hardware.types import Cluster
from sysplan.planners.restage import runs_text
from sysplan.planners.types import Plan, TrainingResult
from sysplan.workloads.training import TrainJob

#: Marks a plan within 2 % of the best plan.
NEAR_TIE = "~"
#: Width the output is laid out for when stdout is not a terminal.
WIDTH = 100

#: A header rule of ASCII dashes and no vertical rules: copy-paste friendly everywhere.
#: rich box lines: top, head, head_row, mid, row, foot_row, foot, bottom.
PLAIN = box.Box("    \n    \n -- \n    \n    \n    \n    \n    \n", ascii=True)


@dataclass(frozen=True)
class TrainContext:
    """What the renderer needs beyond the result: the inputs, as the CLI resolved them."""

    cluster: Cluster
    job: TrainJob
    memory_headroom_bytes: float
    default_allocation: bool
    train_tokens: float | None = None
    gpu_hour_cost: float | None = None


def stdout_console() -> Console:
    """Console for results: terminal width on a terminal, 100 columns otherwise."""
    probe = Console()
    return Console(highlight=False, width=None if probe.is_terminal else WIDTH)


# --- units --------------------------------------------------------------------------------


def gib(num_bytes: float) -> str:
    """Bytes as GiB with one decimal: ``62.3 GiB``."""
    return f"{num_bytes / GIB:,.1f} GiB"


def milliseconds(seconds: float) -> str:
    """Seconds as milliseconds: ``1,234.5 ms`` (three significant figures below 100 ms)."""
    ms = seconds * 1e3
    return f"{ms:,.1f} ms" if abs(ms) >= 100 else f"{ms:.3g} ms"


def duration(seconds: float) -> str:
    """A step time: ``853 ms`` below a second, ``8.53 s`` above."""
    return milliseconds(seconds) if seconds < 1 else f"{seconds:,.2f} s"


def bandwidth(bytes_per_s: float) -> str:
    """Bytes per second as GB/s."""
    return f"{bytes_per_s / 1e9:,.1f} GB/s"


def billions(count: float) -> str:
    """A parameter count in billions."""
    return f"{count / 1e9:,.2f} B"


def tflops(flops_per_s: float) -> str:
    """FLOP/s as ``989.4 TFLOP/s``."""
    return f"{flops_per_s / 1e12:,.1f} TFLOP/s"


def flop_rate(flops_per_s: float) -> str:
    """FLOP/s as TFLOP/s, or as ``94.5 GFLOP/s`` below 1 TFLOP/s (a CPU)."""
    return tflops(flops_per_s) if flops_per_s >= 1e12 else f"{flops_per_s / 1e9:,.1f} GFLOP/s"


def size(num_bytes: float) -> str:
    """Bytes in the largest binary unit that keeps the number at least 1: ``4 MiB``."""
    for unit, scale in (("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:,.3g} {unit}"
    return f"{num_bytes:,.0f} B"


def percent(fraction: float) -> str:
    """A fraction as ``41.2 %``."""
    return f"{fraction * 100:.1f} %"


def dollars(amount: float) -> str:
    """``$950``, ``$12.3k``, ``$8.9M``, ``$1.2G``."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if amount >= scale:
            return f"${amount / scale:,.1f}{suffix}"
    return f"${amount:,.0f}"


# --- words --------------------------------------------------------------------------------


def device_word(cluster: Cluster) -> str:
    """What one unit is called: GCDs on MI250X (one GCD is one device), GPUs otherwise."""
    return "GCDs" if "MI250" in cluster.gpu.name.upper() else "GPUs"


def layout(config: ParallelConfig) -> str:
    """``tp8 pp4 vpp3 dp32 sp zero1 mb2``; vpp, cp, ep and etp appear when above 1."""
    parts = [f"tp{config.tp}", f"pp{config.pp}"]
    if config.vpp > 1:
        parts.append(f"vpp{config.vpp}")
    parts.append(f"dp{config.dp}")
    parts += [f"{name}{degree}" for name, degree in (("cp", config.cp), ("ep", config.ep))
              if degree > 1]
    if config.etp > 1:
        parts.append(f"etp{config.etp}")
    if config.sequence_parallel:
        parts.append("sp")
    parts += [f"zero{config.zero}", f"mb{config.micro_batch}"]
    return " ".join(parts)


def recompute_label(config: ParallelConfig) -> str:
    """``none``, ``selective``, ``full``, ``full x12`` (layers per stage) or, when stages
    differ (--stages dp), ``full x3/none x13`` per stage."""
    if config.stage_recompute:
        return runs_text(config.stage_recompute)
    if config.recompute == "full" and config.recompute_layers is not None:
        return f"full x{config.recompute_layers}"
    return config.recompute


def recompute_detail(config: ParallelConfig, job: TrainJob) -> str:
    """``recompute_label`` naming what selective recompute reruns: Megatron's
    --recompute-modules, or torchtitan's per-op policy."""
    label = recompute_label(config)
    what = "per-op" if job.selective_policy == "op" else ", ".join(job.recompute_modules)
    if label == "selective":
        return f"selective ({what})"
    return f"{label}; selective: {what}" if "selective" in label else label


def allocation(result: TrainingResult, context: TrainContext) -> str:
    """``frontier: 1,024 GCDs (default allocation: 128 nodes x 8)``."""
    cluster, gpus = context.cluster, result.num_gpus
    head = f"{result.cluster}: {gpus:,} {device_word(cluster)}"
    per_node = cluster.gpus_per_node
    if gpus % per_node:
        shape = f"part of one {per_node}-{device_word(cluster)[:-1]} node" if gpus < per_node \
            else f"{gpus / per_node:,.2f} nodes of {per_node}"
    else:
        nodes = gpus // per_node
        shape = f"{nodes:,} node{'s' if nodes > 1 else ''} x {per_node}"
    return f"{head} ({'default allocation: ' if context.default_allocation else ''}{shape})"


def usable_bytes(context: TrainContext) -> float:
    """GPU memory a plan may use: capacity minus the headroom."""
    return context.cluster.gpu.memory_bytes - context.memory_headroom_bytes


# --- sections -----------------------------------------------------------------------------


def header(result: TrainingResult, context: TrainContext) -> Table:
    """Label/value lines: model, cluster, GPU, job, search, profile, memory."""
    gpu, job = context.cluster.gpu, context.job
    unit = device_word(context.cluster)[:-1]
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    grid.add_row("model", model_line(result, job))
    grid.add_row("cluster", allocation(result, context))
    # MFU is stated against the bf16 peak for every precision; fp8 jobs also see the fp8 peak
    fp8 = f" ({tflops(gpu.peak('fp8'))} fp8)" if job.precision == "fp8" else ""
    grid.add_row(
        unit,
        f"{gpu.name}: {gib(gpu.memory_bytes)}, {tflops(gpu.peak('bf16'))} dense bf16{fp8}, "
        f"{gpu.hbm_bandwidth_bytes_per_s / 1e12:,.2f} TB/s HBM",
    )
    grid.add_row(
        "job",
        f"{job.seq_len:,}-token sequences, global batch {job.global_batch:,} "
        f"({job.tokens_per_step:,} tokens), {job.precision}",
    )
    grid.add_row(
        "search",
        f"searched {result.searched:,} configurations in {result.search_time_s:.2f} s, "
        f"{result.feasible:,} fit; ranked by {objective_label(result.objective)}",
    )
    grid.add_row("profile", profile_line(result))
    if result.accuracy:
        grid.add_row("accuracy", result.accuracy)
    grid.add_row(
        "memory",
        f"{gib(context.memory_headroom_bytes)} headroom: a plan must fit in "
        f"{gib(usable_bytes(context))} of {gib(gpu.memory_bytes)} per {unit}",
    )
    return grid


def model_line(result: TrainingResult, job: TrainJob) -> str:
    """The model with its total and active parameters and training FLOPs per token, so a
    config.json can be checked at a glance."""
    spec = result.model_spec
    if spec is None:
        return result.model
    from sysplan.models.counting import model_flops_per_token, param_counts

    counts = param_counts(spec)
    active = f" ({billions(counts.active)} active)" if counts.active != counts.total else ""
    flops = model_flops_per_token(spec, job.seq_len)  # training: 3 x forward (PaLM App. B)
    return (f"{result.model}: {billions(counts.total)} parameters{active}, "
            f"{flops / 1e9:,.1f} GFLOP per token")


def objective_label(objective: str) -> str:
    """How plans are ranked, in words."""
    return {
        "throughput": "tokens/s per GPU",
        "time-to-train": "time to train",
        "cost": "cost to train",
    }.get(objective, objective)


def profile_line(result: TrainingResult) -> str:
    """Profile name and which terms are uncalibrated or extrapolated."""
    profile = result.profile
    parts = []
    if profile.calibrated:
        measured = [t for t in TERMS if t not in profile.uncalibrated_terms]
        parts.append("measured: " + ", ".join(measured))
    if profile.fitted_on.startswith(CITED):  # default curves scaled to published kernel rates
        parts.append(f"scaled to {profile.fitted_on.removeprefix(CITED)}")
    elif profile.fitted_on:
        parts.append(f"calibrated on {profile.fitted_on}")
    if profile.uncalibrated_terms:
        parts.append("uncalibrated: " + ", ".join(profile.uncalibrated_terms))
    if profile.extrapolated_terms:
        parts.append("extrapolated: " + ", ".join(profile.extrapolated_terms))
    return f"{profile.name} ({'; '.join(parts)})"


def plans_table(result: TrainingResult, context: TrainContext) -> Table:
    """The ranked plans, one row each; the columns follow the objective."""
    return ranked_table(result.plans, plan_columns(result, context), LEFT)


def ranked_table(plans: Iterable, columns: dict[str, Callable], left: set[str]) -> Table:
    """One row per plan, a column per ``columns`` entry (name -> cell text of a plan); the
    ``left`` columns read left to right, the numbers align right (train and serve tables)."""
    table = Table(box=PLAIN, pad_edge=False, show_edge=False, collapse_padding=True)
    for name in columns:
        table.add_column(name, justify="left" if name in left else "right", no_wrap=True)
    for plan in plans:
        table.add_row(*(cell(plan) for cell in columns.values()))
    return table


#: Columns whose text reads left to right.
LEFT = {"#", "layout", "recompute"}


def plan_columns(result: TrainingResult, context: TrainContext) -> dict[str, Callable]:
    """Column name -> cell text of a plan. time-to-train and cost replace the step time (and
    tokens/s) with days and dollars, so the table stays within 100 columns."""
    columns: dict[str, Callable[[Plan], str]] = {
        "#": lambda plan: f"{plan.rank}{NEAR_TIE if plan.near_tie else ''}",
        "layout": lambda plan: layout(plan.parallel),
    }
    if result.objective != "throughput" or any(p.num_gpus != result.num_gpus for p in result.plans):
        columns[device_word(context.cluster)] = lambda plan: f"{plan.num_gpus:,}"
    columns["recompute"] = lambda plan: recompute_label(plan.parallel)
    tokens, price = context.train_tokens, context.gpu_hour_cost
    if result.objective == "throughput" or tokens is None:
        columns["step"] = lambda plan: duration(plan.estimate.step_time_s)
    else:
        columns["days"] = lambda plan: f"{tokens / plan.estimate.tokens_per_s / 86400:,.1f}"
    if result.objective == "cost" and tokens is not None and price is not None:
        columns["cost"] = lambda plan: dollars(
            tokens / plan.estimate.tokens_per_s / 3600 * plan.num_gpus * price
        )
    else:
        columns["tok/s/GPU"] = lambda plan: f"{plan.estimate.tokens_per_s_per_gpu:,.0f}"
    if price is not None:  # cost under every objective once a GPU-hour price is known
        columns["$/Mtok"] = lambda plan: f"{dollars_per_million_tokens(plan, price):,.3f}"
    columns["MFU"] = lambda plan: percent(plan.estimate.mfu)  # of the bf16 peak
    if context.job.precision == "fp8":
        columns["MFU fp8"] = lambda plan: percent(plan.estimate.mfu_fp8 or 0.0)
    columns["memory"] = lambda plan: gib(plan.estimate.memory.total_bytes)
    return columns


def dollars_per_million_tokens(plan: Plan, gpu_hour_cost: float) -> float:
    """Dollars per million trained tokens: GPU-hours per token x price."""
    return plan.num_gpus * gpu_hour_cost / 3600.0 / plan.estimate.tokens_per_s * 1e6


def memory_table(memory: MemoryBreakdown, context: TrainContext, *, terms: bool) -> Table:
    """Per-GPU memory on the worst stage as a named sum (and its finer terms)."""
    table = Table(
        title=f"worst-stage memory per {device_word(context.cluster)[:-1]}",
        title_justify="left", box=PLAIN, show_edge=False, pad_edge=False,
    )
    table.add_column("term")
    table.add_column("GiB", justify="right")
    table.add_column("share", justify="right")
    rows = [
        ("weights", memory.weights_bytes),
        ("gradients", memory.gradients_bytes),
        ("optimizer", memory.optimizer_bytes),
        ("activations", memory.activations_bytes),
        ("other", memory.other_bytes),
    ]
    if terms:  # the finer terms that make up "other" (the four above are already shown)
        names = {name for name, _ in rows}
        rows += [
            (f"  {short}", value)
            for short, value in ((n.removesuffix("_bytes"), v) for n, v in memory.terms.items())
            if short not in names
        ]
    total = memory.total_bytes or 1.0
    for name, value in rows:
        table.add_row(name, f"{value / GIB:,.1f}", percent(value / total))
    table.add_row("total", f"{memory.total_bytes / GIB:,.1f}", "", style="bold")
    table.add_row("usable", f"{usable_bytes(context) / GIB:,.1f}", "")
    return table


def step_table(estimate: Estimate, *, zeros: bool) -> Table:
    """Step time as a named sum of terms, in ms and as a share of the step (zero terms with
    ``zeros`` only)."""
    table = Table(
        title=f"step time ({duration(estimate.step_time_s)})",
        title_justify="left", box=PLAIN, show_edge=False, pad_edge=False,
    )
    table.add_column("term")
    table.add_column("ms", justify="right")
    table.add_column("share", justify="right")
    total = estimate.step_time_s or 1.0
    for name, seconds in estimate.breakdown.items():
        if seconds == 0 and not zeros:
            continue
        table.add_row(name, f"{seconds * 1e3:,.1f}", percent(seconds / total))
    table.add_row("total", f"{estimate.step_time_s * 1e3:,.1f}", "", style="bold")
    # communication that overlap hides: shown, but not part of the step
    for name, seconds in estimate.overlapped.items():
        table.add_row(f"{name} overlapped", f"({seconds * 1e3:,.1f})", "hidden")
    return table


def breakdowns(plan: Plan, context: TrainContext, *, explain: bool) -> Table:
    """Memory and step-time tables side by side."""
    grid = Table.grid(padding=(0, 4))
    grid.add_column(vertical="top")
    grid.add_column(vertical="top")
    grid.add_row(
        memory_table(plan.estimate.memory, context, terms=explain),
        step_table(plan.estimate, zeros=explain),
    )
    return grid


def stage_line(memory: MemoryBreakdown) -> str:
    """Totals of every pipeline stage, or '' when the cost model gave none."""
    totals = [stage.get("total_bytes") for stage in memory.per_stage]
    if not totals or any(total is None for total in totals):
        return ""
    return "per stage: " + ", ".join(f"{total / GIB:,.1f}" for total in totals) + " GiB"


def plan_detail(plan: Plan, context: TrainContext, context_gpus: int, *, explain: bool) -> Group:
    """One plan's heading, breakdowns, per-stage memory and the reason it ranks there."""
    estimate = plan.estimate
    title = Text(f"#{plan.rank} {layout(plan.parallel)}", style="bold")
    recompute = recompute_detail(plan.parallel, context.job)
    title.append(": no recompute, " if recompute == "none" else f": {recompute} recompute, ")
    if plan.parallel.pp > 1:
        title.append(f"{plan.parallel.schedule} schedule, ")
        split = plan.parallel.stage_layers
        if split and split != balanced_stage_layers(sum(split), plan.parallel.pp):
            title.append(f"stages {runs_text(plan.parallel.stage_layers)}, ")
    if plan.num_gpus != context_gpus:
        title.append(f"{plan.num_gpus:,} {device_word(context.cluster)}, ")
    title.append(f"HFU {percent(estimate.hfu)}")
    parts: list = [title, breakdowns(plan, context, explain=explain)]
    stages = stage_line(estimate.memory) if explain else ""
    if stages:
        parts.append(Text(stages))
    if plan.why and explain:
        parts.append(Text(f"why: {plan.why}"))
    if estimate.extrapolated_terms and explain:
        parts.append(Text("extrapolated beyond the profile's measurements: "
                          + ", ".join(estimate.extrapolated_terms)))
    return Group(*parts)


def notes_section(notes: Iterable[str]) -> Group:
    """The planner's notes (assumptions, resolutions) as a list."""
    return Group(Text("notes", style="bold"), *(Text(f"- {note}") for note in notes))


def print_training(
    console: Console, result: TrainingResult, context: TrainContext, *, explain: bool = False
) -> None:
    """Everything `sysplan train` shows on stdout, in reading order."""
    blocks: list = [header(result, context), "", plans_table(result, context)]
    if any(plan.near_tie for plan in result.plans):
        blocks.append(Text(f"{NEAR_TIE} near tie: within 2 % of the best plan"))
    for plan in result.plans[:1]:
        blocks += ["", plan_detail(plan, context, result.num_gpus, explain=explain)]
    if result.explanation:
        blocks += ["", Text(result.explanation)]
    if result.sequence_mix:
        blocks += ["", Text(sequence_mix_line(result.sequence_mix))]
    for plan in result.plans[1:] if explain else ():
        blocks += ["", plan_detail(plan, context, result.num_gpus, explain=explain)]
    if explain and result.notes:
        blocks += ["", notes_section(result.notes)]
    emit(console, *blocks)


def sequence_mix_line(mix: dict) -> str:
    """One paragraph: what mixed CP groups make of a sampled step of --lengths data."""
    lengths = mix["lengths"]
    groups = sorted({g["degree"] for g in mix["groups"]}, reverse=True)
    text = (f"Variable-length data ({mix['source']}): a sampled step of {len(lengths):,} "
            f"sequences ({min(lengths):,}-{max(lengths):,} tokens) on the top plan's "
            f"{mix['ranks']} dp x cp ranks runs in {mix['step_time_s']:.2f} s with "
            f"{len(mix['groups'])} CP groups of degree {', '.join(map(str, groups))} "
            f"({mix['method']}, {mix['status']}, gap {mix['gap']:.1%})")
    if mix["uniform_step_time_s"] is not None:
        text += (f", against {mix['uniform_step_time_s']:.2f} s with uniform cp"
                 f"{mix['uniform_degree']}: {mix['speedup']:.2f}x")
    return text + " (sequence work only; --json lists the groups)."


#: Width results are laid out at off a terminal: wide enough that no paragraph or cell is
#: hard-wrapped mid-phrase (a pipe, a file or a log gets whole lines; tables keep their
#: natural width).
PIPE_WIDTH = 10_000


def emit(console: Console, *renderables: object) -> None:
    """Print ``renderables``; off a terminal as whole lines (no wrapping mid-phrase), without
    the trailing blanks rich pads lines with."""
    if console.is_terminal:
        console.print(*renderables, sep="\n")
        return
    width = console.width
    console.width = PIPE_WIDTH
    try:
        with console.capture() as captured:
            console.print(*renderables, sep="\n")
    finally:
        console.width = width
    lines = [line.rstrip() for line in captured.get().splitlines()]
    console.file.write("\n".join(lines) + "\n")
