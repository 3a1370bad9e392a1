"""Turn parsed YAML mappings into GPU and Cluster objects, with one-line errors.

This is the YAML schema of a GPU and of a cluster (examples/frontier.yaml shows every field).
Each error names the file and the field as a path, e.g.
``cluster.yaml: tiers[1].bandwidth: '400' has no unit (write e.g. 400Gbps or 400GB/s)``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from sysplan.core.errors import InputError
from sysplan.core.units import (
    MAX_GPUS,
    parse_bandwidth,
    parse_bytes,
    parse_flops,
    parse_power,
    parse_time,
)
from sysplan.hardware.types import DTYPES, GPU, Cluster, FabricTier

#: Efficiency classes the compute model knows; a GPU must name one of them. "cpu" is a CPU
#: process standing in for a GPU (the local-cpu cluster `sysplan profile` writes).
GPU_CLASSES = ("volta", "ampere", "ada", "hopper", "blackwell", "cdna2", "cdna3", "cdna4",
               "cpu")

#: Vendors a GPU may name.
VENDORS = ("nvidia", "amd", "intel", "other")

#: ``domain: cluster`` on a machine without ``max_nodes``: a domain no allocation outgrows.
UNBOUNDED_DOMAIN_GPUS = 1_000_000

GPU_FIELDS = ("name", "vendor", "gpu_class", "memory", "memory_bandwidth", "power", "peak",
              "source")
CLUSTER_FIELDS = ("name", "description", "gpu", "gpus_per_node", "default_nodes", "max_nodes",
                  "tiers", "source")
TIER_FIELDS = ("name", "domain", "bandwidth", "nics_per_node", "nic_bandwidth", "latency",
               "oversubscription", "source")

GpuLookup = Callable[[str, str], GPU]


class Where:
    """A position in a YAML file, rendered ``file: path.to[2].field`` in messages."""

    def __init__(self, source: str, path: str = "") -> None:
        self.source = source
        self.path = path

    def __truediv__(self, key: str | int) -> Where:
        if isinstance(key, int):
            return Where(self.source, f"{self.path}[{key}]")
        return Where(self.source, f"{self.path}.{key}" if self.path else key)

    def __str__(self) -> str:
        return f"{self.source}: {self.path}" if self.path else self.source

    def error(self, problem: str) -> InputError:
        """An InputError saying ``problem`` about this position."""
        return InputError(f"{self}: {problem}")


def _type_name(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


def as_mapping(value: object, where: Where) -> Mapping[str, Any]:
    """``value`` if it is a YAML mapping, else an InputError at ``where``."""
    if not isinstance(value, Mapping):
        raise where.error(f"expected a mapping of fields, got {_type_name(value)}")
    return value


def check_fields(data: Mapping[str, Any], where: Where, accepted: tuple[str, ...],
                 required: tuple[str, ...]) -> None:
    """Refuse unknown fields (suggesting a close spelling) and missing required ones."""
    for key in data:
        if key not in accepted:
            close = difflib.get_close_matches(str(key), accepted, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise (where / str(key)).error(
                f"unknown field ({hint}accepted: {', '.join(accepted)})"
            )
    for key in required:
        if key not in data:
            raise where.error(f"missing field {key!r}")


def _text(data: Mapping[str, Any], key: str, where: Where, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise (where / key).error(f"expected text, got {_type_name(value)}")
    return value.strip()


def _whole(value: object, where: Where, maximum: int | None = None, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise where.error(f"{value!r} is not a positive whole number")
    if maximum is not None and value > maximum:
        raise where.error(f"{value!r} is more than {maximum:,}{why}")
    return value


def _choice(data: Mapping[str, Any], key: str, where: Where, accepted: tuple[str, ...]) -> str:
    value = _text(data, key, where).lower()
    if value not in accepted:
        raise (where / key).error(f"{value!r} is not one of {', '.join(accepted)}")
    return value


def _build(where: Where, factory: Callable[..., Any], **fields: Any) -> Any:
    """Construct a pydantic type, turning a validation failure into one InputError line."""
    try:
        return factory(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        spot = where
        for part in first["loc"]:
            spot = spot / part
        raise spot.error(message) from None


def gpu_from_mapping(value: object, where: Where, name: str | None = None) -> GPU:
    """A GPU from its YAML mapping; ``name`` comes from the catalog key when given."""
    data = as_mapping(value, where)
    required = ("vendor", "gpu_class", "memory", "memory_bandwidth", "power", "peak")
    # Catalog entries (named by their key) must cite a source; inline user GPUs may not.
    check_fields(data, where, GPU_FIELDS, (*required, "source") if name else ("name", *required))
    peak_where = where / "peak"
    peaks = as_mapping(data["peak"], peak_where)
    check_fields(peaks, peak_where, DTYPES, ("bf16",))
    return _build(
        where,
        GPU,
        name=name or _text(data, "name", where),
        vendor=_choice(data, "vendor", where, VENDORS),
        gpu_class=_choice(data, "gpu_class", where, GPU_CLASSES),
        memory_bytes=parse_bytes(data["memory"], str(where / "memory")),
        hbm_bandwidth_bytes_per_s=parse_bandwidth(
            data["memory_bandwidth"], str(where / "memory_bandwidth")
        ),
        power_w=parse_power(data["power"], str(where / "power")),
        peak_flops={
            dtype: parse_flops(rate, str(peak_where / dtype)) for dtype, rate in peaks.items()
        },
        source=_text(data, "source", where, default=f"given in {where.source}"),
    )


#: Largest oversubscription read (a tier tapered 1000:1 is as good as absent).
MAX_OVERSUBSCRIPTION = 1000.0


def _oversubscription(value: object, where: Where) -> float:
    """``2.0``, ``2`` or ``'2:1'``; at least 1, at most MAX_OVERSUBSCRIPTION."""
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, str) and text.endswith(":1"):
        text = text.removesuffix(":1")
    try:
        ratio = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        ratio = float("nan")
    if isinstance(value, bool) or not 1.0 <= ratio <= MAX_OVERSUBSCRIPTION:
        raise where.error(f"{value!r} is not a ratio of at least 1 and at most "
                          f"{MAX_OVERSUBSCRIPTION:g} (write e.g. 1.0, 2 or '2:1')")
    return ratio


def _domain(value: object, where: Where, gpus_per_node: int, max_nodes: int | None) -> int:
    """GPUs sharing the tier: a number, ``node`` or ``cluster``."""
    if value == "node":
        return gpus_per_node
    if value == "cluster":
        return max_nodes * gpus_per_node if max_nodes else UNBOUNDED_DOMAIN_GPUS
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_GPUS:
        raise where.error(f"{value!r} is not a GPU count, 'node' or 'cluster' (a count is 1 "
                          f"to {MAX_GPUS:,})")
    return value


def _tier_bandwidth(data: Mapping[str, Any], where: Where, gpus_per_node: int) -> float:
    """Per-GPU bandwidth: given directly, or NICs per node times NIC speed over GPUs per node."""
    has_nics = "nics_per_node" in data or "nic_bandwidth" in data
    if ("bandwidth" in data) == has_nics:
        raise where.error(
            "give either 'bandwidth' (per GPU, per direction) "
            "or both 'nics_per_node' and 'nic_bandwidth'"
        )
    if "bandwidth" in data:
        return parse_bandwidth(data["bandwidth"], str(where / "bandwidth"))
    check_fields(data, where, TIER_FIELDS, ("nics_per_node", "nic_bandwidth"))
    nics = _whole(data["nics_per_node"], where / "nics_per_node")
    nic = parse_bandwidth(data["nic_bandwidth"], str(where / "nic_bandwidth"))
    return nics * nic / gpus_per_node


def tier_from_mapping(value: object, where: Where, gpus_per_node: int,
                      max_nodes: int | None) -> FabricTier:
    """One fabric tier from its YAML mapping."""
    data = as_mapping(value, where)
    check_fields(data, where, TIER_FIELDS, ("name", "domain", "latency"))
    return _build(
        where,
        FabricTier,
        name=_text(data, "name", where),
        domain_size=_domain(data["domain"], where / "domain", gpus_per_node, max_nodes),
        bandwidth_bytes_per_s=_tier_bandwidth(data, where, gpus_per_node),
        latency_s=parse_time(data["latency"], str(where / "latency")),
        oversubscription=_oversubscription(
            data.get("oversubscription", 1.0), where / "oversubscription"
        ),
        source=_text(data, "source", where) if "source" in data else "",
    )


def _cluster_gpu(value: object, where: Where, lookup_gpu: GpuLookup) -> GPU:
    """``gpu:`` is a catalog name (or alias) or an inline GPU mapping."""
    if isinstance(value, str):
        return lookup_gpu(value, str(where))
    return gpu_from_mapping(value, where)


def cluster_from_mapping(value: object, where: Where, lookup_gpu: GpuLookup,
                         name: str | None = None) -> Cluster:
    """A Cluster from its YAML mapping; ``name`` is the catalog key or the file's stem."""
    data = as_mapping(value, where)
    check_fields(data, where, CLUSTER_FIELDS, ("gpu", "gpus_per_node", "default_nodes", "tiers"))
    gpus_per_node = _whole(data["gpus_per_node"], where / "gpus_per_node", MAX_GPUS,
                           " (the most GPUs sysplan plans for)")
    node_limit = MAX_GPUS // gpus_per_node
    why = (f" nodes ({MAX_GPUS:,} GPUs at {gpus_per_node} per node, the most sysplan plans "
           "for)")
    max_nodes = data.get("max_nodes")
    if max_nodes is not None:
        max_nodes = _whole(max_nodes, where / "max_nodes", node_limit, why)
    default_nodes = _whole(data["default_nodes"], where / "default_nodes", node_limit, why)
    if max_nodes is not None and default_nodes > max_nodes:
        raise (where / "default_nodes").error(
            f"{default_nodes} is more than max_nodes ({max_nodes})"
        )
    tiers = data["tiers"]
    if not isinstance(tiers, list) or not tiers:
        raise (where / "tiers").error("expected a list of fabric tiers, innermost first")
    return _build(
        where,
        Cluster,
        name=_text(data, "name", where) if "name" in data else name,
        description=_text(data, "description", where) if "description" in data else "",
        gpu=_cluster_gpu(data["gpu"], where / "gpu", lookup_gpu),
        gpus_per_node=gpus_per_node,
        default_nodes=default_nodes,
        max_nodes=max_nodes,
        tiers=tuple(
            tier_from_mapping(tier, where / "tiers" / i, gpus_per_node, max_nodes)
            for i, tier in enumerate(tiers)
        ),
        source=_text(data, "source", where) if "source" in data else "",
    )
