"""`sysplan models`, `sysplan clusters` and `sysplan gpus`: list what the catalogs hold, as a
table (written for a pipe as well as a terminal: no wrapped cells) or as JSON (``--json``)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from sysplan.cli.render import bandwidth, billions, emit, stdout_console
from sysplan.hardware import list_clusters, list_gpus, load_cluster, load_gpu
from sysplan.models import list_models

MODELS_HELP = "List the model catalog: canonical names, aliases and parameter counts."
CLUSTERS_HELP = "List the cluster catalog: GPU, node size, default allocation and fabric tiers."
GPUS_HELP = "List the GPU catalog: memory, HBM bandwidth, dense peak FLOP/s per dtype, power."

_Json = Annotated[bool, typer.Option("--json", help="Write one JSON array to stdout instead "
                                                    "of a table.")]

TFLOPS = 1e12


def _emit(rows: list[dict[str, Any]], columns: tuple[str, ...], cells) -> None:
    """Print ``rows`` as a table (``cells(row)`` gives the row's strings) on stdout."""
    from rich.table import Table

    table = Table(*columns, box=None, pad_edge=False)
    for row in rows:
        table.add_row(*cells(row))
    emit(stdout_console(), table)  # off a terminal: whole rows, never wrapped mid-cell


def models(as_json: _Json = False) -> None:
    """Print the model catalog."""
    rows = [{"name": e.name, "aliases": list(e.aliases), "params": e.params}
            for e in list_models()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    _emit(rows, ("model", "aliases", "parameters"),
          lambda r: (r["name"], ", ".join(r["aliases"]), billions(r["params"])))


def clusters(as_json: _Json = False) -> None:
    """Print the cluster catalog."""
    rows = []
    for name in list_clusters():
        cluster, _ = load_cluster(name)
        rows.append({
            "name": name, "gpu": cluster.gpu.name, "gpus_per_node": cluster.gpus_per_node,
            "default_gpus": cluster.default_gpus,
            "max_gpus": cluster.max_nodes * cluster.gpus_per_node if cluster.max_nodes else None,
            "tiers": [{"name": t.name, "domain_size": t.domain_size,
                       "bandwidth_bytes_per_s": t.bandwidth_bytes_per_s}
                      for t in cluster.tiers],
        })
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    _emit(rows, ("cluster", "GPU", "per node", "default", "fabric tiers"),
          lambda r: (r["name"], r["gpu"], str(r["gpus_per_node"]), f"{r['default_gpus']:,} GPUs",
                     " > ".join(f"{t['name']} {bandwidth(t['bandwidth_bytes_per_s'])}"
                                for t in r["tiers"])))


def gpus(as_json: _Json = False) -> None:
    """Print the GPU catalog."""
    rows = []
    for name in list_gpus():
        gpu = load_gpu(name)
        rows.append({"name": gpu.name, "vendor": gpu.vendor, "class": gpu.gpu_class,
                     "memory_bytes": gpu.memory_bytes,
                     "hbm_bandwidth_bytes_per_s": gpu.hbm_bandwidth_bytes_per_s,
                     "peak_flops": dict(gpu.peak_flops), "power_w": gpu.power_w,
                     "source": gpu.source})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return

    def peak(row: dict[str, Any], dtype: str) -> str:
        value = row["peak_flops"].get(dtype)
        return f"{value / TFLOPS:,.0f}" if value else "-"

    _emit(rows, ("GPU", "class", "memory", "HBM", "bf16 TFLOP/s", "fp8 TFLOP/s", "power"),
          lambda r: (r["name"], r["class"], f"{r['memory_bytes'] / 2**30:,.0f} GiB",
                     bandwidth(r["hbm_bandwidth_bytes_per_s"]), peak(r, "bf16"), peak(r, "fp8"),
                     f"{r['power_w']:,.0f} W"))
