"""The ``calibench`` command line (typer + rich).

Each command lives in its own module and imports torch, timm or torch-uncertainty only when it
runs, so ``calibench --help`` stays fast. Errors a user can cause print one line and exit with
code 2 (usage) or 1 (a failed run or missing data); they never print a traceback.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence

import typer

try:  # typer >= 0.22 vendors its own click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exc

from calibench import __version__
from calibench.errors import CalibenchError

app = typer.Typer(
    name="calibench",
    help="Benchmark calibration losses on one protocol and publish a versioned leaderboard.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"calibench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        help="Print the version and exit.",
        callback=_version_callback,
        is_eager=True,
    ),
) -> None:
    """Benchmark calibration losses on one protocol and publish a versioned leaderboard."""


def _register_commands() -> None:
    from calibench.cli import leaderboard_cmd, registry_cmds, run_cmd

    for module in (registry_cmds, run_cmd, leaderboard_cmd):
        module.register(app)


_register_commands()


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def error(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr and return the :class:`typer.Exit` to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``calibench`` console script; returns the exit code."""
    warnings.showwarning = _one_line_warning
    command = typer.main.get_command(app)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        rv = command.main(args, prog_name="calibench", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except getattr(click_exc, "NoArgsIsHelpError", ()) as exc:
        if exc.format_message():  # rich help formatting has already printed it
            typer.echo(exc.format_message())
        return 0
    except click_exc.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "calibench"
        typer.echo(f"error: {exc.format_message()} (see '{where} --help')", err=True)
        return 2
    except click_exc.ClickException as exc:
        typer.echo(f"error: {exc.format_message()}", err=True)
        return exc.exit_code
    except CalibenchError as exc:
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except Exception as exc:
        if os.environ.get("CALIBENCH_DEBUG"):
            raise
        typer.echo(
            f"error: internal error {type(exc).__name__}: {exc} (a bug in calibench: please "
            "report it; set CALIBENCH_DEBUG=1 to see the traceback)",
            err=True,
        )
        return 1
    return rv if isinstance(rv, int) else 0
