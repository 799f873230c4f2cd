"""The rich live view: one line per active run (epoch, img/s, ETA) plus totals.

Workers report through each run's ``progress.json`` (see :class:`execute.ProgressWriter`), so
the view works the same for in-process runs, worker processes, Ray tasks and SLURM jobs that
share the results folder.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from calibench.runner import layout
from calibench.runner.execute import RunOutcome
from calibench.runner.plan import PlannedRun
from calibench.status import Outcome

STYLE = {
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
            progress = layout.read_json(run.run_dir / layout.PROGRESS)
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
