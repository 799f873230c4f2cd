"""``calibench leaderboard``: aggregate run records into a table; ``... publish`` a version."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path

import typer

from calibench.atomic import atomic_write_bytes
from calibench.errors import UsageError
from calibench.leaderboard.render import FORMATS, SUFFIXES

# typer offers an Enum's values as the choices of --format.
Format = Enum("Format", {name: name for name in FORMATS}, type=str)  # type: ignore[misc]

leaderboard_app = typer.Typer(
    help="Aggregate run records into a leaderboard, or publish a versioned one.",
    no_args_is_help=False,
    invoke_without_command=True,
)

_RESULTS_HELP = (
    "Results folder written by 'calibench run' (RESULTS/<protocol>/<run_id>/); "
    "default: $CALIBENCH_RESULTS or ./results."
)


def _results_dir(results: Path | None) -> Path:
    if results is not None:
        return results
    from calibench.runner.plan import default_results_dir  # imports the runner: only if needed

    return default_results_dir()


@leaderboard_app.callback()
def leaderboard_cmd(
    ctx: typer.Context,
    results: Path = typer.Option(None, "--results", "-r", help=_RESULTS_HELP),
    protocol: str = typer.Option(None, "--protocol", "-p", help="Only this protocol's records."),
    sort: str = typer.Option(
        "ece", "--sort", help="Metric to rank by: acc, ece, adaece, nll, ece_ts, svhn_auroc, ..."
    ),
    fmt: Format = typer.Option(
        None,
        "--format",
        "-f",
        help=f"{', '.join(FORMATS[:-1])} or {FORMATS[-1]}; default: a table on a terminal, md "
        "otherwise (or from the --output suffix).",
    ),
    output: Path = typer.Option(None, "--output", "-o", help="Write to this file, not stdout."),
    bootstrap: int = typer.Option(
        1000,
        "--bootstrap",
        help="Bootstrap resamples of the test set for the 95 % intervals; 0: no intervals "
        "(the ≈ mark, Welch's t-test over seeds, needs none).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap resamples."),
) -> None:
    """Show the leaderboard of the records under --results (mean ± std over seeds).

    Every value and interval is computed from each run's saved test predictions and OOD
    scores; no loss is needed, so runs of an uninstalled plugin loss keep all their columns.
    """
    if ctx.invoked_subcommand is not None:
        return
    results = _results_dir(results)
    from calibench.leaderboard import build_leaderboard, render, render_terminal
    from calibench.leaderboard.aggregate import check_n_boot

    check_n_boot(bootstrap, "--bootstrap")
    name = fmt.value if fmt is not None else None
    if name is None and output is not None:
        name = SUFFIXES.get(output.suffix.lower())
        if name is None:
            raise UsageError(
                f"cannot tell the format from '{output.name}'; pass --format {'|'.join(FORMATS)}"
            )
    board = build_leaderboard(results, protocol=protocol, sort=sort, n_boot=bootstrap, seed=seed)
    if name is None and output is None and sys.stdout.isatty():
        render_terminal(board)
        return
    for p in board.problems:
        typer.echo(f"warning: skipped malformed record {p}", err=True)
    text = render(board, name or "md")
    if output is None:
        typer.echo(text, nl=False)
        return
    atomic_write_bytes(output, text.encode("utf-8"))
    typer.echo(f"wrote {output}", err=True)


@leaderboard_app.command("publish")
def publish_cmd(
    results: Path = typer.Option(None, "--results", "-r", help=_RESULTS_HELP),
    protocol: str = typer.Option(
        None, "--protocol", "-p", help="Protocol to publish (needed when records hold several)."
    ),
    root: Path = typer.Option(
        Path("leaderboards"), "--root", help="Where versions go: ROOT/<protocol>/v<N>/."
    ),
    sort: str = typer.Option("ece", "--sort", help="Metric to rank by."),
    bootstrap: int = typer.Option(
        1000, "--bootstrap", help="Bootstrap resamples for the 95 % intervals; 0: none."
    ),
    skip_invalid: bool = typer.Option(
        False,
        "--skip-invalid",
        help="Publish even if some records are malformed (they are left out).",
    ),
    allow_unchanged: bool = typer.Option(
        False, "--allow-unchanged", help="Publish a new version even if nothing changed."
    ),
) -> None:
    """Write a new immutable version ROOT/<protocol>/v<N>/ (records, LEADERBOARD.md, CSV, CHANGES.md)."""
    from calibench.leaderboard import publish
    from calibench.leaderboard.aggregate import check_n_boot

    check_n_boot(bootstrap, "--bootstrap")

    result = publish(
        _results_dir(results),
        protocol=protocol,
        root=root,
        n_boot=bootstrap,
        sort=sort,
        skip_invalid=skip_invalid,
        allow_unchanged=allow_unchanged,
    )
    typer.echo(
        f"published {result.protocol} v{result.version} ({result.n_records} records) at {result.path}"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(leaderboard_app, name="leaderboard")
