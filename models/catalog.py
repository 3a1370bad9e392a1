"""Built-in model catalog (``models/catalog/*.yaml``) and name resolution.

A name resolves, in order: a path to a Hugging Face ``config.json`` (or a folder holding one);
an exact canonical name or alias, ignoring case, spaces, dashes and underscores; the same with
dots ignored too (``llama31-70b``), if that names one model. Nothing is guessed: a part of
several names (``llama``) is ambiguous, and any other miss is an ``InputError`` listing the
closest names (difflib).
"""

from __future__ import annotations

import difflib
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import yaml
from pydantic import ValidationError

from sysplan.core.errors import InputError
from sysplan.models.counting import param_counts
from sysplan.models.hf import from_hf_config
from sysplan.models.spec import ModelSpec

_MAX_SHOWN = 8
_LISTING_HINT = "run `sysplan models` to list them, or pass a Hugging Face config.json path"


class ModelListing(NamedTuple):
    """One catalog row: canonical name, aliases, total parameters."""

    name: str
    aliases: tuple[str, ...]
    params: int


class _Catalog(NamedTuple):
    specs: dict[str, ModelSpec]  # canonical name -> spec, in file order
    aliases: dict[str, tuple[str, ...]]  # canonical name -> aliases
    exact: dict[str, str]  # key with dots kept -> canonical name
    loose: dict[str, frozenset[str]]  # key with dots dropped -> canonical names


def _key(text: str, keep_dots: bool) -> str:
    """Lookup key: lower case without spaces, dashes, underscores (and dots unless kept)."""
    drop = r"[\s\-_]" if keep_dots else r"[\s\-_.]"
    return re.sub(drop, "", text.lower())


def _read_entries() -> list[dict]:
    """All ``models:`` entries of the catalog YAML files, in file-name order."""
    folder = resources.files("sysplan.models") / "catalog"
    entries: list[dict] = []
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name)
    for file in files:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        entries.extend(data.get("models", []))
    return entries


@lru_cache(maxsize=1)
def _catalog() -> _Catalog:
    specs: dict[str, ModelSpec] = {}
    aliases: dict[str, tuple[str, ...]] = {}
    exact: dict[str, str] = {}
    loose: dict[str, set[str]] = {}
    for raw in _read_entries():
        entry = dict(raw)
        names = tuple(str(alias) for alias in entry.pop("aliases", []))
        try:
            spec = ModelSpec(**entry)
        except ValidationError as error:  # a broken built-in catalog is a bug, not user input
            raise AssertionError(f"catalog entry {entry.get('name')!r}: {error}") from error
        assert spec.name not in specs, f"duplicate catalog name {spec.name!r}"
        specs[spec.name], aliases[spec.name] = spec, names
        for text in (spec.name, *names):
            key = _key(text, keep_dots=True)
            assert exact.get(key, spec.name) == spec.name, f"catalog key {text!r} is ambiguous"
            exact[key] = spec.name
            loose.setdefault(_key(text, keep_dots=False), set()).add(spec.name)
    frozen_loose = {key: frozenset(names) for key, names in loose.items()}
    return _Catalog(specs, aliases, exact, frozen_loose)


def list_models() -> list[ModelListing]:
    """Every built-in model with its aliases and total parameter count, in catalog order."""
    catalog = _catalog()
    return [
        ModelListing(name, catalog.aliases[name], param_counts(spec).total)
        for name, spec in catalog.specs.items()
    ]


def describe(spec: ModelSpec) -> str:
    """Short shape summary, e.g. ``80 layers, h=8192, GQA 64/8``."""
    a, g = spec.num_heads, spec.num_kv_heads
    if spec.mla is not None:
        attention = f"MLA {a} heads"
    elif g == a:
        attention = f"MHA {a}"
    else:
        attention = f"{'MQA' if g == 1 else 'GQA'} {a}/{g}"
    parts = [f"{spec.num_layers} layers", f"h={spec.hidden_size}", attention]
    if spec.moe is not None:
        moe = f"MoE {spec.moe.num_experts} experts top-{spec.moe.top_k}"
        if spec.moe.num_shared_experts:
            moe += f" + {spec.moe.num_shared_experts} shared"
        parts.append(moe)
    return ", ".join(parts)


def _looks_like_path(name: str) -> Path | None:
    """The config.json ``name`` points at, if it names a file or a folder holding one."""
    path = Path(name).expanduser()
    try:
        if path.is_dir() and (path / "config.json").is_file():
            return path / "config.json"
        if name.lower().endswith(".json") or path.is_file():
            return path
    except OSError:  # e.g. ENAMETOOLONG: a name of thousands of characters is no file
        return None
    return None


def _lookup(name: str) -> str:
    """Canonical catalog name for ``name``, or an ``InputError`` naming close matches."""
    catalog = _catalog()
    exact = catalog.exact.get(_key(name, keep_dots=True))
    if exact is not None:
        return exact
    loose_key = _key(name, keep_dots=False)
    matches = catalog.loose.get(loose_key, frozenset())
    if len(matches) == 1:
        return next(iter(matches))
    order = list(catalog.specs).index
    if not matches:  # a part of several names ("llama") is ambiguous too
        matches = frozenset(n for key, ns in catalog.loose.items() if loose_key in key for n in ns)
    if len(matches) > 1:
        ordered = sorted(matches, key=order)
        shown = ", ".join(ordered[:_MAX_SHOWN])
        more = f" and {len(ordered) - _MAX_SHOWN} more" if len(ordered) > _MAX_SHOWN else ""
        raise InputError(f"model '{name}' is ambiguous: it matches {shown}{more}; {_LISTING_HINT}")
    close = difflib.get_close_matches(loose_key, list(catalog.loose), n=5, cutoff=0.6)
    suggestions = sorted(matches.union(*(catalog.loose[key] for key in close)), key=order)
    hint = f" (closest: {', '.join(suggestions[:_MAX_SHOWN])})" if suggestions else ""
    raise InputError(f"unknown model '{name}'{hint}; {_LISTING_HINT}")


def resolve_model(name_or_path: str) -> tuple[ModelSpec, str]:
    """The spec for a catalog name, alias or ``config.json`` path, and a one-line note.

    The note reads like ``70b → Llama 3.1 70B (80 layers, h=8192, GQA 64/8)``.
    """
    text = name_or_path.strip()
    path = _looks_like_path(text)
    if path is not None:
        spec = from_hf_config(path)
        return spec, f"{text} → {spec.name} ({describe(spec)}; from Hugging Face config.json)"
    if not text:
        raise InputError(f"model name is empty; {_LISTING_HINT}")
    spec = _catalog().specs[_lookup(text)]
    return spec, f"{text} → {spec.name} ({describe(spec)})"
