"""The `sysplan` command: global options, one sub-command per verb, and error handling.

Every failure a user can fix ends as one line on stderr (house style 7): a ``SysplanError``
prints ``error: <message>`` and exits with its ``exit_code`` (2 bad input, 1 nothing fits);
a click usage error (unknown option, bad choice, missing option) prints one line and exits 2.
Tracebacks are shown only with ``sysplan --debug``.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from sysplan.core.errors import SysplanError
from sysplan.core.version import __version__

#: click's exception classes as typer uses them (recent typer vendors click as typer._click).
_click_errors = importlib.import_module(typer.BadParameter.__module__)
#: click >= 8.2 raises this for a bare `sysplan`; older click printed help and exited 0.
_NO_ARGS_IS_HELP = getattr(_click_errors, "NoArgsIsHelpError", ())


class _State:
    """Per-invocation global options (reset by every ``main``)."""

    debug = False


#: Sub-commands: name -> (module under sysplan.cli, function, its help constant, whether a
#: bare call prints help), and the one-line summary `sysplan --help` lists. A sub-command's
#: module (and numpy, pydantic and the cost models it pulls in) is imported only when that
#: sub-command runs, so `sysplan --help` starts in a fraction of a second (tests check the
#: summaries against each module's help).
COMMANDS: dict[str, tuple[str, str, str, bool]] = {
    "train": ("train", "train", "HELP", True),
    "serve": ("serve", "serve", "HELP", True),
    "export": ("export", "export", "HELP", True),
    "calibrate": ("calibrate", "calibrate", "HELP", True),
    "profile": ("profile", "profile", "HELP", False),
    "run": ("run", "run", "HELP", True),
    "report": ("report", "report", "HELP", True),
    "models": ("catalog", "models", "MODELS_HELP", False),
    "clusters": ("catalog", "clusters", "CLUSTERS_HELP", False),
    "gpus": ("catalog", "gpus", "GPUS_HELP", False),
}
SUMMARIES = {
    "train": "Rank the best parallel configurations for training a model on a cluster.",
    "serve": "Find the cheapest deployment that serves a workload within its latency SLO.",
    "export": "Write the launch files of a saved plan: Megatron-LM, DeepSpeed, torchtitan, "
              "vLLM, SGLang.",
    "calibrate": "Fit the cost model's free factors to measured training steps or serving "
                 "runs.",
    "profile": "Measure this node (GEMMs, attention, bandwidth, eager ops, collectives); write a "
               "profile.",
    "run": "Run saved plans here with the reference executor and compare with the prediction.",
    "report": "Write one self-contained HTML page of a saved plan: tables, explanation, "
              "pictures.",
    "models": "List the model catalog: canonical names, aliases and parameter counts.",
    "clusters": "List the cluster catalog: GPU, node size, default allocation and fabric "
                "tiers.",
    "gpus": "List the GPU catalog: memory, HBM bandwidth, dense peak FLOP/s per dtype, power.",
}


class PanelCommand(TyperCommand):
    """Plain (pipe-friendly) help whose options are grouped under their panel headings
    (``rich_help_panel`` of each option; the rest under "Options"), in first-seen order."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        groups: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                panel = getattr(param, "rich_help_panel", None) or "Options"
                groups.setdefault(panel, []).append(record)
        for panel, rows in groups.items():
            with formatter.section(panel):
                formatter.write_dl(rows)


def load_command(name: str) -> Any:
    """The click command of sub-command ``name``, built from its module on first use."""
    module_name, function, help_name, bare_is_help = COMMANDS[name]
    module = importlib.import_module(f"sysplan.cli.{module_name}")
    single = typer.Typer(add_completion=False, rich_markup_mode=None,
                         pretty_exceptions_enable=False)
    single.command(name=name, help=getattr(module, help_name), cls=PanelCommand,
                   no_args_is_help=bare_is_help)(getattr(module, function))
    return typer.main.get_command(single)


class SysplanGroup(TyperGroup):
    """Runs click without standalone mode and turns every user error into one line; loads
    each sub-command's module only when it is the one invoked (``COMMANDS``)."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS) + [n for n in super().list_commands(ctx) if n not in COMMANDS]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.add_command(load_command(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """The command list from the summaries, without importing every sub-command."""
        rows = [(name, SUMMARIES[name]) for name in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        _State.debug = False
        args = list(sys.argv[1:] if args is None else args)
        # `--debug` is a global option, also accepted after the sub-command (`sysplan train
        # ... --debug`); up to a `--` that ends the options
        end = args.index("--") if "--" in args else len(args)
        if "--debug" in args[:end]:
            _State.debug = True
            args = [a for a in args[:end] if a != "--debug"] + args[end:]
        code = _run(self, args, prog_name, complete_var, extra)
        if standalone_mode:
            sys.exit(code)
        return code


def _run(
    group: TyperGroup,
    args: Sequence[str] | None,
    prog_name: str | None,
    complete_var: str | None,
    extra: dict[str, Any],
) -> int:
    """Invoke the command line and return the process exit code."""
    try:
        result = TyperGroup.main(
            group, args=args, prog_name=prog_name or "sysplan", complete_var=complete_var,
            standalone_mode=False, **extra,
        )
    except SysplanError as error:
        if _State.debug:
            traceback.print_exc()
        _error_line(str(error))
        return error.exit_code
    except _NO_ARGS_IS_HELP as error:
        typer.echo(error.format_message())
        return 0
    except _click_errors.UsageError as error:
        if _State.debug:
            traceback.print_exc()
        _error_line(_usage_message(error))
        return error.exit_code
    except _click_errors.ClickException as error:
        _error_line(error.format_message())
        return error.exit_code
    except typer.Abort:
        _error_line("aborted")
        return 1
    return result if isinstance(result, int) else 0


def _usage_message(error: Exception) -> str:
    """One line for a click usage error; a bad value reads ``--option value: reason``."""
    param = getattr(error, "param", None)
    if not isinstance(error, _click_errors.BadParameter) or param is None:
        return error.format_message()
    name = (param.opts or [param.name or "value"])[0]
    if isinstance(error, _click_errors.MissingParameter):
        where = f" (see {error.ctx.command_path} --help)" if error.ctx else ""
        return f"{name} is required{where}"
    return f"{name} {error.message}"


def _error_line(message: str) -> None:
    """Print ``error: message`` as a single line on stderr."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)


app = typer.Typer(
    name="sysplan",
    cls=SysplanGroup,
    help="Plan parallel configurations for large-model training and serving.",
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"sysplan {__version__}")
        raise typer.Exit(0)


@app.callback()
def _global_options(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show a traceback when a command fails.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True,
            help="Print the sysplan version and exit.",
        ),
    ] = False,
) -> None:
    """Plan parallel configurations for large-model training and serving."""
    _State.debug = _State.debug or debug




def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sysplan`` console script and ``python -m sysplan``."""
    command = typer.main.get_command(app)
    return command.main(args=argv, prog_name="sysplan", standalone_mode=False)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
