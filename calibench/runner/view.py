"""What ``calibench run`` prints: the plan table, the live view, the summary, the leaderboard.

The live view shows one line per active run (epoch, img/s, ETA) plus totals. Workers report
through each run's ``progress.json`` (see :class:`~calibench.runner.execute.ProgressWriter`), so
the view works the same for in-process runs, worker processes, Ray tasks and SLURM jobs that
share the results folder.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from calibench.errors import CalibenchError
from calibench.records import StoredRecord, load_record
from calibench.runner.execute import RunOutcome
from calibench.runner.plan import PROGRESS, RECORD, PlannedRun, read_json
from calibench.status import Action, Outcome, RecordStatus, RunState, next_action

#: The colour of every run state and outcome (a diverged state and outcome share one word).
STYLE: dict[str, str] = {
    RunState.NEW: "default",
    RunState.RESUMABLE: "yellow",
    RunState.DONE: "green",
    Outcome.COMPLETED: "green",
    Outcome.SKIPPED: "dim",
    Outcome.DIVERGED: "magenta",
    Outcome.FAILED: "red",
}


def _duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "-"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def eta_seconds(progress: dict[str, Any], now: float) -> float | None:
    """The writer's ETA, counted down since it was written."""
    eta, updated = progress.get("eta_s"), progress.get("updated")
    if not isinstance(eta, (int, float)) or not isinstance(updated, (int, float)):
        return None
    return max(0.0, eta - (now - updated))


class LiveView:
    """Context manager around the sweep; ``finished(outcome)`` as each run ends."""

    def __init__(self, runs: Sequence[PlannedRun], console: Console, *, live: bool = True) -> None:
        self.runs = list(runs)
        self.console = console
        self.counts: Counter[str] = Counter()
        self.finished_ids: set[str] = set()
        self.start = time.time()
        self._live = (
            Live(self, console=console, refresh_per_second=2, transient=True) if live else None
        )

    def __enter__(self) -> LiveView:
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def finished(self, outcome: RunOutcome) -> None:
        self.counts[outcome.status] += 1
        self.finished_ids.add(outcome.run_id)
        style = STYLE[outcome.status]
        detail = f" ({outcome.reason})" if outcome.reason else ""
        took = f" in {_duration(outcome.seconds)}" if outcome.status is not Outcome.SKIPPED else ""
        self.console.print(
            f"[{style}]{outcome.status:>9}[/] {outcome.run_id} {outcome.label}{took}{detail}",
            highlight=False,
        )

    def active(self) -> list[dict[str, Any]]:
        rows = []
        for run in self.runs:
            if run.run_id in self.finished_ids:
                continue
            progress = read_json(run.run_dir / PROGRESS)
            if progress is not None and progress.get("updated", 0) >= self.start - 1:
                rows.append(progress)
        return rows

    def __rich__(self) -> Any:
        now = time.time()
        table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        for col in ("run", "", "epoch", "img/s", "ETA", "where"):
            table.add_column(col)
        for p in self.active():
            epoch = f"{p.get('epoch', '-')}/{p.get('epochs', '?')}"
            rate = p.get("img_per_s")
            table.add_row(
                p.get("run_id", "?"),
                p.get("label", ""),
                "eval" if p.get("phase") == "evaluate" else epoch,
                f"{rate:,.0f}" if isinstance(rate, (int, float)) else "-",
                _duration(eta_seconds(p, now)),
                f"{p.get('host', '')}:{p.get('pid', '')}",
            )
        done = sum(self.counts.values())
        totals = " · ".join(f"{k} {v}" for k, v in sorted(self.counts.items())) or "starting"
        footer = f"[bold]{done}/{len(self.runs)} runs[/] · {totals} · elapsed {_duration(now - self.start)}"
        return Group(table, footer)


def plan_table(plan: Sequence[PlannedRun], *, retry_diverged: bool = False) -> Any:
    """A rich table of the plan: run id, loss, backbone, dataset, seed, state, action."""
    actions = [next_action(r.state, retry_diverged) for r in plan]
    todo = sum(action is not Action.SKIP for action in actions)
    table = Table(title=f"calibench run plan: {len(plan)} runs, {todo} to run")
    for col in ("run id", "loss", "backbone", "dataset", "seed", "status", "action"):
        table.add_column(col, overflow="fold")
    for run, action in zip(plan, actions, strict=True):
        status = run.state + (f": {run.reason}" if run.reason else "")
        s = run.spec
        table.add_row(
            run.run_id,
            s.loss_label,
            s.backbone,
            s.dataset,
            str(s.seed),
            f"[{STYLE[run.state]}]{status}[/]",
            str(action),
        )
    return table


def summary_table(outcomes: Sequence[RunOutcome], *, title: str = "calibench run summary") -> Any:
    counts = Counter(o.status for o in outcomes)
    caption = ", ".join(f"{counts.get(k, 0)} {k}" for k in Outcome)
    table = Table(title=title, caption=caption)
    for col in ("run id", "run", "outcome", "time", "reason"):
        table.add_column(col, overflow="fold")
    for o in outcomes:
        style = STYLE[o.status]
        ran = o.status is not Outcome.SKIPPED
        status = o.status + (" (resumed)" if o.resumed and ran else "")
        took = _duration(o.seconds) if ran else "-"
        table.add_row(o.run_id, o.label, f"[{style}]{status}[/]", took, o.reason or "")
    return table


def planned_records(
    results_dir: Path | str, protocol: str, run_ids: Sequence[str]
) -> list[StoredRecord]:
    """The valid records of ``run_ids`` (completed, diverged or failed) as ``StoredRecord`` s."""
    found = []
    for run_id in run_ids:
        path = Path(results_dir) / protocol / run_id / RECORD
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
