"""Every row against a baseline row (cross-entropy by default): difference and significance.

The leaderboard's ``≈`` compares adjacent ranks only; a reader asks instead "is this loss better
or worse calibrated than CE?". For each row, metric and section (protocol / dataset / backbone /
deviations), :func:`compare_to_baseline` gives

- ``delta``: the row's seed mean minus the baseline's seed mean (as the metric's units:
  fractions), and ``n`` / ``n_base``, the completed seeds behind each;
- ``p``: Welch's t-test on the per-seed values (seeds are the unit of replication, as for the
  ``≈`` mark: :func:`calibench.leaderboard.significance.compare_adjacent`), two-sided;
- ``q``: the Benjamini-Hochberg adjusted p-value over all rows of the section for that metric
  (``scipy.stats.false_discovery_control``), so that "significant" at ``q < 0.05`` keeps the
  expected share of false claims among the claims of one column at or below 5 % however many
  losses are compared (Benjamini & Hochberg 1995);
- ``verdict``: ``better`` / ``worse`` when ``q < 0.05`` (by the metric's direction), else
  ``≈``; rows with fewer than 2 seeds on either side are ``≈`` with no p-value.

No model code runs: the per-seed values come from the board's runs (their saved files, or the
records' numbers when a board is built from published records alone).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from calibench.errors import UsageError
from calibench.leaderboard.aggregate import SECTION_KEYS
from calibench.leaderboard.significance import ALPHA, compare_adjacent

if TYPE_CHECKING:
    import pandas as pd

    from calibench.leaderboard.aggregate import Leaderboard

__all__ = ["BASELINE_CONVENTION", "compare_to_baseline", "render_baseline_markdown"]

BASELINE_CONVENTION = (
    "Each row against the baseline row of its section: delta = row seed mean - baseline seed "
    "mean; Welch's t-test on the per-seed values (two-sided); q = Benjamini-Hochberg adjusted p "
    "over the rows of the section, per metric; better / worse when q < 0.05, else ≈ (also when "
    "either side has fewer than 2 completed seeds)."
)


def _bh(p: Sequence[float]) -> list[float]:
    from scipy import stats

    finite = [i for i, v in enumerate(p) if math.isfinite(v)]
    out = [float("nan")] * len(p)
    if finite:
        adjusted = stats.false_discovery_control(np.asarray([p[i] for i in finite]), method="bh")
        for i, q in zip(finite, adjusted, strict=True):
            out[i] = float(q)
    return out


def compare_to_baseline(
    board: Leaderboard, baseline: str = "ce", metrics: Sequence[str] | None = None
) -> pd.DataFrame:
    """One row per (section, loss != baseline, metric): see the module docstring.

    ``metrics`` are column keys of the board (default: every column). Raises
    :class:`~calibench.errors.UsageError` for an unknown metric or a section without the
    baseline row.
    """
    import pandas as pd

    columns = {c.key: c for c in board.columns}
    keys = list(metrics) if metrics is not None else list(columns)
    unknown = [k for k in keys if k not in columns]
    if unknown:
        raise UsageError(
            f"unknown metric(s) {', '.join(unknown)}; the board has {', '.join(columns)}"
        )
    done = board.runs[board.runs["status"] == "completed"]
    rows = []
    for section, runs in done.groupby(list(SECTION_KEYS), sort=False):
        losses = list(dict.fromkeys(runs["loss"]))
        if baseline not in losses:
            raise UsageError(
                f"no completed {baseline!r} runs in {' / '.join(map(str, section))}; pass "
                f"--baseline with one of {', '.join(losses)}"
            )
        base = runs[runs["loss"] == baseline]
        for key in keys:
            column = columns[key]
            b = [float(v) for v in base[key] if math.isfinite(v)]
            block = []
            for loss in losses:
                if loss == baseline:
                    continue
                v = [float(x) for x in runs.loc[runs["loss"] == loss, key] if math.isfinite(x)]
                result = compare_adjacent(v, b)
                delta = (np.mean(v) - np.mean(b)) if v and b else float("nan")
                block.append(
                    {
                        **dict(zip(SECTION_KEYS, section, strict=True)),
                        "loss": loss,
                        "metric": key,
                        "title": column.title,
                        "higher_is_better": column.higher_is_better,
                        "mean": float(np.mean(v)) if v else float("nan"),
                        "baseline_mean": float(np.mean(b)) if b else float("nan"),
                        "delta": float(delta),
                        "n": len(v),
                        "n_base": len(b),
                        "p": float("nan") if result.p is None else result.p,
                    }
                )
            for row, q in zip(block, _bh([r["p"] for r in block]), strict=True):
                row["q"] = q
                if not (q < ALPHA) or row["delta"] == 0:
                    row["verdict"] = "≈"
                else:
                    up = row["delta"] > 0
                    row["verdict"] = "better" if up == column.higher_is_better else "worse"
            rows.extend(block)
    return pd.DataFrame(rows)


def _cell(row: pd.Series, percent: bool) -> str:
    if not math.isfinite(row["delta"]):
        return "–"
    scale, unit = (100.0, " pt") if percent else (1.0, "")
    mark = {"better": " ▲", "worse": " ▼"}.get(row["verdict"], " ≈")
    q = "" if not math.isfinite(row["q"]) else f" (q {row['q']:.2g})"
    return f"{row['delta'] * scale:+.2f}{unit}{mark}{q}"


def render_baseline_markdown(frame: pd.DataFrame, board: Leaderboard, baseline: str) -> str:
    """A markdown table: one row per loss, one column per metric, cells ``delta ▲/▼/≈ (q)``."""
    from tabulate import tabulate

    percent = {c.key: c.percent for c in board.columns}
    titles = {c.key: c.title.removesuffix(" %").replace(" % ", " ") for c in board.columns}
    parts = []
    for section, block in frame.groupby(list(SECTION_KEYS), sort=False):
        metric_order = list(dict.fromkeys(block["metric"]))
        table = []
        for loss, rows in block.groupby("loss", sort=False):
            by_metric = rows.set_index("metric")
            cells = {"loss": loss, "seeds": int(rows["n"].max())}
            for key in metric_order:
                r = by_metric.loc[key]
                cells[f"Δ {titles[key]}"] = _cell(r, percent.get(key, False))
            table.append(cells)
        base = block.iloc[0]
        means = []
        for key in metric_order:
            value = block[block["metric"] == key].iloc[0]["baseline_mean"]
            shown = f"{value * 100:.2f} %" if percent.get(key, False) else f"{value:.4f}"
            means.append(f"{titles[key]} {shown}")
        parts.append(f"## {' / '.join(map(str, section))} against {baseline}\n")
        parts.append(f"{baseline} ({int(base['n_base'])} seeds): {', '.join(means)}.\n")
        parts.append(tabulate(table, headers="keys", tablefmt="github", disable_numparse=True))
        parts.append("")
    parts.append(
        "Cells: the loss's seed mean minus the baseline's (percentage points for % metrics); "
        "▲ significantly better, ▼ significantly worse, ≈ not significantly different. "
        + BASELINE_CONVENTION
    )
    return "\n".join(parts).rstrip() + "\n"
