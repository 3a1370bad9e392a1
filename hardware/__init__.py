"""sysplan.hardware: GPU, fabric tier and cluster types, the YAML catalog and its loaders."""

from sysplan.hardware.loader import list_clusters, list_gpus, load_cluster, load_gpu
from sysplan.hardware.types import GPU, Cluster, FabricTier

__all__ = [
    "GPU",
    "Cluster",
    "FabricTier",
    "list_clusters",
    "list_gpus",
    "load_cluster",
    "load_gpu",
]
