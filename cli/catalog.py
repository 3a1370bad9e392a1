"""`sysplan models` and `sysplan clusters`: list what the catalogs hold."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from sysplan.cli.render import bandwidth, billions
from sysplan.hardware import list_clusters, load_cluster
from sysplan.models import list_models

MODELS_HELP = "List the model catalog: canonical names, aliases and parameter counts."
CLUSTERS_HELP = "List the cluster catalog: GPU, node size, default allocation and fabric tiers."


def models() -> None:
    """Print the model catalog."""
    table = Table("model", "aliases", "parameters", box=None, pad_edge=False)
    for entry in list_models():
        table.add_row(entry.name, ", ".join(entry.aliases), billions(entry.params))
    Console().print(table)


def clusters() -> None:
    """Print the cluster catalog."""
    table = Table("cluster", "GPU", "per node", "default", "fabric tiers", box=None,
                  pad_edge=False)
    for name in list_clusters():
        cluster, _ = load_cluster(name)
        tiers = " > ".join(f"{t.name} {bandwidth(t.bandwidth_bytes_per_s)}" for t in cluster.tiers)
        table.add_row(name, cluster.gpu.name, str(cluster.gpus_per_node),
                      f"{cluster.default_gpus:,} GPUs", tiers)
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add the catalog verbs to ``app``."""
    app.command(name="models", help=MODELS_HELP)(models)
    app.command(name="clusters", help=CLUSTERS_HELP)(clusters)
