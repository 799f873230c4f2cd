"""The leaderboard of the runs one ``calibench run`` planned, printed after its summary."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from calibench.errors import CalibenchError
from calibench.runner import layout
from calibench.status import RecordStatus


def planned_records(results_dir: Path | str, protocol: str, run_ids: Sequence[str]) -> list[Any]:
    """The valid records of ``run_ids`` (completed, diverged or failed) as ``StoredRecord`` s."""
    from calibench.records import StoredRecord, load_record

    found = []
    for run_id in run_ids:
        path = Path(results_dir) / protocol / run_id / layout.RECORD
        if path.is_file():
            try:
                found.append(StoredRecord(path, load_record(path)))
            except CalibenchError:
                continue
    return found


def leaderboard_for(
    results_dir: Path | str, protocol: str, run_ids: Sequence[str], console: Any
) -> None:
    """Print the leaderboard (rich table) of the planned runs that have a record."""
    from calibench.leaderboard import build_leaderboard, render_terminal

    stored = planned_records(results_dir, protocol, run_ids)
    if not any(r.data["status"] == RecordStatus.COMPLETED for r in stored):
        console.print("no completed run to rank yet")
        return
    try:
        render_terminal(build_leaderboard(stored, protocol=protocol), console)
    except CalibenchError as exc:  # the runs are done; a leaderboard problem must not hide that
        console.print(f"[yellow]leaderboard not shown:[/] {exc}")
