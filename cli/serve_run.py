"""The work behind `sysplan serve`: build the question, plan per engine, export, render."""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sysplan.cli.render import stdout_console
from sysplan.core.errors import InputError
from sysplan.core.units import ascii_float
from sysplan.core.version import __version__
from sysplan.planners.serving.types import ServePins, ServePlan, ServeResult

ENGINES = ("vllm", "sglang", "trtllm")
SCHEMA_VERSION = "1.0"


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
        output, profile=None, latency_curve=False) -> tuple[list[ServeResult], Any, Any]:
    """Plan for each engine asked; write the --export files of the first engine's best plan."""
    check_options(trace=trace, pins=pins, storage=storage)
    from sysplan.hardware import load_cluster
    from sysplan.models import resolve_model
    from sysplan.planners.serving.search import ServeQuestion, check_question, plan_serving
    from sysplan.workloads.serving import ServeWorkload
    from sysplan.workloads.slo import parse_slos

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    engines = None if export is None else export_engines(export)
    spec, model_note = resolve_model(model)
    machine, cluster_notes = load_cluster(cluster)
    for note in (model_note, *cluster_notes):
        if note:
            err.print(f"note: {note}", markup=False)
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
        question = ServeQuestion(
            model=spec, cluster=machine, workload=workload, slos=slos,
            max_gpus=gpus or machine.gpus_per_node, engine=name, pins=ServePins(**pins),
            gpu_hour_cost=gpu_cost, top=top, trials=trials, timeout_s=timeout, storage=storage,
            routing=routing, efficiency=efficiency, latency_curve=latency_curve)
        check_question(question)
        status = (err.status(f"simulating deployments of {spec.name} on {name} ...")
                  if err.is_terminal else nullcontext())
        with status:
            results.append(plan_serving(question))
    if engine == "all":  # said once, under the last engine's table
        last = results[-1]
        results[-1] = last.model_copy(update={"notes": (*last.notes, *engine_comparison())})
    if engines:
        _export(err, results[0], spec, machine, engines, Path(output))
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
    """``--export vllm,sglang`` as engine names, in order, without repeats; InputError when a
    name is unknown or none is given (``--export ,``)."""
    from sysplan.exporters import parse_names
    from sysplan.exporters.serving import SERVE_EXPORTERS

    return parse_names(text, "--export", SERVE_EXPORTERS)


def _export(err: Console, result: ServeResult, spec, machine, names: list[str],
            folder: Path) -> None:
    from sysplan.costmodels.serving.cost import ServingCost
    from sysplan.exporters.base import write_files
    from sysplan.exporters.serving import serve_files

    plan = result.plans[0]
    request = export_request(plan, spec, machine, ServingCost(spec, machine), result)
    for path in write_files(serve_files(request, names), folder):
        err.print(f"wrote {path}", markup=False)


def export_request(plan: ServePlan, spec, machine, cost, result: ServeResult):
    """The exporters' view of one plan."""
    from sysplan.exporters.serving import ServeExportRequest

    summary = plan.summary
    predicted = {"ttft_p90_s": summary["ttft_s"]["p90"], "tpot_p90_s": summary["tpot_s"]["p90"],
                 "output_tokens_per_s": summary["output_tokens_per_s"]}
    if plan.max_rate_rps:
        predicted["max_rate_rps"] = plan.max_rate_rps
    workload = result.workload
    longest = int(workload.get("max_len") or 0) or spec.max_seq_len
    return ServeExportRequest(
        deployment=plan.deployment, model=spec, cluster=machine,
        kv_cache_bytes_per_gpu=plan.kv_cache_bytes_per_gpu,
        weight_bytes_per_gpu=plan.weight_bytes_per_gpu,
        max_model_len=min(spec.max_seq_len, longest), predicted=predicted)


# --- JSON --------------------------------------------------------------------------------------


def plan_exports(plan: ServePlan, result: ServeResult, spec, machine, cost) -> dict[str, Any]:
    """Per engine, the launch script the plan exports to, or why the engine refuses it."""
    from sysplan.exporters.serving import SERVE_EXPORTERS

    request = export_request(plan, spec, machine, cost, result)
    exports: dict[str, Any] = {}
    for name, exporter in SERVE_EXPORTERS.items():
        try:
            files = exporter(request)
            exports[name] = {"files": {f.path: f.content for f in files}}
        except InputError as error:
            exports[name] = {"error": str(error)}
    return exports


def document(results: list[ServeResult], spec, machine) -> dict[str, Any]:
    """{"schema_version", "sysplan_version", "results": [one per engine]}."""
    from sysplan.costmodels.serving.cost import ServingCost

    cost = ServingCost(spec, machine)
    return {"schema_version": SCHEMA_VERSION, "sysplan_version": __version__,
            "results": [result_document(r, lambda p, r=r: plan_exports(p, r, spec, machine,
                                                                        cost))
                        for r in results]}


def result_document(result: ServeResult, exports=None) -> dict[str, Any]:
    """One engine's answer: the question, the search, and the ranked plans (SI units)."""
    return {
        "schema_version": SCHEMA_VERSION, "sysplan_version": __version__,
        "model": result.model, "cluster": result.cluster, "engine": result.engine,
        "max_gpus": result.max_gpus, "workload": result.workload, "slos": list(result.slos),
        "searched": result.searched, "simulated": result.simulated,
        "search_time_s": result.search_time_s, "deterministic": result.deterministic,
        "notes": list(result.notes),
        "plans": [{**plan_document(p), **({"exports": exports(p)} if exports else {})}
                  for p in result.plans],
        "slo_bounds": _slo_bounds(result),
        "explored": [dict(point) for point in result.explored],
        "latency_curve": [dict(row) for row in result.latency_curve],
    }


def _slo_bounds(result: ServeResult) -> list[dict[str, Any]]:
    """The SLOs as numbers: metric, percentile, bound_s (for the pictures' SLO lines)."""
    from sysplan.workloads.slo import parse_slos

    return [{"metric": s.metric, "percentile": s.percentile, "bound_s": s.bound_s}
            for s in parse_slos(list(result.slos))]


def plan_document(plan: ServePlan) -> dict[str, Any]:
    d, s = plan.deployment, plan.summary
    layout = d.decode if d.disaggregated else d.replica

    def pool(lay, n):
        return {"tp": lay.tp, "pp": lay.pp, "replicas": n} if lay is not None else None

    return {
        "rank": plan.rank, "gpus": plan.num_gpus,
        "layout": {"tp": None if d.disaggregated else d.replica.tp,
                   "pp": None if d.disaggregated else d.replica.pp,
                   "replicas": None if d.disaggregated else d.replicas,
                   "disaggregated": d.disaggregated,
                   "prefill": pool(d.prefill, d.prefill_replicas) if d.disaggregated else None,
                   "decode": pool(d.decode, d.decode_replicas) if d.disaggregated else None},
        "precision": {"weights": layout.weights_precision, "kv": layout.kv_precision},
        "engine": {"name": d.engine.engine, "max_num_seqs": d.engine.max_num_seqs,
                   "max_num_batched_tokens": d.engine.max_num_batched_tokens,
                   "gpu_memory_utilization": d.engine.gpu_memory_utilization,
                   "kv_cache_bytes_per_gpu": plan.kv_cache_bytes_per_gpu,
                   "kv_tokens_per_replica": plan.kv_tokens_per_replica},
        "routing": d.routing, "max_rate_rps": plan.max_rate_rps, "rate_rps": plan.rate_rps,
        "output_tokens_per_s": s["output_tokens_per_s"],
        "output_tokens_per_s_per_gpu": s["output_tokens_per_s"] / plan.num_gpus,
        "latency_s": {k: s[f"{k}_s"] for k in ("ttft", "tpot", "itl", "e2e", "queue")},
        "slo_attainment": s["slo_attainment"], "goodput_rps": s["goodput_rps"],
        "meets_slo": s["meets_slo"], "saturated": s["saturated"],
        "cost_per_hour": plan.cost_per_hour, "why": plan.why,
    }


# --- tables ------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value * 1e3:,.0f}"


def _short(d) -> str:
    """'tp8 x2', or 'P tp2x4 + D tp2x2' for prefill and decode pools."""
    if d.disaggregated:
        return (f"P tp{d.prefill.tp}x{d.prefill_replicas} + "
                f"D tp{d.decode.tp}x{d.decode_replicas}")
    return f"tp{d.replica.tp}" + (f" pp{d.replica.pp}" if d.replica.pp > 1 else "") + \
        f" x{d.replicas}"


def render(results: list[ServeResult]) -> None:
    """One table per engine, best deployment first; latencies in ms."""
    console = stdout_console()
    for result in results:
        console.print(f"{result.model} on {result.cluster} (up to {result.max_gpus} GPUs), "
                      f"engine {result.engine}; SLO {', '.join(result.slos) or 'none'}; "
                      f"{result.searched} deployments, {result.simulated} simulations in "
                      f"{result.search_time_s:.1f} s", markup=False, highlight=False)
        table = Table("#", "GPUs", "deployment", "w/kv", "rate/s", "TTFT p90", "TTFT p99",
                      "TPOT p90", "ITL p99", "goodput/s", "tok/s/GPU", box=None, pad_edge=False)
        for plan in result.plans:
            d, s = plan.deployment, plan.summary
            lay = d.decode if d.disaggregated else d.replica
            rate = plan.max_rate_rps or plan.rate_rps
            flag = "" if s["meets_slo"] else ("!" if s["saturated"] else "*")
            table.add_row(f"{plan.rank}{flag}", str(plan.num_gpus), _short(d),
                          f"{lay.weights_precision}/{lay.kv_precision}",
                          "-" if rate is None else f"{rate:.2f}", _ms(s["ttft_s"]["p90"]),
                          _ms(s["ttft_s"]["p99"]), _ms(s["tpot_s"]["p90"]),
                          _ms(s["itl_s"]["p99"]), f"{s['goodput_rps']:.2f}",
                          f"{s['output_tokens_per_s'] / plan.num_gpus:,.0f}")
        console.print(table)
        if any(not p.summary["meets_slo"] for p in result.plans):
            console.print("* misses the SLO   ! saturated (the queue keeps growing)",
                          markup=False, highlight=False)
        if result.plans:
            best = result.plans[0]
            knobs = best.deployment.engine
            console.print(f"#1 knobs: max_num_seqs {knobs.max_num_seqs}, max_num_batched_tokens "
                          f"{knobs.max_num_batched_tokens}, gpu_memory_utilization "
                          f"{knobs.gpu_memory_utilization:.2f}; KV "
                          f"{best.kv_cache_bytes_per_gpu / 2**30:.1f} GiB/GPU "
                          f"({best.kv_tokens_per_replica:,} tokens per replica); {best.why}",
                          markup=False, highlight=False)
        for note in result.notes:
            Console(stderr=True).print(f"note: {note}", markup=False, highlight=False)
