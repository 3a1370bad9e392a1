"""`sysplan serve`: parse options, call ``plan_serving`` once per engine, render the result.

Results go to stdout (a table, or one JSON object with ``--json``); notes and written files go
to stderr.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from sysplan.cli.output import Quiet
from sysplan.cli.train import (
    MAX_TOP,
    _bounded_int,
    _choice,
    _gpu_count,
    _opt,
    _positive_float,
    whole_number,
)
from sysplan.core.units import ascii_float

HELP = """Find the cheapest deployment that serves a workload within its latency SLO.

\b
Examples:
  sysplan serve --model 70b --cluster dgx-h100 --isl 4000 --osl 500 --rate 4 \\
      --slo ttft=300ms --slo tpot=50ms
  sysplan serve --model 8b --cluster gb200-nvl72 --gpus 16 --isl 4k --osl 1k \\
      --slo ttft=500ms --slo tpot=30ms --engine all --gpu-cost 3 --export vllm,json
"""

_MODEL = "Model and cluster"
_OUTPUT = "Output"
_EXPORT = "Export"
_PINNED = "Pinned deployment (fix one dimension; all pinned = evaluate one deployment)"
_LOAD = "Workload"
_SEARCH = "Search"


def _bool_choice(value: object) -> bool:
    return str(value) == "1"


_Model = Annotated[str, _opt("--model", panel=_MODEL, metavar="NAME|PATH", help="Model: catalog name or "
                             "alias (70b, 8b) or a Hugging Face config.json path.")]
_Cluster = Annotated[str, _opt("--cluster", panel=_MODEL, metavar="NAME|PATH", help="Cluster: catalog name "
                               "(dgx-h100, ...) or a cluster YAML file.")]
_Gpus = Annotated[int | None, _opt("--gpus", panel=_MODEL, metavar="N", parser=_gpu_count, help="GPU budget "
                                   "(default: one node).")]
_Isl = Annotated[str, _opt("--isl", metavar="SPEC", panel=_LOAD, help="Input tokens: 4000, "
                           "normal:4000,800, lognormal:4000,0.5 or uniform:1000,4000.")]
_Osl = Annotated[str, _opt("--osl", metavar="SPEC", panel=_LOAD, help="Output tokens, same "
                           "forms as --isl.")]
_Trace = Annotated[str | None, _opt("--trace", metavar="FILE", panel=_LOAD, help="CSV/JSONL "
                                    "trace (arrival_s, input_tokens, output_tokens).")]
_Rate = Annotated[str | None, _opt("--rate", metavar="RPS|inf", panel=_LOAD, help="Requests/s "
                                   "to serve (the fewest GPUs meeting the SLO win); inf: all "
                                   "queued at once (offline throughput). Without it: the most "
                                   "SLO-meeting throughput per GPU on --gpus.")]
_Arrival = Annotated[str, _opt("--arrival", metavar="KIND", panel=_LOAD, help="poisson, "
                               "gamma:cv=2 (bursty), constant, or trace.")]
_Concurrency = Annotated[int | None, _opt("--concurrency", metavar="N",
                                          parser=_bounded_int(1_000_000),
                                          panel=_LOAD, help="Closed loop: N requests in flight.")]
_Requests = Annotated[int, _opt("--num-requests", metavar="N", parser=_bounded_int(1_000_000),
                                panel=_LOAD, help="Requests simulated (first 10 % are warm-up).")]
_Slo = Annotated[list[str] | None, _opt("--slo", metavar="METRIC[:pXX]=TIME", panel=_LOAD,
                                        help="Latency bound, repeatable: ttft=200ms, "
                                        "tpot:p99=50ms, itl, e2e (default percentile p90).")]
_Engine = Annotated[str, _opt("--engine", metavar="[vllm|sglang|trtllm|all]", panel=_SEARCH,
                              parser=_choice("vllm", "sglang", "trtllm", "all"),
                              help="Scheduler simulated and default export; all compares them.")]
_Top = Annotated[int, _opt("--top", metavar="N", parser=_bounded_int(MAX_TOP), panel=_SEARCH,
                           help="Deployments to show.")]
def _non_negative_int(value: object) -> int:
    """A whole number from 0 to 1,000,000."""
    number = whole_number(value)
    if number is None or number > 1_000_000:
        raise typer.BadParameter(
            f"{value}: expected a whole number of at least 0 and at most 1,000,000")
    return number


_Trials = Annotated[int, _opt("--trials", metavar="N", panel=_SEARCH, parser=_non_negative_int,
                              help="Optuna trials tuning the engine knobs of the best two "
                              "deployments (0: no tuning).")]
_Timeout = Annotated[float | None, _opt("--timeout", metavar="S", parser=_positive_float,
                                        panel=_SEARCH, help="Stop tuning after this many "
                                        "seconds (not deterministic).")]
_Storage = Annotated[str | None, _opt("--storage", metavar="URL", panel=_SEARCH, help="Optuna "
                                      "storage: sqlite:///study.db to resume, "
                                      "postgresql://... to share (default: in memory).")]
_Routing = Annotated[str, _opt("--routing", metavar="[least-loaded|round-robin]", panel=_SEARCH,
                               parser=_choice("least-loaded", "round-robin"),
                               help="How requests pick a replica (simulated and exported).")]
_Profile = Annotated[str | None, _opt(
    "--profile", metavar="FILE|NAME|none", panel=_SEARCH,
    help="Measured profile pricing the kernels (sysplan profile / calibrate --serving output, "
    "or a bundled name); default: the bundled profile of the cluster's GPU or of its die; "
    "none: the datasheet curves.")]
_GpuCost = Annotated[float | None, _opt(
    "--gpu-cost", metavar="DOLLARS", parser=_positive_float, panel=_SEARCH,
    help="Dollars per GPU-hour: with --rate ranks by cost; under every objective adds $/hour "
    "and $ per million output tokens.")]
_Json = Annotated[bool, _opt("--json", panel=_OUTPUT, help="Write one JSON object (schema: "
                             "exporters/serve_schema.json) to stdout instead of tables.")]
_Explain = Annotated[bool, _opt("--explain", panel=_OUTPUT, help="Show every deployment's knobs, memory, "
                                "latency percentiles and cost, and the notes.")]
_Export = Annotated[str | None, _opt("--export", panel=_EXPORT, metavar="TARGETS", help="Write into --output "
                                     "the launch files of the top deployment for vllm, sglang, "
                                     "trtllm, and json (the serve document, which sysplan "
                                     "export reads); comma-separated.")]
_Output = Annotated[str, _opt("--output", "-o", panel=_EXPORT, metavar="DIR",
                              help="Folder for --export.")]
_Plot = Annotated[str | None, _opt(
    "--plot", panel=_OUTPUT, metavar="DIR",
    help="Write pictures (the Pareto frontier of tokens/s per GPU "
    "against tokens/s per user and TTFT; the best deployment's latency against offered rate, "
    "a few more simulations) as PNG and SVG into DIR, and the frontier as text (needs the "
    "plot extra).")]


def _degree(name: str, help: str, parser=_gpu_count):
    return Annotated[int | None, _opt(name, metavar="N", parser=parser, panel=_PINNED,
                                      help=help)]


_Tp = _degree("--tp", "Tensor-parallel degree of each replica.")
_Pp = _degree("--pp", "Pipeline stages of each replica.")
_Replicas = _degree("--replicas", "Aggregated replicas.")
_PrefillTp = _degree("--prefill-tp", "Disaggregated: TP of a prefill replica.")
_PrefillReplicas = _degree("--prefill-replicas", "Disaggregated: prefill replicas.")
_DecodeTp = _degree("--decode-tp", "Disaggregated: TP of a decode replica.")
_DecodeReplicas = _degree("--decode-replicas", "Disaggregated: decode replicas.")
_MaxSeqs = _degree("--max-num-seqs", "Sequences batched at once.", _bounded_int(16_777_216))
_MaxTokens = _degree("--max-num-batched-tokens", "Tokens per engine iteration.",
                     _bounded_int(16_777_216))
def _hit_rate(value: object) -> float:
    """A share of prompt tokens in [0, 1)."""
    try:
        rate = ascii_float(str(value).strip())
    except ValueError:
        rate = -1.0
    if not 0 <= rate < 1:
        raise typer.BadParameter(f"{value}: expected a share of each prompt in [0, 1), e.g. 0.5")
    return rate


_HitRate = Annotated[float | None, _opt(
    "--prefix-cache-hit-rate", metavar="SHARE", parser=_hit_rate, panel=_LOAD,
    help="Share of each prompt found in the engine's prefix cache (not recomputed; e.g. a "
    "shared system prompt): vLLM's prefix caching, SGLang's radix cache.")]
_Capacity = Annotated[str | None, _opt(
    "--capacity-policy", metavar="[guaranteed-no-evict|max-utilization]", panel=_SEARCH,
    parser=_choice("guaranteed-no-evict", "max-utilization"),
    help="With --engine trtllm: reserve KV for whole requests (its default), or admit on the "
    "prompt and pause requests when KV runs out.")]
_Disagg = Annotated[bool | None, _opt("--disagg/--no-disagg", panel=_PINNED, help="Separate "
                                      "prefill and decode pools (default: searched).")]
_Weights = Annotated[str | None, _opt("--weights-precision", metavar="[bf16|fp8]", panel=_PINNED,
                                      parser=_choice("bf16", "fp8"), help="Weight dtype.")]
_Kv = Annotated[str | None, _opt("--kv-precision", metavar="[bf16|fp8]", panel=_PINNED,
                                 parser=_choice("bf16", "fp8"), help="KV-cache dtype.")]


def serve(
    model: _Model, cluster: _Cluster, gpus: _Gpus = None, isl: _Isl = "4000",
    osl: _Osl = "500", trace: _Trace = None, rate: _Rate = None, arrival: _Arrival = "poisson",
    concurrency: _Concurrency = None, num_requests: _Requests = 2000, slo: _Slo = None,
    engine: _Engine = "vllm", top: _Top = 5, trials: _Trials = 12, timeout: _Timeout = None,
    storage: _Storage = None, routing: _Routing = "least-loaded", gpu_cost: _GpuCost = None,
    profile: _Profile = None, json_out: _Json = False, explain: _Explain = False,
    export: _Export = None, output: _Output = "sysplan-serve", tp: _Tp = None, pp: _Pp = None,
    replicas: _Replicas = None, disagg: _Disagg = None, prefill_tp: _PrefillTp = None,
    prefill_replicas: _PrefillReplicas = None, decode_tp: _DecodeTp = None,
    decode_replicas: _DecodeReplicas = None, weights_precision: _Weights = None,
    kv_precision: _Kv = None, max_num_seqs: _MaxSeqs = None,
    max_num_batched_tokens: _MaxTokens = None, prefix_cache_hit_rate: _HitRate = None,
    capacity_policy: _Capacity = None, plot: _Plot = None, quiet: Quiet = False,
) -> None:
    """Find the cheapest deployment that serves a workload within its latency SLO."""
    from sysplan.cli import pictures, serve_run

    plot_folder = pictures.check(plot)
    pins = {"tp": tp, "pp": pp, "replicas": replicas, "disagg": disagg,
            "prefill_tp": prefill_tp, "prefill_replicas": prefill_replicas,
            "decode_tp": decode_tp, "decode_replicas": decode_replicas,
            "weights_precision": weights_precision, "kv_precision": kv_precision,
            "max_num_seqs": max_num_seqs, "max_num_batched_tokens": max_num_batched_tokens,
            "prefix_cache_hit_rate": prefix_cache_hit_rate,
            "capacity_policy": capacity_policy.replace("-", "_") if capacity_policy else None}
    results, spec, machine = serve_run.run(
        model=model, cluster=cluster, gpus=gpus, isl=isl, osl=osl, trace=trace, rate=rate,
        arrival=arrival, concurrency=concurrency, num_requests=num_requests, slo=slo or [],
        engine=engine, top=top, trials=trials, timeout=timeout, storage=storage,
        routing=routing, gpu_cost=gpu_cost, pins=pins, export=export, output=output,
        profile=profile, latency_curve=plot_folder is not None, quiet=quiet)
    if json_out:
        if plot_folder is not None:
            pictures.serving([serve_run.result_document(r) for r in results], plot_folder,
                             text=False)
        typer.echo(json.dumps(serve_run.document(results, spec, machine), indent=2))
        return
    serve_run.render(results, explain=explain, gpu_cost=gpu_cost, quiet=quiet)
    if plot_folder is not None:
        pictures.serving([serve_run.result_document(r) for r in results], plot_folder,
                         text=True)
