"""Publish an immutable leaderboard version: ``leaderboards/<protocol>/v<N>/``.

A version holds ``records/<run_id>/record.json`` (byte copies of the validated records),
``LEADERBOARD.md``, ``leaderboard.csv``, ``CHANGES.md`` (rows and runs added, removed, or
whose metrics changed since ``v<N-1>``) and, when records have a shift grid,
``shift_severity.png`` (ECE against corruption severity, one line per loss; linked from
``LEADERBOARD.md``). It is built in a hidden temporary folder beside its
final place and renamed into place in one step, so a crash leaves no half-written version.
An existing version is never overwritten; publishing records identical to the latest version is
refused too (nothing would change), unless ``allow_unchanged``.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from calibench.errors import PublishError
from calibench.leaderboard.aggregate import (
    GROUP_KEYS,
    Leaderboard,
    MetricColumn,
    build_leaderboard,
)
from calibench.leaderboard.cells import format_cell
from calibench.leaderboard.render import render_csv, render_markdown
from calibench.records import RECORD_FILENAME, StoredRecord, iter_records
from calibench.spec import slug
from calibench.util import utc_now

__all__ = ["PublishError", "PublishResult", "existing_versions", "publish", "render_changes"]

_VERSION_DIR = re.compile(r"^v([1-9][0-9]*)$")
SHIFT_PLOT = "shift_severity.png"
"""ECE against shift severity, one line per loss (written when records have a shift grid)."""


@dataclass(frozen=True)
class PublishResult:
    """Where the new version went and what changed."""

    path: Path
    version: int
    protocol: str
    n_records: int
    changes: str


def existing_versions(protocol_dir: Path) -> list[int]:
    """The published version numbers under ``leaderboards/<protocol>/``, ascending."""
    if not protocol_dir.is_dir():
        return []
    found = (_VERSION_DIR.match(p.name) for p in protocol_dir.iterdir() if p.is_dir())
    return sorted(int(m.group(1)) for m in found if m)


def _row_key(row: pd.Series) -> tuple[Any, ...]:
    return tuple(row[k] for k in GROUP_KEYS)


def _row_name(row: pd.Series) -> str:
    dev = "" if row["deviations"] == "none" else f", deviations {row['deviations']}"
    return (
        f"{row['loss']} · {row['dataset']} · {row['backbone']} "
        f"({row['protocol']} v{row['protocol_version']}{dev})"
    )


def _same(a: Any, b: Any) -> bool:
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b)):
        return a == b  # strings, lists (a shift suite's source), booleans
    a_nan, b_nan = pd.isna(a), pd.isna(b)
    if a_nan or b_nan:
        return bool(a_nan and b_nan)
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


def _cell(row: pd.Series, column: MetricColumn) -> str:
    if f"{column.key}_mean" not in row.index:
        return "–"
    return format_cell(row, column, ci=False)


def _row_changes(old: pd.Series, new: pd.Series, columns: Sequence[MetricColumn]) -> list[str]:
    changes = []
    if old["status"] != new["status"]:
        changes.append(f"status {old['status']} → {new['status']}")
    if old["seeds"] != new["seeds"]:
        changes.append(f"seeds {old['seeds'] or 'none'} → {new['seeds'] or 'none'}")
    for c in columns:
        o, n = old.get(f"{c.key}_mean", float("nan")), new.get(f"{c.key}_mean", float("nan"))
        if not _same(o, n):
            changes.append(f"{c.title} {_cell(old, c)} → {_cell(new, c)}")
    return changes


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: node}


def _run_name(record: StoredRecord) -> str:
    d = record.data
    return (
        f"{d['run_id']} ({d['loss']['label']}, {d['spec']['backbone']}, seed {d['spec']['seed']})"
    )


def _run_changes(old: StoredRecord, new: StoredRecord) -> list[str]:
    changes = []
    if old.data["status"] != new.data["status"]:
        changes.append(f"status {old.data['status']} → {new.data['status']}")
    before, after = _flatten(old.data["metrics"]), _flatten(new.data["metrics"])
    # a shift grid's cells would bury the summary: its means (shift.summary) stand for them
    keys = {k for k in set(before) | set(after) if not k.startswith("shift.grid.")}
    for key in sorted(keys):
        o, n = before.get(key), after.get(key)
        if (o is None) != (n is None) or (o is not None and not _same(o, n)):
            changes.append(f"{key} {o} → {n}")
    return changes


def _section(title: str, lines: list[str]) -> list[str]:
    return [f"## {title} ({len(lines)})", "", *([f"- {line}" for line in lines] or ["None."]), ""]


def render_changes(
    old: Leaderboard | None,
    new: Leaderboard,
    *,
    protocol: str,
    version: int,
    published_at: str,
) -> tuple[str, bool]:
    """``CHANGES.md`` of ``new`` against ``old`` (``None`` for v1), and whether anything changed."""
    new_rows = {_row_key(r): r for _, r in new.table.iterrows()}
    old_rows = {_row_key(r): r for _, r in old.table.iterrows()} if old is not None else {}
    new_runs = {r.data["run_id"]: r for r in new.records()}
    old_runs = {r.data["run_id"]: r for r in old.records()} if old is not None else {}
    columns = list({c.key: c for c in [*(old.columns if old else []), *new.columns]}.values())

    added = [f"{_row_name(r)}: {r['status']}" for k, r in new_rows.items() if k not in old_rows]
    removed = [_row_name(r) for k, r in old_rows.items() if k not in new_rows]
    changed = []
    for k in new_rows.keys() & old_rows.keys():
        diffs = _row_changes(old_rows[k], new_rows[k], columns)
        if diffs:
            changed.append(f"{_row_name(new_rows[k])}: " + "; ".join(diffs))
    runs_added = [_run_name(r) for i, r in sorted(new_runs.items()) if i not in old_runs]
    runs_removed = [_run_name(r) for i, r in sorted(old_runs.items()) if i not in new_runs]
    runs_changed = []
    for i in sorted(new_runs.keys() & old_runs.keys()):
        diffs = _run_changes(old_runs[i], new_runs[i])
        if diffs:
            runs_changed.append(f"{_run_name(new_runs[i])}: " + "; ".join(diffs))

    header = f"# {protocol} leaderboard v{version}: changes since v{version - 1}"
    if old is None:
        header = f"# {protocol} leaderboard v{version}: first version"
    lines = [
        header,
        "",
        f"Published {published_at}: {len(new_rows)} row(s) from {len(new_runs)} run record(s).",
        "",
        *_section("Rows added", sorted(added)),
        *_section("Rows removed", sorted(removed)),
        *_section("Rows whose metrics changed", sorted(changed)),
        *_section("Runs added", runs_added),
        *_section("Runs removed", runs_removed),
        *_section("Runs whose record changed", runs_changed),
    ]
    anything = bool(added or removed or changed or runs_added or runs_removed or runs_changed)
    return "\n".join(lines).rstrip() + "\n", anything


def _only_protocol(records: Sequence[StoredRecord]) -> str:
    """The protocol of ``records`` when they hold exactly one."""
    protocols = sorted({r.data["spec"]["protocol"] for r in records})
    if not protocols:
        raise PublishError("no run records to publish")
    if len(protocols) > 1:
        raise PublishError(
            f"records of several protocols ({', '.join(protocols)}); pass --protocol to choose one"
        )
    return protocols[0]


def _write_shift_plot(board: Leaderboard, path: Path) -> bool:
    """Write the ECE-against-severity figure when some row has a shift grid; whether it did."""
    from calibench.leaderboard.aggregate import shift_severity_curves
    from calibench.plots import shift_severity_plot

    curves = shift_severity_curves(board)
    if not curves:
        return False
    shift_severity_plot(curves, path)
    return True


def publish(
    results_dir: str | os.PathLike[str],
    *,
    protocol: str | None = None,
    root: str | os.PathLike[str] = "leaderboards",
    n_boot: int = 1000,
    sort: str = "ece",
    skip_invalid: bool = False,
    allow_unchanged: bool = False,
) -> PublishResult:
    """Write the next version ``root/<protocol>/v<N>/`` from the records under ``results_dir``.

    Malformed records abort publishing (listed in the error) unless ``skip_invalid``.
    Raises :class:`PublishError` if the version exists or nothing changed since the last one.
    """
    records, problems = iter_records(results_dir)
    if problems and not skip_invalid:
        listing = "\n  ".join(str(p) for p in problems)
        raise PublishError(
            f"{len(problems)} malformed record(s) under {results_dir}; fix or move them, or pass "
            f"--skip-invalid:\n  {listing}"
        )
    if protocol is None:
        protocol = _only_protocol(records)
    protocol_dir = Path(root) / slug(protocol)
    versions = existing_versions(protocol_dir)
    version = (versions[-1] + 1) if versions else 1
    final = protocol_dir / f"v{version}"
    if final.exists():
        raise PublishError(f"{final} already exists; published versions are never overwritten")

    board = build_leaderboard(records, protocol=protocol, sort=sort, n_boot=n_boot)
    records = board.records()
    old = None
    if versions:
        old_dir = protocol_dir / f"v{versions[-1]}"
        old_records, old_problems = iter_records(old_dir / "records")
        if old_problems:
            raise PublishError(
                f"the previous version {old_dir} has malformed records: {old_problems[0]}"
            )
        old = build_leaderboard(old_records, sort=sort, n_boot=0) if old_records else None
    published_at = utc_now("seconds")
    changes, changed = render_changes(
        old, board, protocol=protocol, version=version, published_at=published_at
    )
    if versions and not changed and not allow_unchanged:
        raise PublishError(
            f"nothing changed since v{versions[-1]} ({protocol_dir / f'v{versions[-1]}'}); "
            "no new version written"
        )
    if problems:
        board.notes.append(f"{len(problems)} malformed record(s) were skipped when publishing")
    board.problems = []

    protocol_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=protocol_dir, prefix=f".v{version}-"))
    try:
        for r in records:
            target = tmp / "records" / r.data["run_id"] / RECORD_FILENAME
            target.parent.mkdir(parents=True)
            shutil.copyfile(r.path, target)
        title = f"{protocol} leaderboard v{version}"
        md = render_markdown(board, title=title)
        if _write_shift_plot(board, tmp / SHIFT_PLOT):
            md += f"\n![ECE against corruption severity, one line per loss]({SHIFT_PLOT})\n"
        md += f"\nPublished {published_at}; records in `records/`; see CHANGES.md.\n"
        (tmp / "LEADERBOARD.md").write_text(md, encoding="utf-8")
        (tmp / "leaderboard.csv").write_text(render_csv(board), encoding="utf-8")
        (tmp / "CHANGES.md").write_text(changes, encoding="utf-8")
        os.chmod(tmp, 0o755)
        if final.exists():  # someone published the same version meanwhile
            raise PublishError(f"{final} already exists; published versions are never overwritten")
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PublishResult(final, version, protocol, len(records), changes)
