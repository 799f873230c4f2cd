"""A leaderboard as text cells: the one place a value, an interval, a rank or the caption is
written out, for every format (:mod:`.render`, :mod:`.html`) and for ``CHANGES.md``
(:mod:`.versions`).

A metric cell is ``mean ± std [lo, hi]`` in the column's unit (percent with 2 decimals where
the title says %, else 3 decimals); ``–`` when no completed run has the value. The rank carries
``≈`` when the row is not significantly different from the row ranked just above it (see
:mod:`calibench.leaderboard.significance`). :func:`caption_lines` says what the intervals cover
and which test gives the ``≈``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from calibench.leaderboard.aggregate import Leaderboard, MetricColumn

__all__ = [
    "INTERVAL_NOTE",
    "SHAREABLE",
    "SIGNIFICANCE_NOTE",
    "TIE_MARK",
    "caption_lines",
    "display_rows",
    "format_cell",
    "interval_text",
    "missing",
    "run_problem_lines",
    "shared_identity",
]

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
SHAREABLE = ("protocol", "dataset", "backbone", "deviations")
"""Identity columns that compact views (terminal, HTML) move into the title when every row
holds the same value."""


def missing(value: object) -> bool:
    """Whether a table value is absent: None, NaN or pandas' NA."""
    # pandas is loaded with any board; imported here so that listing the formats (the CLI does
    # at start-up) does not load it.
    import pandas as pd

    return bool(pd.isna(value))


def _finite(value: Any) -> bool:
    return not missing(value) and math.isfinite(float(value))


def _in_unit(value: float, column: MetricColumn) -> str:
    return f"{value * 100:.2f}" if column.percent else f"{value:.3f}"


def interval_text(row: pd.Series, column: MetricColumn) -> str | None:
    """``[lo, hi]`` in the column's unit; ``None`` when the row has no interval for it."""
    lo, hi = row[f"{column.key}_ci_low"], row[f"{column.key}_ci_high"]
    if not (_finite(lo) and _finite(hi)):
        return None
    return f"[{_in_unit(lo, column)}, {_in_unit(hi, column)}]"


def format_cell(row: pd.Series, column: MetricColumn, *, ci: bool = True, pm: str = "±") -> str:
    """``mean ± std [lo, hi]`` in the column's unit; ``–`` when no completed run has it."""
    mean = row[f"{column.key}_mean"]
    if not _finite(mean):
        return "–"
    text = _in_unit(mean, column)
    std = row[f"{column.key}_std"]
    if _finite(std):
        text += f" {pm} {_in_unit(std, column)}"
    interval = interval_text(row, column) if ci else None
    if interval:
        text += f" {interval}"
    return text


def _rank_text(row: pd.Series) -> str:
    if missing(row["rank"]):
        return "–"
    tie = row.get("tie_above")
    tied = not missing(tie) and bool(tie)
    return f"{int(row['rank'])}{TIE_MARK if tied else ''}"


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


def shared_identity(rows: list[dict[str, str]]) -> dict[str, str]:
    """The :data:`SHAREABLE` columns that hold one value in every row of ``rows``, with it."""
    return {k: rows[0][k] for k in SHAREABLE if rows and len({r[k] for r in rows}) == 1}


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
    """One line per row with diverged or failed runs: the row and why each run stopped."""
    return [
        f"{row['loss']} ({row['dataset']}, {row['backbone']}): {row['problems']}"
        for _, row in board.table.iterrows()
        if row["problems"]
    ]
