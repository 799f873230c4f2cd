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
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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


_SEVERITY_KEY = re.compile(r"^(acc|ece|adaece|nll)(_ts)?@s([1-9][0-9]*)$")
_SEVERITY_TITLES = {"acc": "acc", "ece": "ECE", "adaece": "AdaECE", "nll": "NLL"}


@dataclass(frozen=True)
class _Metric:
    key: str
    title: str
    higher_is_better: bool
    percent: bool
    shift: tuple[str, str] | None = None
    """``(metric, severity)`` of a severity key, read from the records' shift summaries."""


def _severity_value(record: Any, metric: str, severity: str) -> float:
    summary = ((record.data.get("metrics") or {}).get("shift") or {}).get("summary") or {}
    value = (summary.get("by_severity") or {}).get(severity, {}).get(metric)
    return float("nan") if value is None else float(value)


def _metrics(board: Leaderboard, keys: Sequence[str]) -> list[_Metric]:
    """Board columns by key, and ``<metric>[_ts]@s<N>``: a shift grid's mean over corruptions
    at severity N (``ece@s5``, ``ece_ts@s5``, ``acc@s3``), read from the records."""
    columns = {c.key: c for c in board.columns}
    out, unknown = [], []
    for key in keys:
        match = _SEVERITY_KEY.match(key)
        if key in columns:
            c = columns[key]
            out.append(_Metric(key, c.title, c.higher_is_better, c.percent))
        elif match:
            base, ts, severity = match.groups()
            ts = ts or ""
            title = (
                f"{_SEVERITY_TITLES[base]}{' after TS' if ts else ''} at shift severity {severity}"
            )
            out.append(_Metric(key, title, base == "acc", base != "nll", (base + ts, severity)))
        else:
            unknown.append(key)
    if unknown:
        raise UsageError(
            f"unknown metric(s) {', '.join(unknown)}; the board has {', '.join(columns)}, and "
            "<acc|ece|adaece|nll>[_ts]@s<N> reads a shift grid's severity N"
        )
    return out


def compare_to_baseline(
    board: Leaderboard, baseline: str = "ce", metrics: Sequence[str] | None = None
) -> pd.DataFrame:
    """One row per (section, loss != baseline, metric), losses in name order (not the order of
    the run folders): see the module docstring.

    ``metrics`` are column keys of the board (default: every column) or severity keys
    (``ece@s5``: see :func:`_metrics`). Raises :class:`~calibench.errors.UsageError` for an
    unknown metric or a section without the baseline row.
    """
    import pandas as pd

    wanted = _metrics(
        board, list(metrics) if metrics is not None else [c.key for c in board.columns]
    )
    columns = {m.key: m for m in wanted}
    keys = list(columns)
    done = board.runs[board.runs["status"] == "completed"].copy()
    for m in wanted:
        if m.shift is not None:
            done[m.key] = [_severity_value(r, *m.shift) for r in done["record"]]
    rows = []
    for section, runs in done.groupby(list(SECTION_KEYS), sort=False):
        losses = sorted(set(runs["loss"]))
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
                        "percent": column.percent,
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


def render_baseline_markdown(frame: pd.DataFrame, baseline: str) -> str:
    """A markdown table: one row per loss, one column per metric, cells ``delta ▲/▼/≈ (q)``."""
    from tabulate import tabulate

    first = frame.drop_duplicates("metric").set_index("metric")
    percent = {k: bool(first.loc[k, "percent"]) for k in first.index}
    titles = {
        k: str(first.loc[k, "title"]).removesuffix(" %").replace(" % ", " ") for k in first.index
    }
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
