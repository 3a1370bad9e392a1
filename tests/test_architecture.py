"""Arrows point one way (house style 1), read from the imports of every module with ast.

Layers, bottom to top: core < hardware, models, workloads, profiles < costmodels < planners
< exporters < cli; executor and plots sit beside exporters and only cli may import the
executor. typer and rich belong to cli; torch, pulp, optuna and matplotlib (the optional
plot extra) are imported inside the functions that need them.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Top-level folders that are not part of the installed package.
NOT_PACKAGE = {"tests", "benchmarks", "examples", "build", "dist", "sysplan.egg-info"}
#: Rank of each layer; a module may import its own rank or lower. "" is the root package
#: (``__version__``, the lazy ``plan_training`` facade and ``__main__``), at the CLI's level.
LAYERS = {
    "core": 0,
    "hardware": 1, "models": 1, "workloads": 1, "profiles": 1,
    "costmodels": 2,
    "planners": 3,
    "exporters": 4, "executor": 4, "plots": 4,
    "cli": 5,
    "": 5,
}
#: Who may import the executor (it runs plans; nothing below the CLI depends on it).
EXECUTOR_USERS = {"executor", "cli", ""}
CLI_ONLY = {"typer", "rich", "click"}
LAZY_ONLY = {"torch", "pulp", "optuna", "matplotlib"}


def package_files() -> Iterator[Path]:
    """Every Python file of the installed package `sysplan` (the repository root)."""
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if parts[0] in NOT_PACKAGE or any(part.startswith(".") for part in parts):
            continue
        yield path


def layer_of(path: Path) -> str:
    parts = path.relative_to(ROOT).parts
    return parts[0] if len(parts) > 1 else ""


def module_package(path: Path) -> list[str]:
    """``sysplan.x.y`` package parts of the module at ``path`` (for relative imports)."""
    parts = ["sysplan", *path.relative_to(ROOT).parts[:-1]]
    return parts


def imported_modules(tree: ast.AST, path: Path) -> Iterator[tuple[str, int]]:
    """(absolute module name, line) for every import anywhere in the module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module_package(path)[: len(module_package(path)) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            for alias in node.names:
                yield (f"{base}.{alias.name}" if base == "sysplan" else base), node.lineno


def target_layer(module: str) -> str | None:
    """The layer a `sysplan...` module belongs to; None for third-party modules."""
    parts = module.split(".")
    if parts[0] != "sysplan":
        return None
    if len(parts) > 1 and (ROOT / parts[1]).is_dir():
        return parts[1]
    return ""


def top_level_imports(body: list[ast.stmt]) -> Iterator[tuple[str, int]]:
    """Imports that run when the module is imported (not inside functions or TYPE_CHECKING)."""
    for node in body:
        if isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module, node.lineno
        elif isinstance(node, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                yield from top_level_imports(node.body)
            yield from top_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from top_level_imports(block)
            for handler in node.handlers:
                yield from top_level_imports(handler.body)
        elif isinstance(node, (ast.With, ast.ClassDef)):
            yield from top_level_imports(node.body)


def parsed() -> Iterator[tuple[Path, ast.Module]]:
    for path in package_files():
        yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def test_every_package_folder_has_a_layer() -> None:
    folders = {layer_of(path) for path in package_files()}
    assert folders - set(LAYERS) == set(), "add the new package to LAYERS in this test"


def test_imports_point_down() -> None:
    wrong = []
    for path, tree in parsed():
        source = layer_of(path)
        for module, line in imported_modules(tree, path):
            target = target_layer(module)
            if target is None:
                continue
            if target not in LAYERS:
                wrong.append(f"{where(path, line)} imports {module}: unknown layer")
            elif LAYERS[target] > LAYERS[source]:
                wrong.append(f"{where(path, line)} ({source or 'root'}) imports {module} (up)")
            elif target == "executor" and source not in EXECUTOR_USERS:
                wrong.append(f"{where(path, line)} ({source}) imports the executor")
    assert wrong == []


def test_cli_libraries_stay_in_cli() -> None:
    wrong = [
        f"{where(path, line)} imports {module}"
        for path, tree in parsed() if layer_of(path) != "cli"
        for module, line in imported_modules(tree, path)
        if module.split(".")[0] in CLI_ONLY
    ]
    assert wrong == []


def may_import_torch_eagerly(path: Path) -> bool:
    """The executor's modules (not its package file) are the one place torch is at home."""
    parts = path.relative_to(ROOT).parts
    return parts[0] == "executor" and parts[-1] != "__init__.py"


def test_heavy_libraries_are_imported_lazily() -> None:
    wrong = [
        f"{where(path, line)} imports {module} at module level"
        for path, tree in parsed()
        for module, line in top_level_imports(tree.body)
        if module.split(".")[0] in LAZY_ONLY
        and not (module.split(".")[0] == "torch" and may_import_torch_eagerly(path))
    ]
    assert wrong == []


def test_root_holds_only_the_package_entry_points() -> None:
    assert sorted(path.name for path in ROOT.glob("*.py")) == ["__init__.py", "__main__.py"]
    assert not (ROOT / "tests" / "__init__.py").exists()


def test_every_package_is_declared_in_pyproject() -> None:
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ])
    found = {
        ".".join(["sysplan", *path.relative_to(ROOT).parts[:-1]])
        for path in package_files() if path.name == "__init__.py"
    }
    assert found - declared == set(), "missing from [tool.setuptools] packages: not installed"
    assert declared - found == set(), "declared in pyproject.toml but has no __init__.py"
