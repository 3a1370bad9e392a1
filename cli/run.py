"""`sysplan run`: execute saved plans on this machine and report measured against predicted.

The tables go to stdout (or one JSON object with --json); notes go to stderr.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from sysplan.cli.output import Quiet
from sysplan.cli.render import percent
from sysplan.cli.serve import _non_negative_int
from sysplan.cli.train import _bounded_int, _choice, _gpu_count, _opt

HELP = """Run saved plans here with the reference executor and compare with the prediction.

Each PLAN is a `sysplan train --json` document (FILE, or FILE#RANK for another plan than the
best). By default a plan is scaled down: its tp, pp, vpp, cp, schedule, recompute and ZeRO stage
run on a tiny decoder shared by every plan, DP capped at --nproc processes. The same layout is
priced by the cost model on --cluster with --profile (default: the profile-cpu.yaml and
local-cpu.yaml that `sysplan profile --device cpu` writes in this folder; a quick sweep
measures them first when they are missing). Needs torch
(pip install -e '.[torch]'); gloo on a CPU, NCCL with one GPU per rank.

Example: sysplan run plans.json#1 plans.json#2 plans.json#3 --compare --nproc 4
"""


_Plans = Annotated[list[str], typer.Argument(
    metavar="PLAN", help="sysplan train --json documents; FILE#N picks the plan of rank N.",
    show_default=False)]
_Nproc = Annotated[int, _opt(
    "--nproc", metavar="N", parser=_gpu_count,
    help="Processes a plan may use (DP is capped to fit when scaling down).")]
_Scale = Annotated[bool, _opt(
    "--scale-down/--as-written",
    help="Run a tiny decoder keeping the layout (default), or the plan's own model sizes and "
    "DP degree.")]
_Steps = Annotated[int, _opt("--steps", metavar="N", parser=_bounded_int(1_000_000),
                             help="Training steps per plan.")]
_Warmup = Annotated[int, _opt(
    "--warmup", metavar="N", parser=_non_negative_int,
    help="Steps left out of the timing.")]
_Profile = Annotated[str | None, _opt(
    "--profile", metavar="FILE|NAME",
    help="Profile pricing the prediction (default: profile-cpu.yaml here on a CPU).")]
_Cluster = Annotated[str | None, _opt(
    "--cluster", metavar="NAME|PATH",
    help="Cluster the prediction is priced on (default: local-cpu.yaml beside the profile).")]
_Backend = Annotated[str, _opt(
    "--backend", metavar="[auto|gloo|nccl]", parser=_choice("auto", "gloo", "nccl"),
    help="torch.distributed backend: auto is NCCL when there is a GPU per rank.")]
_Compare = Annotated[bool, _opt(
    "--compare", help="Rank the plans by measured and by predicted step time and say whether "
    "the rankings agree (needs two plans or more).")]
_Json = Annotated[bool, _opt("--json", help="Write one JSON object to stdout instead of tables.")]
_Plot = Annotated[str | None, _opt(
    "--plot", metavar="DIR", help="Write a picture of measured against predicted seconds per "
    "term as PNG and SVG into DIR, and draw it as text (needs the plot extra).")]


def run(
    plans: _Plans,
    nproc: _Nproc = 4,
    scale_down: _Scale = True,
    steps: _Steps = 20,
    warmup: _Warmup = 3,
    profile: _Profile = None,
    cluster: _Cluster = None,
    backend: _Backend = "auto",
    compare: _Compare = False,
    json_out: _Json = False,
    plot: _Plot = None,
    quiet: Quiet = False,
) -> None:
    """Run saved plans here and compare with the prediction."""
    from sysplan.core.errors import InputError

    if compare and len(plans) < 2:
        raise InputError(f"--compare with {len(plans)} plan: accepted is two plans or more")
    if warmup >= steps:
        raise InputError(f"--warmup {warmup} with --steps {steps}: accepted is fewer warmup "
                         "steps than steps")
    from sysplan.cli import pictures

    plot_folder = pictures.check(plot)
    sources = [_load(text) for text in plans]
    cluster_spec, efficiency = _pricing(profile, cluster, nproc, quiet)
    try:
        from sysplan.executor.report import run_plans
    except ImportError as error:  # torch is the optional [torch] extra
        raise InputError(f"sysplan run needs torch ({error.name} is missing): "
                         "pip install -e '.[torch]'") from None
    err = Console(stderr=True, highlight=False, soft_wrap=True, quiet=quiet)
    report = run_plans(sources, nproc=nproc, scale=scale_down, steps=steps, warmup=warmup,
                       cluster=cluster_spec, efficiency=efficiency, backend=backend,
                       progress=lambda line: err.print(f"run: {line}", markup=False))
    out = Console(highlight=False, soft_wrap=True)
    if json_out:
        if plot_folder is not None:
            pictures.run(report_document(report), plot_folder, None, err)
        typer.echo(json.dumps(report_document(report), indent=2))
        return
    for run_ in report.runs:
        for note in run_.notes:
            err.print(f"note: {run_.name}: {note}", markup=False)
    out.print(f"measured here ({report.backend}, {report.steps} steps, median of the last "
              f"{report.steps - report.warmup}) against predicted on {report.cluster} with "
              f"{report.profile}; terms are seconds per step, mean over ranks\n", markup=False)
    for run_ in report.runs:
        out.print(plan_block(run_))
    if compare:
        verdict = "agree" if report.rankings_agree else "DISAGREE"
        out.print(f"ranking by step time: measured {' < '.join(report.measured_order)}; "
                  f"predicted {' < '.join(report.predicted_order)}: {verdict}", markup=False)
    if plot_folder is not None:
        pictures.run(report_document(report), plot_folder, out, err)


def _load(text: str):
    """(name, plan, model spec, job) of ``FILE`` or ``FILE#RANK``."""
    from sysplan.core.errors import InputError
    from sysplan.exporters import pick_plan, request_for
    from sysplan.exporters.plan_json import load_plan_json

    path, _, rank_text = text.partition("#")
    if rank_text and not (rank_text.isascii() and rank_text.isdigit()):
        raise InputError(f"{text}: accepted is FILE or FILE#RANK with a whole-number rank")
    result = load_plan_json(path)
    rank = int(rank_text) if rank_text else None
    plan = pick_plan(result, rank, path)
    _check_known_fields(path, plan.rank)
    request = request_for(result, plan, path)
    return f"{Path(path).name}#{plan.rank}", plan, request.model, request.job


def _check_known_fields(path: str, rank: int) -> None:
    """A layout field this sysplan does not know is a feature the executor cannot run (the
    plan reader drops unknown keys, which is right for exporting, not for executing)."""
    from sysplan.core.errors import InputError
    from sysplan.costmodels.types import ParallelConfig

    document = json.loads(Path(path).read_text(encoding="utf-8"))
    for entry in document.get("plans", []):
        if entry.get("rank") == rank:
            unknown = sorted(set(entry.get("parallel", {})) - set(ParallelConfig.model_fields))
            if unknown:
                raise InputError(f"{path}#{rank}: parallel field(s) {', '.join(unknown)} "
                                 f"unknown to the executor: accepted are "
                                 f"{', '.join(ParallelConfig.model_fields)}")


def _measure_quick_profile(nproc: int, quiet: bool = False) -> None:
    """Measure profile-cpu.yaml and local-cpu.yaml here (a quick sweep, about a minute)."""
    from sysplan.cli.profile import measure_and_write
    from sysplan.core.errors import InputError

    if Path("local-cpu.yaml").exists():  # never replaced silently (sysplan profile --force)
        raise InputError("--profile not given and no profile-cpu.yaml here, but local-cpu.yaml "
                         "is: accepted: --profile FILE with --cluster, or `sysplan profile "
                         "--device cpu --quick --force` to measure both anew")
    err = Console(stderr=True, highlight=False, soft_wrap=True, quiet=quiet)
    err.print("note: no --profile and no profile-cpu.yaml here: measuring a quick one first "
              f"(sysplan profile --device cpu --quick --world {max(2, nproc)}); it is kept "
              "here for the next run", markup=False)
    try:
        written = measure_and_write(err, device="cpu", quick=True, world=max(2, nproc))
    except ImportError as error:  # torch is the optional [torch] extra
        raise InputError(f"sysplan run needs torch ({error.name} is missing): "
                         "pip install -e '.[torch]'") from None
    if written is not None:
        err.print(f"note: wrote {written[1]} and {written[2]}", markup=False)


def _pricing(profile: str | None, cluster: str | None, nproc: int, quiet: bool = False):
    """The cluster and efficiency the predictions use; one-line errors when missing. Without
    --profile and --cluster and with no profile-cpu.yaml here, a quick CPU profile is measured
    first (and kept here for the next run), as `sysplan profile --device cpu --quick` would."""
    from sysplan.core.errors import InputError
    from sysplan.costmodels.efficiency import Efficiency
    from sysplan.hardware import load_cluster
    from sysplan.profiles.loader import check_gpu, load_profile

    if profile is None:
        if not Path("profile-cpu.yaml").is_file():
            if cluster is not None:
                raise InputError("--profile not given and no profile-cpu.yaml here: accepted "
                                 "is a profile file or name measured on --cluster's GPUs")
            _measure_quick_profile(nproc, quiet)
        profile = "profile-cpu.yaml"
    measured = load_profile(profile)
    if cluster is None:
        beside = Path(profile).with_name("local-cpu.yaml")
        if not beside.is_file():
            raise InputError(f"--cluster not given and no local-cpu.yaml beside {profile}: "
                             "accepted is a cluster name or file")
        cluster = str(beside)
    spec, _ = load_cluster(cluster)
    check_gpu(measured, spec.gpu, profile)
    return spec, Efficiency.from_profile(measured, spec)


def plan_block(r) -> Group:
    """One plan: what ran, step time and memory measured against predicted, and its terms."""
    m = r.measured
    lines = [
        Text(f"{r.name}: ran as {_ran_as(r)} (plan: {r.source_layout})", style="bold"),
        Text(f"  step   measured {1e3 * m.median_step_s:,.1f} ms (p10-p90 "
             f"{1e3 * m.p10_step_s:,.1f}-{1e3 * m.p90_step_s:,.1f})  predicted "
             f"{1e3 * r.predicted_step_s:,.1f} ms  error {r.step_error:+.0%}"),
        Text(f"  tok/s  measured {m.tokens_per_s:,.0f}  predicted "
             f"{r.predicted_tokens_per_s:,.0f};  peak memory measured "
             f"{max(m.peak_memory_bytes) / 2**20:,.0f} MiB  predicted "
             f"{r.predicted_memory_bytes / 2**20:,.0f} MiB"),
    ]
    table = Table(box=None, pad_edge=False)
    for name in ("  term", "predicted", "measured", "error"):
        table.add_column(name, justify="left" if name == "  term" else "right")
    for term in r.terms:
        error = (percent(term.predicted_s / term.measured_s - 1.0) if term.measured_s > 0
                 else "-")
        table.add_row(f"  {term.name}", f"{1e3 * term.predicted_s:,.2f} ms",
                      f"{1e3 * term.measured_s:,.2f} ms", error)
    return Group(*lines, table, Text(""))


def _ran_as(r) -> str:
    lay = r.layout
    parts = [f"tp{lay.tp}", f"pp{lay.pp}"] + ([f"vpp{lay.vpp}"] if lay.vpp > 1 else [])
    parts += [f"dp{lay.dp}"] + ([f"cp{lay.cp}"] if lay.cp > 1 else [])
    parts += ["sp"] if lay.sequence_parallel else []
    return " ".join([*parts, f"zero{lay.zero}", lay.recompute])


def report_document(report) -> dict:
    """The report as JSON (SI units)."""
    return {
        "backend": report.backend, "cluster": report.cluster, "profile": report.profile,
        "steps": report.steps, "warmup": report.warmup,
        "measured_order": list(report.measured_order),
        "predicted_order": list(report.predicted_order),
        "rankings_agree": report.rankings_agree,
        "runs": [{**r.model_dump(mode="json", exclude={"measured"}),
                  "measured": r.measured.model_dump(mode="json"),
                  "step_error": r.step_error} for r in report.runs],
    }
