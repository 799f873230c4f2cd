"""Records → leaderboard rows: group seeds, mean ± std, status counts, ranks, bootstrap CIs.

A row is one ``(protocol, protocol version, dataset, backbone, loss label, deviations)``: runs
that deviate from the protocol (``--epochs 1``) are never averaged with runs that follow it. Rows
are ranked within a *section* (the same key without the loss), by the sort metric's mean over
completed seeds. Diverged and failed runs are counted in the ``status`` column (``2 completed,
1 diverged``) and their reasons kept; a row with no completed run is listed, unranked, last.
Standard deviations are the sample std over seeds (``ddof=1``; blank for one seed). CIs and the
``≈`` mark come from :mod:`calibench.leaderboard.significance`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from calibench.errors import CalibenchError, UsageError
from calibench.leaderboard.significance import (
    RunDistribution,
    group_means,
    percentile_ci,
    run_distribution,
    significantly_different,
)
from calibench.records import RecordProblem, StoredRecord, iter_records, load_predictions

__all__ = [
    "GROUP_KEYS",
    "SECTION_KEYS",
    "Leaderboard",
    "MetricColumn",
    "build_leaderboard",
    "metric_columns",
    "runs_frame",
]

GROUP_KEYS = ("protocol", "protocol_version", "dataset", "backbone", "deviations", "loss")
SECTION_KEYS = GROUP_KEYS[:-1]
PREFERRED_OOD = "svhn"
OOD_SCORE = "msp"


@dataclass(frozen=True)
class MetricColumn:
    """One metric column: where it is in a record, its direction and how it is shown."""

    key: str
    title: str
    path: tuple[str, ...]
    higher_is_better: bool
    percent: bool = True
    bootstrap: str | None = None

    def value(self, record: dict[str, Any]) -> float:
        node: Any = record.get("metrics", {})
        for part in self.path:
            if not isinstance(node, dict) or part not in node:
                return float("nan")
            node = node[part]
        return float("nan") if node is None else float(node)


BASE_COLUMNS = (
    MetricColumn("acc", "acc %", ("test", "acc"), True, bootstrap="acc"),
    MetricColumn("ece", "ECE %", ("test", "ece"), False, bootstrap="ece"),
    MetricColumn("adaece", "AdaECE %", ("test", "adaece"), False, bootstrap="adaece"),
    MetricColumn("nll", "NLL", ("test", "nll"), False, percent=False, bootstrap="nll"),
    MetricColumn("ece_ts", "ECE after TS %", ("test_ts", "ece"), False, bootstrap="ece_ts"),
)


def metric_columns(records: Sequence[StoredRecord]) -> list[MetricColumn]:
    """The base columns, then AUROC and FPR95 (MSP) for SVHN, or for each OOD set present."""
    present = sorted({name for r in records for name in (r.data["metrics"].get("ood") or {})})
    ood_sets = [PREFERRED_OOD] if PREFERRED_OOD in present else present
    columns = list(BASE_COLUMNS)
    for name in ood_sets:
        label = "SVHN" if name == "svhn" else name
        columns.append(
            MetricColumn(
                f"{name}_auroc",
                f"{label} AUROC % ({OOD_SCORE.upper()})",
                ("ood", name, OOD_SCORE, "auroc"),
                True,
            )
        )
        columns.append(
            MetricColumn(
                f"{name}_fpr95",
                f"{label} FPR95 % ({OOD_SCORE.upper()})",
                ("ood", name, OOD_SCORE, "fpr95"),
                False,
            )
        )
    return columns


def _deviations_text(deviations: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(deviations.items())) or "none"


def runs_frame(records: Sequence[StoredRecord], columns: Sequence[MetricColumn]) -> pd.DataFrame:
    """One row per run: identity, status, and each metric column's value (NaN when missing)."""
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
        }
        for c in columns:
            row[c.key] = c.value(r.data) if r.data["status"] == "completed" else float("nan")
        rows.append(row)
    base = [*GROUP_KEYS, "seed", "run_id", "status", "reason", "epoch", "record"]
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


def _distribution(record: StoredRecord, n_boot: int, seed: int) -> RunDistribution | None:
    path = record.artifact(record.data["artifacts"].get("predictions"))
    if path is None:
        return None
    preds = load_predictions(path)
    spec = record.data["spec"]
    ts = record.data["metrics"].get("test_ts") or {}
    return run_distribution(
        preds.logits,
        preds.labels,
        loss=spec["loss"],
        loss_params=spec["loss_params"],
        temperature=ts.get("temperature"),
        n_boot=n_boot,
        seed=seed,
        n_bins=int(record.data["conventions"].get("n_bins", 15)),
    )


def _add_bootstrap(
    table: pd.DataFrame,
    runs: pd.DataFrame,
    columns: Sequence[MetricColumn],
    sort: MetricColumn,
    n_boot: int,
    seed: int,
    notes: list[str],
) -> pd.DataFrame:
    table = table.copy()
    table["tie_above"] = pd.array([pd.NA] * len(table), dtype="boolean")
    if n_boot <= 0:
        return table
    dists: dict[str, RunDistribution | None] = {}
    missing = 0
    for rec in runs.loc[runs["status"] == "completed", "record"]:
        run_id = rec.data["run_id"]
        try:
            dists[run_id] = _distribution(rec, n_boot, seed)
        except (CalibenchError, TypeError, ValueError) as exc:  # bad file, loss gone, ...
            notes.append(f"no CI for run {run_id}: {exc}")
            dists[run_id] = None
        missing += dists[run_id] is None
    if missing:
        notes.append(
            f"{missing} completed run(s) without usable test predictions: no CI for their rows"
        )
    samples: dict[int, dict[str, np.ndarray]] = {}
    labels_of: dict[int, str] = {}
    for idx, row in table.iterrows():
        ds = [dists.get(i) for i in row["run_ids"].split(",") if i in dists]
        if not ds or any(d is None for d in ds):
            continue
        keys = {d.labels_key for d in ds}
        if len(keys) != 1:
            notes.append(f"no CI for {row['loss']}: its seeds were tested on different test sets")
            continue
        samples[idx], labels_of[idx] = group_means(ds), keys.pop()
        for c in columns:
            if c.bootstrap in samples[idx]:
                lo, hi = percentile_ci(samples[idx][c.bootstrap])
                table.loc[idx, f"{c.key}_ci_low"] = lo
                table.loc[idx, f"{c.key}_ci_high"] = hi
    if sort.bootstrap is None:
        return table
    for _, section in table.groupby(list(SECTION_KEYS), sort=False):
        ranked = section[section["rank"].notna()].sort_values("rank")
        for above, below in zip(ranked.index[:-1], ranked.index[1:], strict=True):
            a, b = samples.get(above, {}), samples.get(below, {})
            paired = labels_of.get(above) is not None and labels_of.get(above) == labels_of.get(
                below
            )
            if paired and sort.bootstrap in a and sort.bootstrap in b:
                table.loc[below, "tie_above"] = not significantly_different(
                    a[sort.bootstrap], b[sort.bootstrap]
                )
    return table


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
    bootstrap resamples for CIs (0 turns them off), drawn with ``seed``.
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
    columns = metric_columns(records)
    keys = [c.key for c in columns]
    if sort not in keys:
        raise UsageError(f"cannot sort by '{sort}'; choose one of: {', '.join(keys)}")
    sort_col = next(c for c in columns if c.key == sort)
    runs = runs_frame(records, columns)
    notes: list[str] = []
    if runs.empty:
        table = pd.DataFrame(columns=[*GROUP_KEYS, "rank", "status"])
        return Leaderboard(table, runs, columns, sort, n_boot, problems, notes)
    table = _rank(_group_rows(runs, columns), sort_col)
    table = _add_bootstrap(table, runs, columns, sort_col, n_boot, seed, notes)
    return Leaderboard(table, runs, columns, sort, n_boot, problems, notes)
