"""Render a :class:`~calibench.leaderboard.aggregate.Leaderboard`: md, csv, json, latex, terminal.

md and latex use tabulate and show ``mean ± std [95 % CI]`` per metric (percentages where the
column title says %); csv and json hold the numbers as fractions, one column per statistic, for
machines. The rank column carries ``≈`` when a row is not significantly different from the row
ranked just above it (see :mod:`calibench.leaderboard.significance`). Every format says what the
intervals cover and which test gives the ``≈`` (:func:`caption_lines`).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd
from tabulate import tabulate

from calibench.leaderboard.aggregate import Leaderboard, MetricColumn
from calibench.metrics.bootstrap import INTERVAL_CONVENTION, SIGNIFICANCE_CONVENTION

__all__ = [
    "FORMATS",
    "INTERVAL_NOTE",
    "SIGNIFICANCE_NOTE",
    "caption_lines",
    "display_rows",
    "format_cell",
    "render",
    "render_csv",
    "render_json",
    "render_latex",
    "render_markdown",
    "render_terminal",
]

FORMATS = ("md", "csv", "json", "latex", "html")
TIE_MARK = "≈"
SIGNIFICANCE_NOTE = (
    f"{TIE_MARK}: not significantly different from the row ranked just above on the sort metric "
    "(Welch's t-test on the per-seed values, two-sided 5 %; seeds are the replicates, so a row "
    f"with fewer than 2 seeds is always {TIE_MARK})."
)
INTERVAL_NOTE = (
    "[95 % CI] over test-set resampling ({n_boot} resamples shared by a row's seeds; OOD sets "
    "resampled on their own), for the seed mean of the population value: for ECE, AdaECE and "
    "ECE after TS the population binned error, [max(0, T - q), T + 1.96 sd] (triangle-"
    "inequality bounds, as a percentile interval cannot hold an error of 0); other columns: "
    "percentile bootstrap."
)
IDENTITY = ("rank", "loss", "dataset", "backbone", "protocol", "seeds", "status")


def _finite(x: Any) -> bool:
    return x is not None and not pd.isna(x) and math.isfinite(float(x))


def format_cell(row: pd.Series, column: MetricColumn, *, ci: bool = True, pm: str = "±") -> str:
    """``mean ± std [lo, hi]`` in the column's unit; ``–`` when no completed run has it."""
    mean = row[f"{column.key}_mean"]
    if not _finite(mean):
        return "–"
    scale, digits = (100.0, 2) if column.percent else (1.0, 3)
    text = f"{mean * scale:.{digits}f}"
    std = row[f"{column.key}_std"]
    if _finite(std):
        text += f" {pm} {std * scale:.{digits}f}"
    lo, hi = row[f"{column.key}_ci_low"], row[f"{column.key}_ci_high"]
    if ci and _finite(lo) and _finite(hi):
        text += f" [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"
    return text


def _rank_text(row: pd.Series) -> str:
    if pd.isna(row["rank"]):
        return "–"
    tie = row.get("tie_above")
    return (
        f"{int(row['rank'])}{TIE_MARK}"
        if tie is True or (not pd.isna(tie) and bool(tie))
        else str(int(row["rank"]))
    )


def display_rows(board: Leaderboard, *, ci: bool = True, pm: str = "±") -> list[dict[str, str]]:
    """The table as strings, one dict per row, keys = column headers (for md/latex/html/rich)."""
    rows = []
    for _, row in board.table.iterrows():
        out = {
            "rank": _rank_text(row),
            "loss": str(row["loss"]),
            "dataset": str(row["dataset"]),
            "backbone": str(row["backbone"]),
            "protocol": f"{row['protocol']} v{row['protocol_version']}",
            "seeds": str(row["n_seeds"]),
            "status": str(row["status"]),
        }
        for c in board.columns:
            out[c.title] = format_cell(row, c, ci=ci, pm=pm)
        out["deviations"] = str(row["deviations"])
        rows.append(out)
    return rows


def caption_lines(board: Leaderboard) -> list[str]:
    """The caption: ranking, what a cell holds, what its interval covers, what ``≈`` means."""
    col = board.sort_column
    direction = "higher is better" if col.higher_is_better else "lower is better"
    lines = [
        f"Ranked by {col.title} ({direction}) within each protocol / dataset / backbone / "
        "deviations; cells are mean ± std over completed seeds"
        + (" [95 % CI], computed from the saved predictions." if board.n_boot else "."),
    ]
    if board.n_boot:
        lines.append(INTERVAL_NOTE.format(n_boot=board.n_boot))
    lines.append(SIGNIFICANCE_NOTE)
    return lines


def run_problem_lines(board: Leaderboard) -> list[str]:
    lines = []
    for _, row in board.table.iterrows():
        if row["problems"]:
            lines.append(f"{row['loss']} ({row['dataset']}, {row['backbone']}): {row['problems']}")
    return lines


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


def _jsonable(value: Any) -> Any:
    if value is None or value is pd.NA:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def render_json(board: Leaderboard) -> str:
    """``{"sort", "n_boot", "columns", "rows", "problems", "notes"}``; metrics as fractions."""
    frame = _numeric_frame(board)
    rows = [{k: _jsonable(v) for k, v in rec.items()} for rec in frame.to_dict(orient="records")]
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
                "interval": ("binned" if c.binned else "percentile") if board.n_boot else None,
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
        constant = [
            k
            for k in ("protocol", "dataset", "backbone", "deviations")
            if len({r[k] for r in rows}) == 1
        ]
        title = "calibench leaderboard"
        if constant:
            title += ": " + ", ".join(
                f"deviations {rows[0][k]}" if k == "deviations" else rows[0][k] for k in constant
            )
        headers = [h for h in rows[0] if h not in constant]
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


def render(board: Leaderboard, fmt: str) -> str:
    """Render to a string in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "md":
        return render_markdown(board)
    if fmt == "csv":
        return render_csv(board)
    if fmt == "json":
        return render_json(board)
    if fmt == "latex":
        return render_latex(board)
    if fmt == "html":
        from calibench.leaderboard.html import render_html

        return render_html(board)
    from calibench.errors import UsageError

    raise UsageError(f"unknown format '{fmt}'; choose one of: {', '.join(FORMATS)}")
