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
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap resamples."),
    skip_invalid: bool = typer.Option(
        False,
        "--skip-invalid",
        help="Publish even if some records are malformed (they are left out).",
    ),
    allow_unchanged: bool = typer.Option(
        False, "--allow-unchanged", help="Publish a new version even if nothing changed."
    ),
) -> None:
    """Write a new immutable version ROOT/<protocol>/v<N>/: records, LEADERBOARD.md/.csv/.json/
    .html, CHANGES.md, reliability diagrams, the shift plot and version.json."""
    from calibench.leaderboard import publish
    from calibench.leaderboard.aggregate import check_n_boot

    check_n_boot(bootstrap, "--bootstrap")

    result = publish(
        _results_dir(results),
        protocol=protocol,
        root=root,
        n_boot=bootstrap,
        seed=seed,
        sort=sort,
        skip_invalid=skip_invalid,
        allow_unchanged=allow_unchanged,
    )
    typer.echo(
        f"published {result.protocol} v{result.version} ({result.n_records} records) at {result.path}"
    )


@leaderboard_app.command("compare")
def compare_cmd(
    results: Path = typer.Option(
        None,
        "--results",
        "-r",
        help="Results folder, or a published version's records/ folder. " + _RESULTS_HELP,
    ),
    baseline: str = typer.Option(
        "ce", "--baseline", "-b", help="The row every loss is tested against."
    ),
    metrics: str = typer.Option(
        "acc,ece,ece_ts", "--metrics", "-m", help="Comma-separated column keys."
    ),
    protocol: str = typer.Option(None, "--protocol", "-p", help="Only this protocol's records."),
) -> None:
    """Every loss against a baseline (default ce): difference of seed means, Welch's t-test over
    seeds, Benjamini-Hochberg across losses; markdown to stdout."""
    from calibench.leaderboard import build_leaderboard
    from calibench.leaderboard.baseline import compare_to_baseline, render_baseline_markdown

    keys = [k.strip() for k in metrics.split(",") if k.strip()]
    board = build_leaderboard(_results_dir(results), protocol=protocol, n_boot=0)
    frame = compare_to_baseline(board, baseline, keys)
    typer.echo(render_baseline_markdown(frame, baseline), nl=False)


@leaderboard_app.command("show")
def show_cmd(
    protocol: str = typer.Argument("small", help="Protocol of the published leaderboard."),
    version: int = typer.Option(
        None, "--version", "-v", help="Published version; default: latest."
    ),
    root: Path = typer.Option(
        Path("leaderboards"), "--root", help="Where versions are: ROOT/<protocol>/v<N>/."
    ),
    fmt: str = typer.Option("md", "--format", "-f", help="md, csv, json or html: which file."),
) -> None:
    """Print a published leaderboard (no GPU, dataset or network needed): the file
    ROOT/<protocol>/v<N>/LEADERBOARD.<format> as it was published."""
    from calibench.leaderboard.versions import TABLES, existing_versions
    from calibench.spec import slug

    names = {Path(t).suffix[1:]: t for t in TABLES}
    if fmt not in names:
        raise UsageError(f"--format must be one of {', '.join(names)}, got {fmt!r}")
    protocol_dir = root / slug(protocol)
    versions = existing_versions(protocol_dir)
    if not versions:
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        hint = f"published protocols there: {', '.join(found)}" if found else "none published"
        raise UsageError(
            f"no published version under {protocol_dir} ({hint}); run this from a calibench "
            "checkout or pass --root"
        )
    chosen = versions[-1] if version is None else version
    if chosen not in versions:
        raise UsageError(
            f"{protocol} has no v{chosen}; published: {', '.join(f'v{v}' for v in versions)}"
        )
    path = protocol_dir / f"v{chosen}" / names[fmt]
    if not path.is_file():
        raise UsageError(f"{path} is missing (published before {names[fmt]} existed?)")
    typer.echo(path.read_text(encoding="utf-8"), nl=False)


@leaderboard_app.command("verify")
def verify_cmd(
    version_dir: Path = typer.Argument(
        ..., help="A published version, e.g. leaderboards/small/v1."
    ),
    results: Path = typer.Option(
        None, "--results", "-r", help="The results folder it was published from. " + _RESULTS_HELP
    ),
) -> None:
    """Render a published version again from its runs' saved predictions and compare it with the
    published files byte for byte (exit 1 on any difference)."""
    from calibench.leaderboard.versions import verify

    diffs = verify(version_dir, _results_dir(results))
    if diffs:
        for line in diffs:
            typer.echo(f"differs: {line}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{version_dir}: every rendered file reproduces byte for byte")


def register(app: typer.Typer) -> None:
    app.add_typer(leaderboard_app, name="leaderboard")
