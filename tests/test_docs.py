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


#: Verbs with an options table in README: verb -> (README section, arguments to build it).
TABLES = {
    "train": ("Options", ["--model", "x", "--cluster", "y"]),
    "export": ("Export", ["plan.json", "--to", "json"]),
    "calibrate": ("Calibrate", ["runs.csv", "--cluster", "x"]),
    "serve": ("Serve", ["--model", "x", "--cluster", "y"]),
    "profile": ("Profile", []),
    "run": ("Run", ["plan.json"]),
}


def command(verb: str):
    """The click command behind `sysplan VERB`."""
    group = typer.main.get_command(app)
    return group.get_command(None, verb)


def help_text(verb: str) -> str:
    result = CliRunner().invoke(app, [verb, "--help"])
    assert result.exit_code == 0
    return result.stdout


def help_options(verb: str) -> set[str]:
    """Every option `sysplan VERB --help` lists (both spellings of an on/off pair or alias)."""
    names: set[str] = set()
    for line in help_text(verb).splitlines():
        # an option, its alias (``--gpu-cost, --gpu-hour-cost``) or its off switch (`` / ``)
        match = re.match(r"^  (?:-[a-z], )?(--[a-z0-9-]+)(?:(?:, | / )(--[a-z0-9-]+))?", line)
        if match:
            names.update(name for name in match.groups() if name)
    return names


def _cell(text: str) -> str:
    """Markdown table cell: pipes escaped, whitespace collapsed."""
    return " ".join(text.split()).replace("|", "\\|")


def options_table(verb: str) -> str:
    """The README's options table of ``verb``, generated from the command's parameters."""
    rows = ["| option | default | meaning |", "| --- | --- | --- |"]
    cmd = command(verb)
    context = cmd.make_context(verb, list(TABLES[verb][1]))
    params = [param for param in cmd.get_params(context)
              if not param.hidden and param.param_type_name == "option"]
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


def section(heading: str) -> str:
    """The text of the README section titled ``heading``."""
    text = README.read_text()
    found = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.DOTALL | re.MULTILINE)
    assert found, f"README.md has no '## {heading}' section"
    return found[1]


def readme_table(verb: str) -> str:
    """The options table of ``verb`` as README.md has it."""
    lines = [line for line in section(TABLES[verb][0]).splitlines() if line.startswith("| ")]
    start = lines.index("| option | default | meaning |")
    table = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith("| `--") and not line.startswith("| ---"):
            break
        table.append(line)
    return "\n".join(table)


def readme_options(verb: str) -> set[str]:
    names: set[str] = set()
    for line in readme_table(verb).splitlines()[2:]:
        names.update(re.findall(r"--[a-z0-9-]+", line.split(" | ")[0]))
    return names


def code_blocks(heading: str) -> list[str]:
    """The fenced code blocks of the README section titled ``heading``."""
    return re.findall(r"^```[a-z]*\n(.*?)^```", section(heading), re.DOTALL | re.MULTILINE)


def commands(heading: str) -> list[str]:
    return [line.strip() for block in code_blocks(heading) for line in block.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("verb", list(TABLES))
def test_every_help_option_is_in_the_readme_and_back(verb: str) -> None:
    listed, documented = help_options(verb), readme_options(verb)
    assert listed, f"could not read the options of sysplan {verb} --help"
    assert listed - documented == set(), "in --help but not in README (python tests/test_docs.py)"
    assert documented - listed == set(), "in README but not in --help"


@pytest.mark.parametrize("verb", list(TABLES))
def test_readme_table_is_the_generated_one(verb: str) -> None:
    assert readme_table(verb) == options_table(verb), "regenerate it: python tests/test_docs.py"


def test_install_section_is_the_two_commands() -> None:
    """Exactly two set-up commands: one installs and runs the main job (here), one installs
    what the tests need and runs them (the Test section)."""
    assert commands("Install and run") == [
        "pip install -e . && sysplan train --model 70b --cluster frontier.yaml",
    ]
    assert commands("Test") == ["python -m pip install -e '.[dev]' && python -m pytest"]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    test_commands = commands("Test")
    assert len(test_commands) == 1
    ci_lines = [line.strip() for line in CI.read_text().splitlines()]
    assert test_commands[0] in ci_lines
    assert "set -euo pipefail" in ci_lines
    assert "python -m pip install -e '.[dev]'" in ci_lines


@needs_planner
def test_readme_cli_commands_run() -> None:
    for line in commands("Install and run") + commands("Tour of the output"):
        words = shlex.split(line.split("&&")[-1])
        if words[0] != "sysplan":
            continue
        result = CliRunner().invoke(app, words[1:])
        assert result.exit_code == 0, f"{line}: {result.stderr}"


@needs_planner
def test_readme_export_commands_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # they write out/
    lines = commands("Export")
    assert lines
    for line in lines:
        result = CliRunner().invoke(app, shlex.split(line)[1:])
        assert result.exit_code == 0, f"{line}: {result.stderr}"
    assert (tmp_path / "out/deepspeed/ds_config.json").is_file()


@needs_planner
def test_readme_python_example_runs() -> None:
    for block in code_blocks("Library"):
        namespace: dict = {}
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own README


if __name__ == "__main__":
    for verb in TABLES:
        print(f"sysplan {verb} (README section '{TABLES[verb][0]}'):\n{options_table(verb)}\n")
