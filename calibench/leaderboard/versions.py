"""Publish an immutable leaderboard version: ``leaderboards/<protocol>/v<N>/``; verify one.

A version holds ``records/<run_id>/record.json`` (byte copies of the validated records),
``LEADERBOARD.md``, ``LEADERBOARD.csv``, ``LEADERBOARD.json``, ``LEADERBOARD.html`` (one
self-contained page), ``CHANGES.md`` (rows and runs added, removed, or whose metrics changed
since ``v<N-1>``), ``calibration_accuracy.png`` (ECE and ECE after TS against accuracy, one
point per row with its 95 % intervals), ``reliability/<row>.png`` and ``<row>_ts.png`` (the
reliability diagram of each row's lowest completed seed, before and after temperature scaling:
byte copies of the run's own plots), ``shift_severity.png`` when records have a shift grid (ECE
against corruption severity, one line per loss) and ``version.json`` (when and how it was
rendered: ``published_at``, ``n_boot``, ``seed``, ``sort``, and ``rendered_with``, the versions
of the packages the bytes depend on). It is built in a hidden temporary folder beside its final
place and renamed into place in one step, so a crash leaves no half-written
version. An existing version is never overwritten; publishing records identical to the latest
version is refused too (nothing would change), unless ``allow_unchanged``.

Every rendered file is a function of the records, their runs' saved predictions and
``version.json``: :func:`verify` renders a version again from the run folders it was published
from and compares it byte for byte with the published files (:func:`render_version` is the one
renderer both use). Bytes are reproducible with the packages of ``rendered_with`` (PNG encoding,
resampling and the bootstrap's random stream may change between their releases); CI pins them
in ``.ci/constraints.txt``.
"""

from __future__ import annotations

import json
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
from calibench.leaderboard.html import render_html
from calibench.leaderboard.render import render_csv, render_json, render_markdown
from calibench.records import RECORD_FILENAME, StoredRecord, iter_records
from calibench.spec import slug
from calibench.util import utc_now

__all__ = [
    "PublishError",
    "PublishResult",
    "existing_versions",
    "publish",
    "render_changes",
    "render_version",
    "rendering_differences",
    "rendering_packages",
    "verify",
]

_VERSION_DIR = re.compile(r"^v([1-9][0-9]*)$")
SHIFT_PLOT = "shift_severity.png"
"""ECE against shift severity, one line per loss (written when records have a shift grid)."""
CALIBRATION_PLOT = "calibration_accuracy.png"
"""ECE and ECE after TS against accuracy, one point per loss with its intervals."""
VERSION_FILE = "version.json"
"""How a version was rendered: ``published_at``, ``n_boot``, ``seed``, ``sort``,
``rendered_with``."""
RENDERING_PACKAGES = ("jinja2", "matplotlib", "numpy", "pandas", "pillow", "scipy", "tabulate")
"""The packages whose versions the rendered bytes depend on (recorded in ``version.json``)."""
RELIABILITY_DIR = "reliability"
TABLES = ("LEADERBOARD.md", "LEADERBOARD.csv", "LEADERBOARD.json", "LEADERBOARD.html")


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


def _row_file(row: pd.Series, board: Leaderboard) -> str:
    """The file stem of a row's diagrams: its loss, plus whatever tells it from other rows."""
    parts = [str(row["loss"])]
    for key in ("dataset", "backbone"):
        if board.table[key].nunique() > 1:
            parts.append(str(row[key]))
    if row["deviations"] != "none":
        parts.append(str(row["deviations"]))
    return slug("__".join(parts))


def _reliability_files(board: Leaderboard) -> dict[str, bytes]:
    """``reliability/<row>.png`` and ``<row>_ts.png``: the run's own diagrams, of each row's
    lowest completed seed."""
    files: dict[str, bytes] = {}
    runs = board.runs.set_index("run_id")
    for _, row in board.table.iterrows():
        candidates = []
        for run_id in (r for r in str(row["run_ids"]).split(",") if r):
            record: StoredRecord = runs.loc[run_id, "record"]
            if record.data["status"] == "completed":
                candidates.append((int(record.data["spec"]["seed"]), run_id, record))
        if not candidates:
            continue
        _, _, record = min(candidates, key=lambda c: (c[0], c[1]))
        plots = record.data["artifacts"].get("plots") or {}
        stem = _row_file(row, board)
        for key, suffix in (("reliability", ""), ("reliability_ts", "_ts")):
            path = record.artifact(plots[key]) if key in plots else None
            if path is not None:
                files[f"{RELIABILITY_DIR}/{stem}{suffix}.png"] = path.read_bytes()
    return files


def render_version(
    board: Leaderboard,
    old: Leaderboard | None,
    *,
    protocol: str,
    version: int,
    published_at: str,
) -> dict[str, bytes]:
    """Every rendered file of a version (relative path -> bytes), records not included."""
    from calibench.leaderboard.aggregate import calibration_accuracy_points, shift_severity_curves
    from calibench.plots import calibration_accuracy_png, shift_severity_png

    files: dict[str, bytes] = {}
    title = f"{protocol} leaderboard v{version}"
    md = render_markdown(board, title=title)
    curves = shift_severity_curves(board)
    if curves:
        files[SHIFT_PLOT] = shift_severity_png(curves)
        md += f"\n![ECE against corruption severity, one line per loss]({SHIFT_PLOT})\n"
    points = calibration_accuracy_points(board)
    if points:
        files[CALIBRATION_PLOT] = calibration_accuracy_png(points)
        md += (
            "\n![ECE and ECE after TS against accuracy, one point per loss, 95 % intervals]"
            f"({CALIBRATION_PLOT})\n"
        )
    diagrams = _reliability_files(board)
    files.update(diagrams)
    stems = sorted({Path(k).stem for k in diagrams if not k.endswith("_ts.png")})
    if stems:
        links = ", ".join(
            f"[{stem}]({RELIABILITY_DIR}/{stem}.png) ([after TS]({RELIABILITY_DIR}/{stem}_ts.png))"
            for stem in stems
        )
        md += f"\nReliability diagrams (each row's lowest completed seed): {links}.\n"
    md += (
        f"\nPublished {published_at}; records in `records/`; see CHANGES.md; "
        "LEADERBOARD.html is the same table with the figures.\n"
    )
    changes, _ = render_changes(
        old, board, protocol=protocol, version=version, published_at=published_at
    )
    files["LEADERBOARD.md"] = md.encode("utf-8")
    files["LEADERBOARD.csv"] = render_csv(board).encode("utf-8")
    files["LEADERBOARD.json"] = render_json(board).encode("utf-8")
    html = render_html(board, title=title, plots_per_row=1)
    files["LEADERBOARD.html"] = html.encode("utf-8")
    files["CHANGES.md"] = changes.encode("utf-8")
    return files


def _previous_board(protocol_dir: Path, version: int, sort: str) -> Leaderboard | None:
    """The leaderboard of ``v<version - 1>`` from its published records (values only)."""
    previous = [v for v in existing_versions(protocol_dir) if v < version]
    if not previous:
        return None
    old_dir = protocol_dir / f"v{previous[-1]}"
    old_records, old_problems = iter_records(old_dir / "records")
    if old_problems:
        raise PublishError(
            f"the previous version {old_dir} has malformed records: {old_problems[0]}"
        )
    return build_leaderboard(old_records, sort=sort, n_boot=0) if old_records else None


def publish(
    results_dir: str | os.PathLike[str],
    *,
    protocol: str | None = None,
    root: str | os.PathLike[str] = "leaderboards",
    n_boot: int = 1000,
    seed: int = 0,
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

    board = build_leaderboard(records, protocol=protocol, sort=sort, n_boot=n_boot, seed=seed)
    records = board.records()
    old = _previous_board(protocol_dir, version, sort)
    published_at = utc_now("seconds")
    _, changed = render_changes(
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
    files = render_version(
        board, old, protocol=protocol, version=version, published_at=published_at
    )
    meta = {
        "published_at": published_at,
        "n_boot": n_boot,
        "seed": seed,
        "sort": sort,
        "rendered_with": rendering_packages(),
    }
    if problems:
        meta["skipped_malformed"] = len(problems)
    files[VERSION_FILE] = (json.dumps(meta, indent=2) + "\n").encode("utf-8")

    protocol_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=protocol_dir, prefix=f".v{version}-"))
    try:
        for r in records:
            target = tmp / "records" / r.data["run_id"] / RECORD_FILENAME
            target.parent.mkdir(parents=True)
            shutil.copyfile(r.path, target)
        for name, data in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)
        os.chmod(tmp, 0o755)
        if final.exists():  # someone published the same version meanwhile
            raise PublishError(f"{final} already exists; published versions are never overwritten")
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    changes = files["CHANGES.md"].decode("utf-8")
    return PublishResult(final, version, protocol, len(records), changes)


def rendering_packages() -> dict[str, str]:
    """The installed version of each of :data:`RENDERING_PACKAGES` (``"missing"`` if absent)."""
    from importlib import metadata

    out = {}
    for name in RENDERING_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def rendering_differences(meta: dict[str, Any]) -> list[str]:
    """How the installed rendering packages differ from the ones a version was rendered with
    (``"matplotlib 3.11.2 there, 3.12.0 here"``); empty when they match or were not recorded."""
    recorded = meta.get("rendered_with") or {}
    here = rendering_packages()
    return [
        f"{name} {recorded[name]} there, {here.get(name, 'missing')} here"
        for name in sorted(recorded)
        if recorded[name] != here.get(name, "missing")
    ]


def verify(version_dir: str | os.PathLike[str], results_dir: str | os.PathLike[str]) -> list[str]:
    """Render the published version ``version_dir`` again from the run folders under
    ``results_dir`` and compare it byte for byte; the differences, empty when it reproduces.

    Each published record must validate against the schema and be byte-identical to the record
    of the same run id under ``results_dir`` (whose saved predictions give the intervals and
    diagrams); the rendering settings come from the version's ``version.json``.
    """
    version_dir = Path(version_dir)
    match = _VERSION_DIR.match(version_dir.name)
    meta_path = version_dir / VERSION_FILE
    if match is None or not meta_path.is_file():
        raise PublishError(
            f"{version_dir} is not a published version (a v<N> folder with {VERSION_FILE})"
        )
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    published, problems = iter_records(version_dir / "records")
    if problems:
        return [f"malformed published record: {p}" for p in problems]
    wanted = {r.data["run_id"]: r for r in published}
    found, _ = iter_records(results_dir)
    by_id = {r.data["run_id"]: r for r in found if r.data["run_id"] in wanted}
    diffs = [
        f"run {i}: no record under {results_dir}" for i in sorted(wanted.keys() - by_id.keys())
    ]
    for run_id, record in sorted(by_id.items()):
        if record.path.read_bytes() != wanted[run_id].path.read_bytes():
            diffs.append(f"run {run_id}: its record differs from {record.path}")
    if diffs:
        return diffs
    protocol = _only_protocol(published)
    board = build_leaderboard(
        list(by_id.values()),
        protocol=protocol,
        sort=meta["sort"],
        n_boot=meta["n_boot"],
        seed=meta["seed"],
    )
    if meta.get("skipped_malformed"):
        board.notes.append(
            f"{meta['skipped_malformed']} malformed record(s) were skipped when publishing"
        )
    old = _previous_board(version_dir.parent, int(match.group(1)), meta["sort"])
    files = render_version(
        board,
        old,
        protocol=protocol,
        version=int(match.group(1)),
        published_at=meta["published_at"],
    )
    for name, data in sorted(files.items()):
        path = version_dir / name
        if not path.is_file():
            diffs.append(f"{name}: missing from the published version")
        elif path.read_bytes() != data:
            diffs.append(f"{name}: differs from a fresh rendering")
    extra = (
        {
            p.relative_to(version_dir).as_posix()
            for p in version_dir.rglob("*")
            if p.is_file() and p.parent.parent != version_dir / "records"
        }
        - set(files)
        - {VERSION_FILE}
    )
    rendered_like = {n for n in extra if n.startswith(f"{RELIABILITY_DIR}/") or n in TABLES}
    diffs += [f"{name}: published but not rendered" for name in sorted(rendered_like)]
    packages = rendering_differences(meta)
    if diffs and packages:
        diffs.append(
            f"rendered with other package versions ({'; '.join(packages)}): install those of "
            f"{VERSION_FILE} (rendered_with) to reproduce the bytes"
        )
    return diffs
