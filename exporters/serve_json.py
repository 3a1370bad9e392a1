"""The serve document (``sysplan serve --json``, ``--export json``): a public contract
(exporters/serve_schema.json), its writer, and its reader for ``sysplan export``.

Writers emit ``schema_version`` 1.1 (1.1 added ``kind``, ``explanation``, ``gpu_hour_cost``,
each plan's ``dollars_per_million_output_tokens`` and each export's ``executable`` paths).
Readers accept any 1.x and ignore keys they do not know; a 2.x document, a missing version
or a garbled file is refused with an InputError (exit 2). All values are SI.

One engine's answer is one object (``result_document``); ``--engine all`` writes
``{"kind": "serve", "schema_version", "sysplan_version", "results": [one per engine]}``.
Every plan carries the launch files each engine would run it with (``exports``), so a saved
document can be exported later (``sysplan export serve.json --to vllm``) without the model
or cluster files it was planned from.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from sysplan.core.errors import InputError
from sysplan.core.version import __version__
from sysplan.exporters.base import ExportFile, json_text
from sysplan.planners.serving.types import ServePlan, ServeResult

SCHEMA_VERSION = "1.1"
SCHEMA_PATH = Path(__file__).with_name("serve_schema.json")
#: What ``kind`` says in a serve document.
KIND = "serve"
#: ``sysplan export --to`` names a serve document accepts.
SERVE_TARGETS = ("vllm", "sglang", "trtllm", "json")


def load_schema() -> dict[str, Any]:
    """The published JSON Schema (draft 2020-12) of the serve document."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


# --- writing -----------------------------------------------------------------------------


def export_request(plan: ServePlan, spec, machine, result: ServeResult):
    """The exporters' view of one plan."""
    from sysplan.exporters.serving import ServeExportRequest

    summary = plan.summary
    predicted = {"ttft_p90_s": summary["ttft_s"]["p90"], "tpot_p90_s": summary["tpot_s"]["p90"],
                 "output_tokens_per_s": summary["output_tokens_per_s"]}
    if plan.max_rate_rps:
        predicted["max_rate_rps"] = plan.max_rate_rps
    longest = int(result.workload.get("max_len") or 0) or spec.max_seq_len
    return ServeExportRequest(
        deployment=plan.deployment, model=spec, cluster=machine,
        kv_cache_bytes_per_gpu=plan.kv_cache_bytes_per_gpu,
        weight_bytes_per_gpu=plan.weight_bytes_per_gpu,
        max_model_len=min(spec.max_seq_len, longest), predicted=predicted)


def plan_exports(plan: ServePlan, result: ServeResult, spec, machine) -> dict[str, Any]:
    """Per engine, the launch files the plan exports to (and which are executable), or why
    the engine refuses it."""
    from sysplan.exporters.serving import SERVE_EXPORTERS

    request = export_request(plan, spec, machine, result)
    exports: dict[str, Any] = {}
    for name, exporter in SERVE_EXPORTERS.items():
        try:
            files = exporter(request)
            exports[name] = {"files": {f.path: f.content for f in files},
                             "executable": [f.path for f in files if f.executable]}
        except InputError as error:
            exports[name] = {"error": str(error)}
    return exports


def document(results: list[ServeResult], spec, machine) -> dict[str, Any]:
    """What ``sysplan serve --json`` writes: one engine's result document, or with several
    engines ``{"kind", "schema_version", "sysplan_version", "results": [...]}``."""
    docs = [result_document(r, lambda p, r=r: plan_exports(p, r, spec, machine))
            for r in results]
    if len(docs) == 1:
        return docs[0]
    return {"kind": KIND, "schema_version": SCHEMA_VERSION, "sysplan_version": __version__,
            "results": docs}


def result_document(result: ServeResult, exports=None) -> dict[str, Any]:
    """One engine's answer: the question, the search, the ranked plans (SI units)."""
    return {
        "kind": KIND, "schema_version": SCHEMA_VERSION, "sysplan_version": __version__,
        "model": result.model, "cluster": result.cluster, "engine": result.engine,
        "max_gpus": result.max_gpus, "workload": _workload(result.workload),
        "slos": list(result.slos),
        "gpu_hour_cost": _price(result),
        "searched": result.searched, "simulated": result.simulated,
        "search_time_s": result.search_time_s, "deterministic": result.deterministic,
        "notes": list(result.notes), "explanation": result.explanation,
        "accuracy": result.accuracy,
        "plans": [{**plan_document(p), **({"exports": exports(p)} if exports else {})}
                  for p in result.plans],
        "slo_bounds": _slo_bounds(result),
        "explored": [dict(point) for point in result.explored],
        "latency_curve": [dict(row) for row in result.latency_curve],
    }


def _workload(workload: dict[str, Any]) -> dict[str, Any]:
    """The workload with ``rate`` inf (offline) written "inf": JSON has no infinity."""
    rate = workload.get("rate")
    if isinstance(rate, float) and math.isinf(rate):
        return {**workload, "rate": "inf"}
    return dict(workload)


def _price(result: ServeResult) -> float | None:
    """Dollars per GPU-hour the plans were priced at (None without --gpu-cost)."""
    for plan in result.plans:
        if plan.cost_per_hour is not None:
            return plan.cost_per_hour / plan.num_gpus
    return None


def _slo_bounds(result: ServeResult) -> list[dict[str, Any]]:
    """The SLOs as numbers: metric, percentile, bound_s (for the pictures' SLO lines)."""
    from sysplan.workloads.slo import parse_slos

    return [{"metric": s.metric, "percentile": s.percentile, "bound_s": s.bound_s}
            for s in parse_slos(list(result.slos))]


def plan_document(plan: ServePlan) -> dict[str, Any]:
    """One ranked deployment: layout, precision, engine knobs, rates, latencies, cost."""
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
        "weight_bytes_per_gpu": plan.weight_bytes_per_gpu,
        "routing": d.routing, "max_rate_rps": plan.max_rate_rps, "rate_rps": plan.rate_rps,
        "output_tokens_per_s": s["output_tokens_per_s"],
        "output_tokens_per_s_per_gpu": s["output_tokens_per_s"] / plan.num_gpus,
        "latency_s": {k: s[f"{k}_s"] for k in ("ttft", "tpot", "itl", "e2e", "queue")},
        "slo_attainment": s["slo_attainment"], "goodput_rps": s["goodput_rps"],
        "meets_slo": s["meets_slo"], "saturated": s["saturated"],
        "cost_per_hour": plan.cost_per_hour,
        "dollars_per_million_output_tokens": plan.dollars_per_million_output_tokens,
        "why": plan.why,
    }


# --- reading -----------------------------------------------------------------------------


def serve_results(data: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The engine results of a serve document (``kind`` serve, or the shape 1.0 wrote: an
    ``engine`` and ``plans``, or ``results``); None for any other document."""
    if isinstance(data.get("results"), list):
        return [r for r in data["results"] if isinstance(r, dict)]
    if data.get("kind") == KIND or ("engine" in data and isinstance(data.get("plans"), list)):
        return [data]
    return None


def read_serve_document(path: str | Path) -> list[dict[str, Any]] | None:
    """The engine results of the serve document at ``path`` (version checked), or None when
    the file holds another kind of document; InputError for an unreadable file."""
    from sysplan.exporters.plan_json import _read_object, check_schema_version

    data = _read_object(Path(path))
    results = serve_results(data)
    if results is None:
        return None
    check_schema_version(data.get("schema_version"), str(path))
    if not results:
        raise InputError(f"{path}: a serve document with no results")
    return results


def export_files(results: list[dict[str, Any]], targets: list[str], rank: int | None,
                 source: str) -> list[ExportFile]:
    """The files of ``targets`` for the plan of ``rank`` (default 1) of a serve document: an
    engine's launch files come from the result planned for that engine where the document
    has one (``--engine all``), else from its first; ``json`` writes the document narrowed to
    that plan. InputError for a rank it lacks, an engine that refused the plan, or a
    document saved without exports."""
    files: list[ExportFile] = []
    for target in targets:
        if target not in SERVE_TARGETS:
            raise InputError(f"--to {target}: {source} is a serve document; accepted: "
                             f"{', '.join(SERVE_TARGETS)}")
        result = next((r for r in results if r.get("engine") == target), results[0])
        plan = _pick(result, rank, source)
        if target == "json":
            files.append(ExportFile("serve.json", json_text({**result, "plans": [plan]})))
            continue
        exports = plan.get("exports")
        export = exports.get(target) if isinstance(exports, dict) else None
        if not isinstance(export, dict) or not isinstance(export.get("files", {}), dict):
            raise InputError(f"{source}: plan {plan.get('rank')} carries no {target} export; "
                             "write the document with sysplan serve --json or --export json")
        if "error" in export:
            raise InputError(f"--to {target}: {export['error']}")
        executable = set(export.get("executable") or [])
        files += [ExportFile(_relative(path, source), str(text),
                             executable=path in executable or path.endswith(".sh"))
                  for path, text in (export.get("files") or {}).items()]
    return files


def _relative(path: str, source: str) -> str:
    """A file path of the document, refused unless it stays inside the output folder."""
    parts = Path(path).parts
    if not parts or Path(path).is_absolute() or ".." in parts:
        raise InputError(f"{source}: export path {path!r} leaves the output folder")
    return path


def _pick(result: dict[str, Any], rank: int | None, source: str) -> dict[str, Any]:
    wanted = 1 if rank is None else rank
    plans = [p for p in result.get("plans") or [] if isinstance(p, dict)]
    for plan in plans:
        if plan.get("rank") == wanted:
            return plan
    ranks = ", ".join(str(p.get("rank")) for p in plans) or "none"
    raise InputError(f"--rank {wanted}: {source} holds plans of rank {ranks}")
