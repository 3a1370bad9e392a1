"""Load GPUs and clusters from the bundled catalog or a user's YAML file.

Catalog names are matched case-insensitively and through aliases (``h100`` is H100-SXM).
The catalog is read with importlib.resources, so it works from an installed wheel.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml

from sysplan.core.errors import InputError
from sysplan.hardware.schema import Where, as_mapping, cluster_from_mapping, gpu_from_mapping
from sysplan.hardware.types import GPU, Cluster

__all__ = ["list_clusters", "list_gpus", "load_cluster", "load_gpu", "read_yaml"]

T = TypeVar("T")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                line = key_node.start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    None, None, f"field {key!r} is given twice (line {line})", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str, source: str) -> Any:
    """Parse YAML text; a syntax error becomes one InputError line naming ``source``."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise InputError(f"{source}: not valid YAML: {exc.problem}{at}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{source}: not valid YAML: {exc}") from None
    except RecursionError:  # e.g. 100,000 nested lists: a cluster file is a few levels deep
        raise InputError(f"{source}: not a cluster YAML file: nested too deeply to read") from None


@dataclass
class _Catalog(Generic[T]):
    """Entries by canonical name (file order) and an index of lower-cased names and aliases."""

    kind: str
    entries: dict[str, T] = field(default_factory=dict)
    index: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, aliases: list[str], entry: T) -> None:
        for spelling in (name, *aliases):
            assert spelling.lower() not in self.index, f"{self.kind} {spelling!r} listed twice"
            self.index[spelling.lower()] = name
        self.entries[name] = entry

    def resolve(self, name: str) -> str | None:
        """The canonical name for ``name`` (any case, or an alias), or None."""
        return self.index.get(name.strip().lower())

    def unknown(self, name: str, lead: str | None = None) -> str:
        """One line saying ``name`` is unknown, with close matches and the accepted names."""
        close = difflib.get_close_matches(name.strip().lower(), self.index, n=3, cutoff=0.6)
        suggestions = list(dict.fromkeys(self.index[c] for c in close))
        hint = f" (did you mean {' or '.join(repr(s) for s in suggestions)}?)" if suggestions else ""
        lead = lead or f"unknown {self.kind} {name!r}"
        return f"{lead}{hint}; catalog {self.kind}s: {', '.join(self.entries)}"


def _catalog_entries(file_name: str, top_key: str) -> tuple[Where, dict[str, Any]]:
    text = (resources.files("sysplan.hardware") / "catalog" / file_name).read_text("utf-8")
    where = Where(file_name)
    document = as_mapping(read_yaml(text, file_name), where)
    return where / top_key, dict(as_mapping(document.get(top_key), where / top_key))


def _split_aliases(value: object, where: Where) -> tuple[list[str], dict[str, Any]]:
    data = dict(as_mapping(value, where))
    aliases = data.pop("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise (where / "aliases").error("expected a list of names")
    return aliases, data


@lru_cache(maxsize=1)
def _gpu_catalog() -> _Catalog[GPU]:
    catalog: _Catalog[GPU] = _Catalog("GPU")
    where, entries = _catalog_entries("gpus.yaml", "gpus")
    for name, value in entries.items():
        aliases, data = _split_aliases(value, where / name)
        catalog.add(name, aliases, gpu_from_mapping(data, where / name, name=name))
    return catalog


def _lookup_gpu(name: str, where: str) -> GPU:
    """A catalog GPU for a cluster file's ``gpu:`` field, with an error naming the field."""
    catalog = _gpu_catalog()
    key = catalog.resolve(name)
    if key is None:
        raise InputError(f"{where}: {catalog.unknown(name)}; or write the GPU's fields inline")
    return catalog.entries[key]


@lru_cache(maxsize=1)
def _cluster_catalog() -> _Catalog[Cluster]:
    catalog: _Catalog[Cluster] = _Catalog("cluster")
    where, entries = _catalog_entries("clusters.yaml", "clusters")
    for name, value in entries.items():
        aliases, data = _split_aliases(value, where / name)
        catalog.add(name, aliases, cluster_from_mapping(data, where / name, _lookup_gpu, name))
    return catalog


def list_gpus() -> list[str]:
    """Catalog GPU names, in catalog order."""
    return list(_gpu_catalog().entries)


def list_clusters() -> list[str]:
    """Catalog cluster names, in catalog order."""
    return list(_cluster_catalog().entries)


def load_gpu(name: str) -> GPU:
    """The catalog GPU called ``name`` (any case, or an alias such as ``h100``)."""
    catalog = _gpu_catalog()
    key = catalog.resolve(name)
    if key is None:
        raise InputError(catalog.unknown(name))
    return catalog.entries[key]


def _cluster_from_file(path: Path, shown: str) -> Cluster:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{shown}: cannot read the file ({exc})") from None
    return cluster_from_mapping(read_yaml(text, shown), Where(shown), _lookup_gpu, path.stem)


def load_cluster(name_or_path: str) -> tuple[Cluster, list[str]]:
    """A cluster from a catalog name or a YAML file, and notes for stderr.

    A catalog name (any case, or an alias) gives the catalog entry. An existing file is parsed.
    A missing file whose stem names a catalog cluster (``frontier.yaml``) gives the catalog
    entry and a note saying so. Anything else is an InputError listing the catalog names.
    """
    catalog = _cluster_catalog()
    key = catalog.resolve(name_or_path)
    if key is not None:
        return catalog.entries[key], []
    if not name_or_path.strip():
        raise InputError(catalog.unknown(name_or_path))
    path = Path(name_or_path).expanduser()
    try:
        is_file, is_dir = path.is_file(), path.is_dir()
    except OSError:  # e.g. ENAMETOOLONG: a name of thousands of characters is no file
        is_file = is_dir = False
    if is_file:
        return _cluster_from_file(path, name_or_path), []
    if is_dir:
        raise InputError(f"{name_or_path} is a directory, not a cluster YAML file")
    key = catalog.resolve(path.stem)
    if key is not None:
        return catalog.entries[key], [
            f"{name_or_path} not found; using the catalog cluster {key!r}"
        ]
    if path.suffix.lower() in (".yaml", ".yml") or len(path.parts) > 1:
        lead = f"cluster file {name_or_path!r} not found and {path.stem!r} is not a catalog cluster"
        raise InputError(catalog.unknown(path.stem, lead))
    raise InputError(f"{catalog.unknown(name_or_path)}; or give a path to a cluster YAML file")
