"""Records → leaderboard rows: group seeds, mean ± std, status counts, ranks, intervals, ≈ marks.

A row is one ``(protocol, protocol version, dataset, backbone, loss label, deviations)``: runs
that deviate from the protocol (``--epochs 1``) are never averaged with runs that follow it. Rows
are ranked within a *section* (the same key without the loss), by the sort metric's mean over
completed seeds. Diverged and failed runs are counted in the ``status`` column (``2 completed,
1 diverged``) and their reasons kept; a row with no completed run is listed, unranked, last.
Standard deviations are the sample std over seeds (``ddof=1``; blank for one seed).

Every metric value and interval is computed from each run's saved files
(``test_predictions.npz``, ``ood_scores.npz``) and the record's temperature and ``n_bins``
(:mod:`calibench.leaderboard.significance`), once per run: they are kept in the run's folder
(:mod:`calibench.leaderboard.cache`); no loss is imported or created. Only a run whose
files are missing, or that the loaders of :mod:`calibench.records` refuse (a
:class:`~calibench.errors.RecordError`), falls back to the values written in its record (a note
says so), and its row gets no interval; any other error is a bug and propagates. Intervals and
the ``≈`` mark:
:data:`calibench.metrics.bootstrap.INTERVAL_CONVENTION` and
:data:`calibench.metrics.bootstrap.SIGNIFICANCE_CONVENTION`.

The "under shift" columns (:class:`ShiftColumn`, present when a record has ``metrics.shift``)
are the exception: each run's value is the mean over the cells of the shift grid written in its
record, and their interval is the Student-t interval over seeds
(:data:`calibench.metrics.intervals.SEED_T_CONVENTION`). :func:`shift_severity_curves` gives the
per-severity means that the severity plot draws.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from calibench.errors import RecordError, UsageError
from calibench.leaderboard.cache import EvidenceCache
from calibench.leaderboard.significance import (
    RunEvidence,
    compare_adjacent,
    row_intervals,
    run_evidence,
)
from calibench.records import (
    RecordProblem,
    StoredRecord,
    iter_records,
    load_ood_scores,
    load_predictions,
)

if TYPE_CHECKING:
    from calibench.plots import CalibrationPoints

__all__ = [
    "GROUP_KEYS",
    "SECTION_KEYS",
    "Leaderboard",
    "MetricColumn",
    "ShiftColumn",
    "build_leaderboard",
    "check_n_boot",
    "metric_columns",
    "runs_frame",
    "shift_grid_mean",
    "shift_severity_curves",
]

GROUP_KEYS = ("protocol", "protocol_version", "dataset", "backbone", "deviations", "loss")
SECTION_KEYS = GROUP_KEYS[:-1]
PREFERRED_OOD = "svhn"
OOD_SCORE = "msp"


@dataclass(frozen=True)
class MetricColumn:
    """One metric column: its key, title, direction, and where a record holds its value.

    ``binned`` columns (ECE, AdaECE, ECE after TS) get the interval for the population binned
    error, the others the percentile interval; ``ood`` columns come from ``ood_scores.npz``.
    ``path`` is read only for a run whose saved files are missing.
    """

    key: str
    title: str
    path: tuple[str, ...]
    higher_is_better: bool
    percent: bool = True
    binned: bool = False
    ood: bool = False

    def value(self, record: dict[str, Any]) -> float:
        """The value written in ``record`` (NaN when absent)."""
        node: Any = record.get("metrics", {})
        for part in self.path:
            if not isinstance(node, dict) or part not in node:
                return float("nan")
            node = node[part]
        return float("nan") if node is None else float(node)


BASE_COLUMNS = (
    MetricColumn("acc", "acc %", ("test", "acc"), True),
    MetricColumn("ece", "ECE %", ("test", "ece"), False, binned=True),
    MetricColumn("adaece", "AdaECE %", ("test", "adaece"), False, binned=True),
    MetricColumn("nll", "NLL", ("test", "nll"), False, percent=False),
    MetricColumn("ece_ts", "ECE after TS %", ("test_ts", "ece"), False, binned=True),
)


def shift_grid_mean(record: dict[str, Any], key: str) -> float:
    """The mean of ``key`` (``acc``, ``ece``, ``ece_ts``, ...) over every cell of the record's
    shift grid; NaN without a grid or when a cell lacks the value."""
    grid = (record.get("metrics", {}).get("shift") or {}).get("grid") or {}
    values = [cell.get(key) for per in grid.values() for cell in per.values()]
    if not values or any(v is None for v in values):
        return float("nan")
    return math.fsum(values) / len(values)


@dataclass(frozen=True)
class ShiftColumn(MetricColumn):
    """A column of the shift grid: each run's value is :func:`shift_grid_mean` of ``path[-1]``
    (read from the record, never recomputed); its interval is over seeds
    (:data:`~calibench.metrics.intervals.SEED_T_CONVENTION`), not a bootstrap."""

    interval_kind: str = "student-t over seeds"

    def value(self, record: dict[str, Any]) -> float:
        return shift_grid_mean(record, self.path[-1])


SHIFT_COLUMNS = (
    ShiftColumn("shift_acc", "acc under shift %", ("shift", "grid", "acc"), True),
    ShiftColumn("shift_ece", "ECE under shift %", ("shift", "grid", "ece"), False),
    ShiftColumn("shift_ece_ts", "ECE under shift after TS %", ("shift", "grid", "ece_ts"), False),
)
"""Means over the shift grid: accuracy, ECE, and ECE with the clean-val temperature."""


def metric_columns(records: Sequence[StoredRecord]) -> list[MetricColumn]:
    """The base columns, the shift columns when a record has a shift grid, then AUROC and FPR95
    (MSP) for SVHN, or for each OOD set present."""
    present = sorted({name for r in records for name in (r.data["metrics"].get("ood") or {})})
    ood_sets = [PREFERRED_OOD] if PREFERRED_OOD in present else present
    columns = list(BASE_COLUMNS)
    if any(r.data["metrics"].get("shift") for r in records):
        columns += SHIFT_COLUMNS
    for name in ood_sets:
        label = "SVHN" if name == "svhn" else name
        for metric, title, higher in (("auroc", "AUROC", True), ("fpr95", "FPR95", False)):
            columns.append(
                MetricColumn(
                    f"{name}_{metric}",
                    f"{label} {title} % ({OOD_SCORE.upper()})",
                    ("ood", name, OOD_SCORE, metric),
                    higher,
                    ood=True,
                )
            )
    return columns


def _ood_sets(columns: Sequence[MetricColumn]) -> list[str]:
    return sorted({c.path[1] for c in columns if c.ood})


def _deviations_text(deviations: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(deviations.items())) or "none"


def runs_frame(
    records: Sequence[StoredRecord],
    columns: Sequence[MetricColumn],
    evidence: dict[str, RunEvidence | None] | None = None,
) -> pd.DataFrame:
    """One row per run: identity, status, and each metric column's value (NaN when missing).

    Values come from the run's :class:`RunEvidence` (its saved files); a column the evidence
    lacks is read from the record, and ``source`` says which (``files``, ``record``, or
    ``files+record``).
    """
    evidence = evidence or {}
    rows = []
    for r in records:
        spec = r.data["spec"]
        row = {
            "protocol": spec["protocol"],
            "protocol_version": int(spec["protocol_version"]),
            "dataset": spec["dataset"],
            "backbone": spec["backbone"],
            "deviations": _deviations_text(spec["deviations"]),
            "loss": r.data["loss"]["label"],
            "seed": int(spec["seed"]),
            "run_id": r.data["run_id"],
            "status": r.data["status"],
            "reason": r.data["reason"],
            "epoch": r.data["epoch"],
            "record": r,
            "source": "",
        }
        ev = evidence.get(r.data["run_id"])
        sources = set()
        for c in columns:
            if r.data["status"] != "completed":
                row[c.key] = float("nan")
            elif ev is not None and c.key in ev.points:
                row[c.key] = ev.points[c.key]
                sources.add("files")
            else:
                row[c.key] = c.value(r.data)
                if row[c.key] == row[c.key]:
                    sources.add("record")
        row["source"] = "+".join(sorted(sources))
        rows.append(row)
    base = [*GROUP_KEYS, "seed", "run_id", "status", "reason", "epoch", "record", "source"]
    return pd.DataFrame(rows, columns=[*base, *(c.key for c in columns)])


@dataclass
class Leaderboard:
    """Aggregated rows (``table``), the runs behind them, and what was skipped."""

    table: pd.DataFrame
    runs: pd.DataFrame
    columns: list[MetricColumn]
    sort: str
    n_boot: int
    problems: list[RecordProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def sort_column(self) -> MetricColumn:
        return next(c for c in self.columns if c.key == self.sort)

    def records(self) -> list[StoredRecord]:
        return list(self.runs["record"])


def _status_text(counts: dict[str, int]) -> str:
    parts = [f"{counts.get('completed', 0)} completed"]
    parts += [f"{counts[s]} {s}" for s in ("diverged", "failed") if counts.get(s)]
    return ", ".join(parts)


def _group_rows(runs: pd.DataFrame, columns: Sequence[MetricColumn]) -> pd.DataFrame:
    rows = []
    for key, g in runs.groupby(list(GROUP_KEYS), sort=True):
        done = g[g["status"] == "completed"]
        counts = g["status"].value_counts().to_dict()
        row = dict(zip(GROUP_KEYS, key, strict=True))
        row.update(
            n_seeds=len(done),
            seeds=",".join(str(s) for s in sorted(done["seed"])),
            n_completed=int(counts.get("completed", 0)),
            n_diverged=int(counts.get("diverged", 0)),
            n_failed=int(counts.get("failed", 0)),
            status=_status_text(counts),
            problems="; ".join(
                f"seed {s} {st}: {reason}"
                for s, st, reason in g.loc[g["status"] != "completed", ["seed", "status", "reason"]]
                .sort_values("seed")
                .itertuples(index=False)
            ),
            run_ids=",".join(g.sort_values("seed")["run_id"]),
        )
        for c in columns:
            values = done[c.key].dropna()
            row[f"{c.key}_mean"] = float(values.mean()) if len(values) else float("nan")
            row[f"{c.key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
            row[f"{c.key}_n"] = len(values)
            row[f"{c.key}_ci_low"] = float("nan")
            row[f"{c.key}_ci_high"] = float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def _rank(table: pd.DataFrame, sort: MetricColumn) -> pd.DataFrame:
    mean = f"{sort.key}_mean"
    ordered = []
    for _, section in table.groupby(list(SECTION_KEYS), sort=True):
        ranked = section[section[mean].notna()].sort_values(
            [mean, "loss"], ascending=[not sort.higher_is_better, True]
        )
        unranked = section[section[mean].isna()].sort_values("loss")
        ranked = ranked.assign(rank=range(1, len(ranked) + 1))
        unranked = unranked.assign(rank=pd.NA)
        ordered += [ranked, unranked]
    out = pd.concat(ordered, ignore_index=True)
    out["rank"] = out["rank"].astype("Int64")
    return out


def _evidence(
    record: StoredRecord, ood_sets: Sequence[str], n_boot: int, seed: int
) -> RunEvidence | None:
    """The run's values and replicates from its saved files; ``None`` without predictions."""
    data = record.data
    artifacts = data.get("artifacts") or {}
    path = record.artifact(artifacts.get("predictions"))
    if path is None:
        return None
    preds = load_predictions(path)
    ood: dict[str, Any] = {}
    ood_path = record.artifact(artifacts.get("ood_scores")) if ood_sets else None
    if ood_path is not None:
        saved = load_ood_scores(ood_path)
        ood = {n: saved[n][OOD_SCORE] for n in ood_sets if OOD_SCORE in saved.get(n, {})}
    ts = data["metrics"].get("test_ts") or {}
    return run_evidence(
        preds.logits,
        preds.labels,
        temperature=ts.get("temperature"),
        n_bins=int((data.get("conventions") or {}).get("n_bins", 15)),
        ood=ood,
        score=OOD_SCORE,
        n_boot=n_boot,
        seed=seed,
    )


def _collect_evidence(
    records: Sequence[StoredRecord],
    columns: Sequence[MetricColumn],
    n_boot: int,
    seed: int,
    notes: list[str],
) -> dict[str, RunEvidence | None]:
    ood_sets = _ood_sets(columns)
    evidence: dict[str, RunEvidence | None] = {}
    missing: list[str] = []
    cache = EvidenceCache(
        {"ood_sets": ood_sets, "score": OOD_SCORE, "n_boot": n_boot, "seed": seed}
    )
    for rec in records:
        if rec.data["status"] != "completed":
            continue
        run_id = rec.data["run_id"]
        try:
            evidence[run_id] = cache.get(
                rec, lambda rec=rec: _evidence(rec, ood_sets, n_boot, seed)
            )
        except RecordError as exc:  # the loaders' word for an unreadable or malformed file
            notes.append(f"run {run_id}: cannot use its saved files: {exc}")
            evidence[run_id] = None
        if evidence[run_id] is None:
            missing.append(run_id)
    cache.report()
    if missing:
        notes.append(
            f"{len(missing)} completed run(s) without usable saved test predictions: their "
            f"values are read from their records and their rows get no interval "
            f"({', '.join(sorted(missing))})"
        )
    return evidence


def _add_intervals(
    table: pd.DataFrame,
    evidence: dict[str, RunEvidence | None],
    columns: Sequence[MetricColumn],
    notes: list[str],
) -> pd.DataFrame:
    table = table.copy()
    keys = [c.key for c in columns]
    for idx, row in table.iterrows():
        ids = [i for i in row["run_ids"].split(",") if i in evidence]
        runs = [evidence[i] for i in ids]
        if not runs or any(r is None for r in runs):
            continue
        intervals, problems = row_intervals(runs, keys)  # type: ignore[arg-type]
        for key, (lo, hi) in intervals.items():
            table.loc[idx, f"{key}_ci_low"] = lo
            table.loc[idx, f"{key}_ci_high"] = hi
        notes += [f"no interval for {row['loss']} {p}" for p in problems]
    return table


def _add_shift_intervals(
    table: pd.DataFrame, runs: pd.DataFrame, columns: Sequence[MetricColumn]
) -> pd.DataFrame:
    """The Student-t interval over seeds of each shift column (NaN for fewer than 2 seeds)."""
    from calibench.metrics.intervals import seed_t_interval

    shift = [c for c in columns if isinstance(c, ShiftColumn)]
    if not shift:
        return table
    table = table.copy()
    done = runs[runs["status"] == "completed"].set_index("run_id")
    for idx, row in table.iterrows():
        ids = [i for i in str(row["run_ids"]).split(",") if i in done.index]
        for c in shift:
            values = done.loc[ids, c.key].dropna().to_numpy(dtype=float)
            if len(values) >= 2:
                lo, hi = seed_t_interval(values)
                table.loc[idx, f"{c.key}_ci_low"] = float(lo)
                table.loc[idx, f"{c.key}_ci_high"] = float(hi)
    return table


def _section_title(row: pd.Series) -> str:
    dev = "" if row["deviations"] == "none" else f" · deviations {row['deviations']}"
    return (
        f"{row['dataset']} · {row['backbone']} · {row['protocol']} v{row['protocol_version']}{dev}"
    )


def calibration_accuracy_points(board: Leaderboard) -> CalibrationPoints:
    """Per section (dataset · backbone · protocol), per row with a completed run, in rank order:
    ``{"acc": (mean, lo, hi), "ece": (...), "ece_ts": (...)}`` from the table, the seed mean
    and its 95 % interval (NaN bounds without intervals): the points of
    :func:`calibench.plots.calibration_accuracy_png`."""
    points: dict[str, dict[str, dict[str, tuple[float, ...]]]] = {}
    for _, row in board.table.iterrows():
        if not row["n_completed"] or pd.isna(row["acc_mean"]):
            continue
        entry = {
            key: tuple(
                float("nan") if pd.isna(row.get(f"{key}{part}")) else float(row[f"{key}{part}"])
                for part in ("_mean", "_ci_low", "_ci_high")
            )
            for key in ("acc", "ece", "ece_ts")
        }
        points.setdefault(_section_title(row), {})[str(row["loss"])] = entry
    return points


def shift_severity_curves(board: Leaderboard) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Per section (dataset · backbone · protocol), per loss row, the seed mean of ECE and of ECE
    after TS at severity 0 (the clean test split: the record's ``test`` / ``test_ts``) and at
    each severity of the shift grid (mean over corruptions of the record's grid cells), as
    ``{"severities": [0, 1, ...], "ece": [...], "ece_ts": [...]}`` (NaN where missing).

    Only rows with a shift grid in some completed run are included; rows in rank order.
    """
    import numpy as np

    curves: dict[str, dict[str, dict[str, list[float]]]] = {}
    if board.runs.empty:
        return curves
    done = board.runs[board.runs["status"] == "completed"].set_index("run_id")
    for _, row in board.table.iterrows():
        ids = [i for i in str(row["run_ids"]).split(",") if i in done.index]
        grids = [done.loc[i, "record"].data["metrics"] for i in ids]
        grids = [m for m in grids if m.get("shift")]
        if not grids:
            continue
        severities = sorted({int(s) for m in grids for s in m["shift"]["summary"]["by_severity"]})
        out: dict[str, list[float]] = {"severities": [0, *severities]}
        for key, clean in (("ece", "test"), ("ece_ts", "test_ts")):
            per_seed = []
            for m in grids:
                grid = m["shift"]["grid"]
                first = (m.get(clean) or {}).get("ece")
                points = [float("nan") if first is None else float(first)]
                for s in severities:
                    cells = [per[str(s)].get(key) for per in grid.values() if str(s) in per]
                    ok = cells and all(v is not None for v in cells)
                    points.append(math.fsum(cells) / len(cells) if ok else float("nan"))
                per_seed.append(points)
            out[key] = [float(v) for v in np.mean(per_seed, axis=0)]
        curves.setdefault(_section_title(row), {})[str(row["loss"])] = out
    return curves


def _add_significance(table: pd.DataFrame, runs: pd.DataFrame, sort: MetricColumn) -> pd.DataFrame:
    table = table.copy()
    table["tie_above"] = pd.array([pd.NA] * len(table), dtype="boolean")
    table["p_above"] = float("nan")
    done = runs[runs["status"] == "completed"].set_index("run_id")[sort.key]
    for _, section in table.groupby(list(SECTION_KEYS), sort=False):
        ranked = section[section["rank"].notna()].sort_values("rank")
        for above, below in zip(ranked.index[:-1], ranked.index[1:], strict=True):
            values = [
                [float(done[i]) for i in table.loc[r, "run_ids"].split(",") if i in done.index]
                for r in (above, below)
            ]
            result = compare_adjacent(*values)
            table.loc[below, "tie_above"] = not result.different
            if result.p is not None:
                table.loc[below, "p_above"] = result.p
    return table


def check_n_boot(n_boot: int, name: str = "n_boot") -> None:
    """Refuse a resample count that gives no interval: 0 (intervals off) or at least 2."""
    if n_boot < 0 or n_boot == 1:
        raise UsageError(f"{name} must be 0 (no intervals) or at least 2, got {n_boot}")


def build_leaderboard(
    records: Sequence[StoredRecord] | str | Path,
    *,
    protocol: str | None = None,
    sort: str = "ece",
    n_boot: int = 1000,
    seed: int = 0,
) -> Leaderboard:
    """Aggregate ``records`` (or every record under a results folder) into a :class:`Leaderboard`.

    ``protocol`` keeps only that protocol's records; ``sort`` is a metric column key (``acc``,
    ``ece``, ``adaece``, ``nll``, ``ece_ts``, ``svhn_auroc``, ``svhn_fpr95``, ...); ``n_boot``
    bootstrap resamples for the intervals (0 turns them off), drawn with ``seed``. The ``≈``
    mark does not need the bootstrap (Welch's t-test on the per-seed values).
    """
    problems: list[RecordProblem] = []
    if isinstance(records, (str, Path)):
        records, problems = iter_records(records)
    records = list(records)
    if protocol is not None:
        known = sorted({r.data["spec"]["protocol"] for r in records})
        records = [r for r in records if r.data["spec"]["protocol"] == protocol]
        if not records:
            raise UsageError(
                f"no records for protocol '{protocol}'; protocols with records: "
                f"{', '.join(known) or 'none'}"
            )
    check_n_boot(n_boot)
    columns = metric_columns(records)
    keys = [c.key for c in columns]
    if sort not in keys:
        raise UsageError(f"cannot sort by '{sort}'; choose one of: {', '.join(keys)}")
    sort_col = next(c for c in columns if c.key == sort)
    notes: list[str] = []
    evidence = _collect_evidence(records, columns, n_boot, seed, notes)
    runs = runs_frame(records, columns, evidence)
    if runs.empty:
        table = pd.DataFrame(columns=[*GROUP_KEYS, "rank", "status"])
        return Leaderboard(table, runs, columns, sort, n_boot, problems, notes)
    table = _rank(_group_rows(runs, columns), sort_col)
    if n_boot > 0:
        table = _add_intervals(table, evidence, columns, notes)
        table = _add_shift_intervals(table, runs, columns)
    table = _add_significance(table, runs, sort_col)
    return Leaderboard(table, runs, columns, sort, n_boot, problems, notes)
