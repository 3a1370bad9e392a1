"""The work behind `sysplan serve`: build the question, plan per engine, export, render."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console

from sysplan.cli.output import print_notes, search_progress, stderr_console
from sysplan.core.errors import InputError
from sysplan.core.units import ascii_float
from sysplan.exporters.serve_json import document, export_request, result_document
from sysplan.planners.serving.types import ServePins, ServeResult

ENGINES = ("vllm", "sglang", "trtllm")
#: What --export accepts: the engines' launch files, and the serve document itself.
EXPORT_TARGETS = (*ENGINES, "json")
__all__ = ["ENGINES", "document", "export_request", "render", "result_document", "run"]


def _rate(text: str | None) -> float | None:
    if text is None:
        return None
    if text.strip().lower() == "inf":
        return math.inf
    try:
        value = ascii_float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1e9:  # 1e400 reads as inf: only the word inf means offline
        raise InputError(f"--rate {text}: expected requests per second above 0 and at most "
                         "1e9 (e.g. 4.5), or inf")
    return value


def _typed(name: str) -> bool:
    """Whether option ``name`` (its parameter name) was given on the command line or in the
    environment, not left at its default (False outside a click command)."""
    import importlib

    import typer

    click = importlib.import_module(typer.BadParameter.__module__.rsplit(".", 1)[0] + ".globals")
    ctx = click.get_current_context(silent=True)
    source = ctx.get_parameter_source(name) if ctx is not None else None
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


#: Pins of a disaggregated pool (they contradict an aggregated-only search).
POOL_PINS = ("prefill_tp", "prefill_replicas", "decode_tp", "decode_replicas")


def check_options(*, trace, pins, storage) -> None:
    """Options that contradict each other, and a --storage that cannot be opened: InputError
    before any model, cluster or simulation."""
    if trace is not None:
        for name in ("isl", "osl"):
            if _typed(name):
                raise InputError(f"--trace {trace} with --{name}: the trace gives every "
                                 f"request's lengths; drop --{name} (or --trace)")
    pool = [f"--{n.replace('_', '-')} {pins[n]}" for n in POOL_PINS if pins.get(n) is not None]
    if pool and pins.get("disagg") is not True:
        off = "--no-disagg" if pins.get("disagg") is False else "no --disagg"
        raise InputError(f"{pool[0]}: pins a disaggregated prefill/decode pool, but {off} was "
                         "given; add --disagg (or drop the pool options)")
    if storage is not None:
        from sysplan.planners.serving.tuning import storage_for

        storage_for(storage)


def _stated(spec) -> float:
    """The longest length a --isl/--osl spec states: its max=, fixed length or uniform HIGH,
    else (normal, lognormal: unbounded tails) its mean."""
    if spec.max_tokens is not None:
        return spec.max_tokens
    return spec.high_tokens if spec.kind == "uniform" else spec.mean_tokens


def check_context(workload, spec, isl: str, osl: str, trace: str | None) -> None:
    """InputError when a request (input plus output tokens) is longer than the model's
    context: such requests cannot be served (and took minutes to simulate)."""
    context = spec.max_seq_len
    if workload.trace is not None:
        from sysplan.workloads.serving import load_trace

        rows = load_trace(workload.trace)
        longest = int((rows.input_tokens + rows.output_tokens).max(initial=0))
        if longest > context:
            raise InputError(f"--trace {trace}: a request of {longest:,} tokens (input plus "
                             f"output) is longer than {spec.name}'s context; accepted: "
                             f"requests up to {context:,} tokens")
        return
    stated = _stated(workload.isl) + _stated(workload.osl)
    if stated > context:
        raise InputError(f"--isl {isl} --osl {osl}: requests of {stated:,.0f} tokens (input "
                         f"plus output) are longer than {spec.name}'s context; accepted: input "
                         f"plus output up to {context:,} tokens (e.g. add ,max=N to a "
                         "distribution)")


def run(*, model, cluster, gpus, isl, osl, trace, rate, arrival, concurrency, num_requests,
        slo, engine, top, trials, timeout, storage, routing, gpu_cost, pins, export,
        output, profile=None, latency_curve=False, quiet=False
        ) -> tuple[list[ServeResult], Any, Any]:
    """Plan for each engine asked; write the --export files of the first engine's best plan
    (and, with json, the whole document)."""
    check_options(trace=trace, pins=pins, storage=storage)
    from sysplan.hardware import load_cluster
    from sysplan.models import resolve_model
    from sysplan.planners.serving.progress import SearchProgress
    from sysplan.planners.serving.search import ServeQuestion, check_question, plan_serving
    from sysplan.workloads.serving import ServeWorkload
    from sysplan.workloads.slo import parse_slos

    err = stderr_console()
    engines = None if export is None else export_engines(export)
    spec, model_note = resolve_model(model)
    machine, cluster_notes = load_cluster(cluster)
    print_notes(err, (model_note, *cluster_notes), quiet)
    workload_fields: dict[str, Any] = {"arrival": arrival, "rate": _rate(rate),
                                       "concurrency": concurrency, "num_requests": num_requests}
    if trace:
        workload_fields |= {"trace": Path(trace), "arrival": "trace" if arrival == "poisson"
                            else arrival}
    else:
        workload_fields |= {"isl": isl, "osl": osl}
    workload = ServeWorkload(**workload_fields)
    check_context(workload, spec, isl, osl, trace)
    slos = parse_slos(slo)
    efficiency = serving_efficiency(profile, machine)
    results = []
    for name in (ENGINES if engine == "all" else (engine,)):
        counters = SearchProgress()
        question = ServeQuestion(
            model=spec, cluster=machine, workload=workload, slos=slos,
            max_gpus=gpus or machine.gpus_per_node, engine=name, pins=ServePins(**pins),
            gpu_hour_cost=gpu_cost, top=top, trials=trials, timeout_s=timeout, storage=storage,
            routing=routing, efficiency=efficiency, latency_curve=latency_curve,
            progress=counters)
        check_question(question)
        with search_progress(err, counters, f"serve {spec.name} on {name}", quiet):
            results.append(plan_serving(question))
    if engine == "all":  # said once, under the last engine's table
        last = results[-1]
        results[-1] = last.model_copy(update={"notes": (*last.notes, *engine_comparison())})
    if engines:
        _export(err, results, spec, machine, engines, Path(output))
    return results, spec, machine


def engine_comparison() -> tuple[str, ...]:
    """What --engine all compares: where the simulated engines differ and where not."""
    from sysplan.costmodels.serving.engines import DIFFERENCES, EQUAL

    return (*(f"engines differ in {d}" for d in DIFFERENCES), f"engines are equal in {EQUAL}")


def serving_efficiency(profile: str | None, machine):
    """--profile as an Efficiency: None keeps the cluster's own (bundled or same-die profile,
    else curves), "none" the datasheet curves, else the profile file or bundled name."""
    from sysplan.costmodels.efficiency import Efficiency

    if profile is None:
        return None
    if profile == "none":
        return Efficiency.default(machine)
    from sysplan.profiles.loader import check_gpu, load_profile

    measured = load_profile(profile)
    check_gpu(measured, machine.gpu, profile)
    return Efficiency.from_profile(measured, machine)


def export_engines(text: str) -> list[str]:
    """``--export vllm,json`` as names, in order, without repeats; InputError when a name is
    unknown or none is given (``--export ,``)."""
    from sysplan.exporters import parse_names

    return parse_names(text, "--export", EXPORT_TARGETS)


def _export(err: Console, results: list[ServeResult], spec, machine, names: list[str],
            folder: Path) -> None:
    """The first engine's best plan as each engine's launch files, and ``json``: the serve
    document (every engine and plan, so ``sysplan export --rank`` can pick another)."""
    from sysplan.exporters.base import ExportFile, json_text, write_files
    from sysplan.exporters.serving import serve_files

    result = results[0]
    request = export_request(result.plans[0], spec, machine, result)
    files = serve_files(request, [n for n in names if n != "json"])
    if "json" in names:
        files.append(ExportFile("serve.json", json_text(document(results, spec, machine))))
    for path in write_files(files, folder):
        err.print(f"wrote {path}", markup=False)


def render(results: list[ServeResult], *, explain: bool = False,
           gpu_cost: float | None = None, quiet: bool = False) -> None:
    """The tables and paragraphs (``serve_render``) on stdout; the notes on stderr."""
    from sysplan.cli.render import stdout_console
    from sysplan.cli.serve_render import print_serving

    err = stderr_console()
    for result in results:
        print_serving(stdout_console(), result, explain=explain, gpu_cost=gpu_cost)
        if not explain:
            print_notes(err, result.notes, quiet)
