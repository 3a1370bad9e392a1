"""README cannot drift (house style 15): its options table, its commands and its examples.

The options table is generated from `sysplan train`'s options; after changing an option, paste
the output of ``python tests/test_docs.py`` over the table in README.md.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from sysplan.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CI = ROOT / ".ci" / "run"
needs_planner = pytest.mark.skipif(
    importlib.util.find_spec("sysplan.planners.training") is None,
    reason="sysplan.planners.training is not written yet",
)


def train_command():
    """The click command behind `sysplan train`."""
    group = typer.main.get_command(app)
    return group.commands["train"]


def help_text() -> str:
    result = CliRunner().invoke(app, ["train", "--help"])
    assert result.exit_code == 0
    return result.stdout


def help_options() -> set[str]:
    """Every option `sysplan train --help` lists (both spellings of an on/off pair)."""
    names: set[str] = set()
    for line in help_text().splitlines():
        match = re.match(r"^  (--[a-z0-9-]+)(?: / (--[a-z0-9-]+))?", line)
        if match:
            names.update(name for name in match.groups() if name)
    return names


def _cell(text: str) -> str:
    """Markdown table cell: pipes escaped, whitespace collapsed."""
    return " ".join(text.split()).replace("|", "\\|")


def options_table() -> str:
    """The README's options table, generated from the command's parameters."""
    rows = ["| option | default | meaning |", "| --- | --- | --- |"]
    command = train_command()
    context = command.make_context("train", ["--model", "x", "--cluster", "y"])
    params = [param for param in command.get_params(context) if not param.hidden]
    for param in params:
        names = " / ".join(param.opts + param.secondary_opts)
        spelled = f"{names} {param.metavar}" if param.metavar else names
        if param.required:
            default = "required"
        elif param.default in (None, False) or param.is_flag and not param.secondary_opts:
            default = ""
        else:
            default = f"`{param.default}`"
        rows.append(f"| `{_cell(spelled)}` | {default} | {_cell(param.help or '')} |")
    return "\n".join(rows)


def readme_table() -> str:
    """The options table as README.md has it."""
    lines = [line for line in README.read_text().splitlines() if line.startswith("| ")]
    start = lines.index("| option | default | meaning |")
    table = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith("| `--") and not line.startswith("| ---"):
            break
        table.append(line)
    return "\n".join(table)


def readme_options() -> set[str]:
    names: set[str] = set()
    for line in readme_table().splitlines()[2:]:
        names.update(re.findall(r"--[a-z0-9-]+", line.split(" | ")[0]))
    return names


def code_blocks(heading: str) -> list[str]:
    """The fenced code blocks of the README section titled ``heading``."""
    text = README.read_text()
    section = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.DOTALL | re.MULTILINE)
    assert section, f"README.md has no '## {heading}' section"
    return re.findall(r"^```[a-z]*\n(.*?)^```", section[1], re.DOTALL | re.MULTILINE)


def commands(heading: str) -> list[str]:
    return [line.strip() for block in code_blocks(heading) for line in block.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_every_help_option_is_in_the_readme_and_back() -> None:
    listed, documented = help_options(), readme_options()
    assert listed, "could not read the options of sysplan train --help"
    assert listed - documented == set(), "in --help but not in README (python tests/test_docs.py)"
    assert documented - listed == set(), "in README but not in --help"


def test_readme_table_is_the_generated_one() -> None:
    assert readme_table() == options_table(), "regenerate it: python tests/test_docs.py"


def test_install_section_is_the_two_commands() -> None:
    assert commands("Install and run") == [
        "pip install -e .",
        "sysplan train --model 70b --cluster frontier.yaml",
    ]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    test_commands = commands("Test")
    assert len(test_commands) == 1
    ci_lines = [line.strip() for line in CI.read_text().splitlines()]
    assert test_commands[0] in ci_lines
    assert "set -euo pipefail" in ci_lines
    assert "python -m pip install -e '.[dev]'" in ci_lines


@needs_planner
def test_readme_cli_commands_run() -> None:
    for command in commands("Install and run") + commands("Tour of the output"):
        words = shlex.split(command)
        if words[0] != "sysplan":
            continue
        result = CliRunner().invoke(app, words[1:])
        assert result.exit_code == 0, f"{command}: {result.stderr}"


@needs_planner
def test_readme_python_example_runs() -> None:
    for block in code_blocks("Library"):
        namespace: dict = {}
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own README


if __name__ == "__main__":
    print(options_table())
