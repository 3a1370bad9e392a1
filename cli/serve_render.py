"""Render a ServeResult for humans (the serving side of ``cli.render``): ms, GiB and dollars
appear only here.

Lines are laid out as ``cli.render`` lays out train's: label/value header lines short enough
not to wrap, an ASCII table with no vertical rules, the "why" paragraph under it, and with
``--explain`` every deployment's knobs, memory and latency percentiles and the notes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from sysplan.cli.render import PLAIN, emit, gib, notes_section, ranked_table
from sysplan.planners.serving.types import ServePlan, ServeResult

#: Metrics of the latency table, in order, with the words a reader sees.
LATENCIES = (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2e", "E2E"),
             ("queue", "queue"))


def ms(value: float | None) -> str:
    """Seconds as whole milliseconds ('-' for no value)."""
    return "-" if value is None or math.isnan(value) else f"{value * 1e3:,.0f}"


def short(d) -> str:
    """'tp8 x2', or 'P tp2x4 + D tp2x2' for prefill and decode pools."""
    if d.disaggregated:
        return (f"P tp{d.prefill.tp}x{d.prefill_replicas} + "
                f"D tp{d.decode.tp}x{d.decode_replicas}")
    return f"tp{d.replica.tp}" + (f" pp{d.replica.pp}" if d.replica.pp > 1 else "") + \
        f" x{d.replicas}"


def header(result: ServeResult, gpu_cost: float | None) -> Table:
    """Label/value lines: model, cluster, workload, SLO, search (and price)."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    grid.add_row("model", result.model)
    grid.add_row("cluster", f"{result.cluster}, up to {result.max_gpus} GPUs; engine "
                 f"{result.engine}")
    grid.add_row("workload", workload_line(result.workload))
    grid.add_row("SLO", ", ".join(result.slos) or "none")
    grid.add_row("search", f"{_count(result.searched, 'deployment')}, "
                 f"{_count(result.simulated, 'simulation')} in {result.search_time_s:.1f} s")
    if gpu_cost is not None:
        grid.add_row("cost", f"${gpu_cost:,.2f} per GPU-hour")
    if result.accuracy:
        grid.add_row("accuracy", result.accuracy)
    return grid


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def workload_line(workload: dict) -> str:
    """'input 4000, output 500 tokens; 4 requests/s poisson; 2,000 requests'."""
    if workload.get("trace"):
        lengths = f"trace {workload['trace']}"
    else:
        lengths = f"input {workload.get('isl')}, output {workload.get('osl')} tokens"
    rate = workload.get("rate")
    if workload.get("concurrency"):
        load = f"{workload['concurrency']} in flight (closed loop)"
    elif rate is None:
        load = "highest rate within the SLO"
    elif isinstance(rate, str) or not math.isfinite(rate):
        load = "offline (all queued at once)"
    else:
        load = f"{rate:g} requests/s {workload.get('arrival', '')}".rstrip()
    return f"{lengths}; {load}; {workload.get('num_requests', 0):,} requests"


def plans_table(result: ServeResult, gpu_cost: float | None) -> Table:
    """The ranked deployments, one row each; dollars with a GPU-hour price."""
    return ranked_table(result.plans, plan_columns(gpu_cost), LEFT)


#: Columns whose text reads left to right.
LEFT = {"#", "deployment", "w/kv"}


def plan_columns(gpu_cost: float | None) -> dict[str, Callable[[ServePlan], str]]:
    """Column name -> cell text (two-line names keep the table within 100 columns)."""
    def lay(plan):
        d = plan.deployment
        return d.decode if d.disaggregated else d.replica

    def rate(plan):
        value = plan.max_rate_rps or plan.rate_rps
        return "-" if value is None else f"{value:.2f}"

    columns: dict[str, Callable[[ServePlan], str]] = {
        "#": lambda p: f"{p.rank}{_flag(p)}",
        "GPUs": lambda p: str(p.num_gpus),
        "deployment": lambda p: short(p.deployment),
        "w/kv": lambda p: f"{lay(p).weights_precision}/{lay(p).kv_precision}",
        "rate\nreq/s": rate,
        "TTFT\np90 ms": lambda p: ms(p.summary["ttft_s"]["p90"]),
        "TTFT\np99 ms": lambda p: ms(p.summary["ttft_s"]["p99"]),
        "TPOT\np90 ms": lambda p: ms(p.summary["tpot_s"]["p90"]),
        "ITL\np99 ms": lambda p: ms(p.summary["itl_s"]["p99"]),
        "goodput\nreq/s": lambda p: f"{p.summary['goodput_rps']:.2f}",
        "tok/s\n/GPU": lambda p: f"{p.summary['output_tokens_per_s'] / p.num_gpus:,.0f}",
    }
    if gpu_cost is not None:  # cost under every objective once a GPU-hour price is known
        del columns["goodput\nreq/s"]  # room for the dollars (--explain and --json keep it)
        columns["$/hour"] = lambda p: _money(p.cost_per_hour, 2)
        columns["$/Mtok\noutput"] = lambda p: _money(p.dollars_per_million_output_tokens, 3)
    return columns


def _money(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _flag(plan: ServePlan) -> str:
    s = plan.summary
    return "" if s["meets_slo"] else ("!" if s["saturated"] else "*")


def knobs_line(plan: ServePlan) -> str:
    """The engine knobs of one plan, in one line."""
    knobs = plan.deployment.engine
    return (f"max_num_seqs {knobs.max_num_seqs}, max_num_batched_tokens "
            f"{knobs.max_num_batched_tokens}, gpu_memory_utilization "
            f"{knobs.gpu_memory_utilization:.2f}")


def kv_line(plan: ServePlan) -> str:
    """'KV cache 60.7 GiB/GPU (994,016 tokens per replica)'."""
    pool = "decode " if plan.deployment.disaggregated else ""
    return (f"KV cache {gib(plan.kv_cache_bytes_per_gpu)}/GPU "
            f"({plan.kv_tokens_per_replica:,} tokens per {pool}replica)")


def latency_table(plan: ServePlan) -> Table:
    """p50, p90 and p99 of each latency metric, in ms."""
    table = Table(title="latency (ms)", title_justify="left", box=PLAIN, show_edge=False,
                  pad_edge=False)
    table.add_column("metric")
    for name in ("p50", "p90", "p99"):
        table.add_column(name, justify="right")
    for key, label in LATENCIES:
        values = plan.summary[f"{key}_s"]
        table.add_row(label, *(ms(values[p]) for p in ("p50", "p90", "p99")))
    return table


def plan_detail(plan: ServePlan) -> Group:
    """One deployment: heading, knobs, memory, latency percentiles, SLO, cost, why."""
    d, s = plan.deployment, plan.summary
    kind = "disaggregated" if d.disaggregated else "aggregated"
    lay = d.decode if d.disaggregated else d.replica
    title = Text(f"#{plan.rank} {short(d)}: {kind}, {_count(plan.num_gpus, 'GPU')}, "
                 f"{lay.weights_precision} weights, {lay.kv_precision} KV, routing {d.routing}",
                 style="bold")
    lines = [Text(f"knobs: {knobs_line(plan)}"),
             Text(f"memory: weights {gib(plan.weight_bytes_per_gpu)}/GPU, {kv_line(plan)}")]
    rate = plan.max_rate_rps or plan.rate_rps
    load = f"at {rate:,.2f} requests/s: " if rate else ""
    lines.append(Text(f"{load}{s['output_tokens_per_s']:,.0f} output tokens/s, goodput "
                      f"{s['goodput_rps']:.2f} requests/s, SLO attainment "
                      f"{s['slo_attainment']:.1%}"
                      + ("" if s["meets_slo"] else ", misses the SLO")))
    if plan.cost_per_hour is not None:
        per_million = plan.dollars_per_million_output_tokens
        lines.append(Text(f"cost: ${plan.cost_per_hour:,.2f}/hour"
                          + (f", ${per_million:,.3f} per million output tokens"
                             if per_million is not None else "")))
    if plan.why:
        lines.append(Text(f"why: {plan.why}"))
    return Group(title, *lines, latency_table(plan))


def print_serving(console: Console, result: ServeResult, *, explain: bool = False,
                  gpu_cost: float | None = None) -> None:
    """Everything `sysplan serve` shows on stdout for one engine, in reading order."""
    blocks: list = [header(result, gpu_cost), "", plans_table(result, gpu_cost)]
    if any(not p.summary["meets_slo"] for p in result.plans):
        blocks.append(Text("* misses the SLO   ! saturated (the queue keeps growing)"))
    if result.plans and not explain:
        best = result.plans[0]
        blocks.append(Text(f"#1 knobs: {knobs_line(best)}"))
        blocks.append(Text(f"#1 {kv_line(best)}"))  # its tightest SLO: the paragraph
    if result.explanation:
        blocks += ["", Text(result.explanation)]
    for plan in result.plans if explain else ():
        blocks += ["", plan_detail(plan)]
    if explain and result.notes:
        blocks += ["", notes_section(result.notes)]
    emit(console, *blocks)
