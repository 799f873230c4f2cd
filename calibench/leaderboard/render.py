"""Render a :class:`~calibench.leaderboard.aggregate.Leaderboard`: md, csv, json, latex, terminal.

md and latex use tabulate and show the text cells of :mod:`calibench.leaderboard.cells`
(``mean ± std [95 % CI]``, rank with ``≈``) under its caption, which says what the intervals
cover and which test gives the ``≈``; csv and json hold the numbers as fractions, one column per
statistic, for machines.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tabulate import tabulate

from calibench.errors import UsageError
from calibench.leaderboard.cells import (
    TIE_MARK,
    caption_lines,
    display_rows,
    missing,
    run_problem_lines,
    shared_identity,
)
from calibench.leaderboard.html import render_html
from calibench.util import to_jsonable

if TYPE_CHECKING:
    import pandas as pd

    from calibench.leaderboard.aggregate import Leaderboard, MetricColumn

__all__ = [
    "FORMATS",
    "RENDERERS",
    "SUFFIXES",
    "render",
    "render_csv",
    "render_json",
    "render_latex",
    "render_markdown",
    "render_terminal",
]


def render_markdown(board: Leaderboard, *, title: str | None = None) -> str:
    """A GitHub-flavoured markdown table with caption, run problems and skipped records."""
    rows = display_rows(board)
    parts = [f"# {title}\n"] if title else []
    if not rows:
        parts.append("No run records found.\n")
    else:
        parts.append(tabulate(rows, headers="keys", tablefmt="github", disable_numparse=True))
        parts.append("")
        parts += [f"- {line}" for line in caption_lines(board)]
    runs_notes = run_problem_lines(board)
    if runs_notes:
        parts += ["", "Diverged / failed runs:", ""] + [f"- {line}" for line in runs_notes]
    if board.problems:
        parts += ["", f"Skipped {len(board.problems)} malformed record(s):", ""]
        parts += [f"- {p}" for p in board.problems]
    if board.notes:
        parts += ["", "Notes:", ""] + [f"- {n}" for n in board.notes]
    return "\n".join(parts).rstrip() + "\n"


def _numeric_frame(board: Leaderboard) -> pd.DataFrame:
    table = board.table
    cols = [
        "rank",
        "tie_above",
        "p_above",
        "protocol",
        "protocol_version",
        "dataset",
        "backbone",
        "loss",
        "deviations",
        "n_seeds",
        "seeds",
        "status",
        "n_completed",
        "n_diverged",
        "n_failed",
    ]
    for c in board.columns:
        cols += [f"{c.key}_{s}" for s in ("mean", "std", "ci_low", "ci_high")]
    cols += ["problems", "run_ids"]
    return table.reindex(columns=cols)


def render_csv(board: Leaderboard) -> str:
    """Numbers as fractions, one column per statistic; empty cells for missing values."""
    return _numeric_frame(board).to_csv(index=False, lineterminator="\n")


def _plain(value: Any) -> Any:
    """A cell value :func:`to_jsonable` leaves to us: ``None`` when missing (NaT), else as is."""
    return None if missing(value) else value


def _interval_kind(column: MetricColumn) -> str:
    """``binned``, ``percentile``, or a shift column's ``student-t over seeds``."""
    return getattr(column, "interval_kind", None) or ("binned" if column.binned else "percentile")


def render_json(board: Leaderboard) -> str:
    """``{"sort", "n_boot", "columns", "rows", "problems", "notes"}``; metrics as fractions."""
    # Here, not at the top: listing the formats (the CLI does at start-up) must not load torch.
    from calibench.metrics.intervals import INTERVAL_CONVENTION, SIGNIFICANCE_CONVENTION

    frame = _numeric_frame(board)
    rows = [
        {k: to_jsonable(v, fallback=_plain) for k, v in rec.items()}
        for rec in frame.to_dict(orient="records")
    ]
    doc = {
        "format": "calibench-leaderboard/1",
        "sort": board.sort,
        "n_boot": board.n_boot,
        "intervals": INTERVAL_CONVENTION if board.n_boot else None,
        "significance": SIGNIFICANCE_CONVENTION,
        "columns": [
            {
                "key": c.key,
                "title": c.title,
                "higher_is_better": c.higher_is_better,
                "percent_in_tables": c.percent,
                "interval": _interval_kind(c) if board.n_boot else None,
            }
            for c in board.columns
        ],
        "rows": rows,
        "problems": [{"path": str(p.path), "message": p.message} for p in board.problems],
        "notes": list(board.notes),
    }
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


def render_latex(board: Leaderboard) -> str:
    """A ``table`` holding a ``tabular`` (tabulate's latex_raw on escaped cells) and the caption.

    ``±`` becomes ``$\\pm$``, ``≈`` ``$\\approx$``; all text is escaped.
    """
    rows = display_rows(board, pm="\x00")
    if not rows:
        return "% no run records found\n"

    def cell(text: str) -> str:
        return (
            _latex_escape(text)
            .replace("\x00", r"$\pm$")
            .replace("±", r"$\pm$")
            .replace(TIE_MARK, r"$\approx$")
            .replace("–", "--")
        )

    headers = [cell(h) for h in rows[0]]
    body = [[cell(v) for v in r.values()] for r in rows]
    tabular = tabulate(body, headers=headers, tablefmt="latex_raw", disable_numparse=True)
    caption = " ".join(cell(line) for line in caption_lines(board))
    return f"\\begin{{table}}\n\\centering\n{tabular}\n\\caption{{{caption}}}\n\\end{{table}}\n"


def _rich_table(title: str, headers: list[str], rows: list[dict[str, str]]) -> Any:
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for header in headers:
        widest = max(len(line) for r in rows for line in r[header].splitlines() or [""])
        table.add_column(header, overflow="fold", min_width=min(widest, 16))
    for r in rows:
        table.add_row(*(r[h] for h in headers), style="red" if r["seeds"] == "0" else None)
    return table


def _natural_width(console: Any, table: Any) -> int:
    from rich.measure import Measurement

    return Measurement.get(console, console.options.update(width=10_000), table).maximum


def render_terminal(board: Leaderboard, console: Any = None, *, ci: bool = False) -> None:
    """Print rich tables (the default when stdout is a terminal).

    Compact: columns that are the same in every row (dataset, backbone, protocol, deviations)
    go into the title, and CIs are left out unless ``ci``. On a terminal too narrow for one
    table, the calibration and the OOD columns are printed as two tables; off a terminal (a log
    file) the table is printed at its natural width.
    """
    from rich.console import Console

    console = console or Console()
    rows = display_rows(board, ci=ci, pm="\n±")  # mean over std: narrow cells
    if not rows:
        console.print("No run records found.")
    else:
        shared = shared_identity(rows)
        title = "calibench leaderboard"
        if shared:
            title += ": " + ", ".join(
                f"deviations {v}" if k == "deviations" else v for k, v in shared.items()
            )
        headers = [h for h in rows[0] if h not in shared]
        table = _rich_table(title, headers, rows)
        natural = _natural_width(console, table)
        if not console.is_terminal:
            saved, console.width = console.width, max(console.width, natural)
            try:
                console.print(table)
            finally:
                console.width = saved
        elif natural <= console.width:
            console.print(table)
        else:
            ood = {c.title for c in board.columns if c.ood}
            first = [h for h in headers if h not in ood]
            console.print(_rich_table(title, first, rows))
            if ood:
                second = ["rank", "loss", *(h for h in headers if h in ood)]
                console.print(_rich_table(f"{title}: OOD detection", second, rows))
        for line in caption_lines(board):
            console.print(line, style="dim", highlight=False)
    for line in run_problem_lines(board):
        console.print(f"[yellow]run problem:[/] {line}", highlight=False)
    for p in board.problems:
        console.print(f"[red]skipped record:[/] {p}", highlight=False)
    for n in board.notes:
        console.print(f"note: {n}", style="dim", highlight=False)


RENDERERS: dict[str, Callable[[Leaderboard], str]] = {
    "md": render_markdown,
    "csv": render_csv,
    "json": render_json,
    "latex": render_latex,
    "html": render_html,
}
"""Every file format, by the name ``--format`` takes, and the function that writes it."""
FORMATS = tuple(RENDERERS)
SUFFIXES = {
    ".md": "md",
    ".csv": "csv",
    ".json": "json",
    ".tex": "latex",
    ".html": "html",
    ".htm": "html",
}
"""The format an output file's suffix (lower-cased) asks for."""


def render(board: Leaderboard, fmt: str) -> str:
    """Render to a string in ``fmt`` (a key of :data:`RENDERERS`)."""
    if fmt not in RENDERERS:
        raise UsageError(f"unknown format '{fmt}'; choose one of: {', '.join(RENDERERS)}")
    return RENDERERS[fmt](board)
