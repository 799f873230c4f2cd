"""``calibench list KIND`` and ``calibench plugins``: what is registered, and from where."""

from __future__ import annotations

import json
import warnings
from enum import Enum
from pathlib import Path

import typer

from calibench.errors import UnknownNameError
from calibench.plugins import PluginWarning
from calibench.registry import KINDS, get_registry, plugin_statuses


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


def _defaults_text(defaults: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in defaults.items()) or "-"


def list_cmd(
    kind: str = typer.Argument(
        ..., help=f"What to list: one of {', '.join(KINDS)}.", show_default=False
    ),
    pattern: str = typer.Option("*", "--pattern", "-p", help="fnmatch pattern on names."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help="table or json."),
) -> None:
    """List registered losses, backbones, datasets, OOD sets or shift suites."""
    if kind not in KINDS:
        raise UnknownNameError(f"unknown kind '{kind}'; valid kinds: {', '.join(KINDS)}")
    listing = get_registry(kind).entries(pattern)
    rows = [dict(e.as_dict(), name=name) for name, e in listing.items()]
    if fmt is OutputFormat.json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"calibench {kind} ({len(rows)})", show_lines=False)
    table.add_column("name", no_wrap=True, style="bold")
    for col in ("summary", "reference", "defaults"):
        table.add_column(col, overflow="fold", ratio=1)
    table.add_column("source", no_wrap=True)
    for name, e in listing.items():
        cells = (name, e.summary, e.reference or "-", _defaults_text(e.defaults), e.source.label())
        table.add_row(*(escape(c) for c in cells))
    Console().print(table)


def plugins_cmd(
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help="table or json."),
) -> None:
    """Show every discovered plugin entry point, with status ok / error and the error text."""
    with warnings.catch_warnings():  # this command reports the failures itself
        warnings.simplefilter("ignore", PluginWarning)
        statuses = plugin_statuses()
    if fmt is OutputFormat.json:
        typer.echo(json.dumps([s.as_dict() for s in statuses], indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    if not statuses:
        console.print(
            "No calibench plugins installed (entry-point groups: "
            + ", ".join(f"calibench.{k}" for k in KINDS)
            + ")."
        )
        return
    table = Table(title=f"calibench plugins ({len(statuses)})")
    for col in ("group", "entry point", "distribution", "status", "registered / error"):
        table.add_column(col, overflow="fold")
    for s in statuses:
        status = "[green]ok[/]" if s.status == "ok" else "[red]error[/]"
        detail = s.error if s.error else ", ".join(s.registered)
        table.add_row(
            s.group,
            escape(f"{s.name} = {s.value}"),
            escape(f"{s.distribution} {s.version}"),
            status,
            escape(detail),
        )
    console.print(table)


def protocols_cmd(
    ctx: typer.Context,
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help="table or json."),
) -> None:
    """List the versioned protocols (shipped and $CALIBENCH_PROTOCOLS); see also 'protocols hash'."""
    if ctx.invoked_subcommand is not None:
        return
    from calibench.protocols import list_protocols

    protocols = list_protocols()
    if fmt is OutputFormat.json:
        rows = [dict(p.to_dict(), path=str(p.path) if p.path else None) for p in protocols]
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"calibench protocols ({len(protocols)})")
    table.add_column("protocol", no_wrap=True, style="bold")
    for col in ("dataset", "epochs", "batch", "schedule", "reference"):
        table.add_column(col, overflow="fold")
    table.add_column("content hash", no_wrap=True)
    for p in protocols:
        sched = p.train.schedule
        schedule = sched.name + (f" {list(sched.milestones)}" if sched.milestones else "")
        table.add_row(
            p.label,
            p.data.dataset,
            str(p.train.epochs),
            str(p.train.batch_size),
            escape(schedule),
            escape(p.reference),
            p.content_hash.removeprefix("sha256:")[:12],
        )
    Console().print(table)


def protocol_hash_cmd(
    file: Path = typer.Argument(..., help="A protocol .toml file.", show_default=False),
    write: bool = typer.Option(
        False, "--write", "-w", help="Fill in or replace the file's content_hash (atomically)."
    ),
) -> None:
    """Print the content_hash of a protocol file's content; with --write, put it in the file."""
    from calibench.protocols import file_content_hash, write_content_hash

    recorded, actual = write_content_hash(file) if write else file_content_hash(file)
    typer.echo(actual)
    if recorded == actual:
        return
    if write:
        note = "added content_hash" if recorded is None else f"replaced content_hash {recorded}"
    elif recorded is None:
        note = "has no content_hash; --write adds it"
    else:
        note = f"records content_hash {recorded}; --write replaces it"
    if recorded is not None:
        note += " (if that version was published, bump `version` too)"
    typer.echo(f"{file}: {note}", err=True)


def register(app: typer.Typer) -> None:
    app.command("list")(list_cmd)
    app.command("plugins")(plugins_cmd)
    protocols = typer.Typer(invoke_without_command=True, add_completion=False)
    protocols.callback()(protocols_cmd)
    protocols.command("hash")(protocol_hash_cmd)
    app.add_typer(protocols, name="protocols")
