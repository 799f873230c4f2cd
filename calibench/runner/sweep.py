"""Run a plan through an executor: skip what is done, report each outcome, survive failures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.console import Console

from calibench.runner.execute import RunOutcome, skipped
from calibench.runner.executors.base import Executor, RunJob
from calibench.runner.live import LiveView
from calibench.runner.plan import PlannedRun
from calibench.spec import RunSpec
from calibench.status import Action, Outcome, next_action


@dataclass
class SweepResult:
    outcomes: list[RunOutcome] = field(default_factory=list)
    interrupted: bool = False

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status is Outcome.FAILED]

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else 1 if self.failed else 0


def run_sweep(
    plan: Sequence[PlannedRun],
    executor: Executor,
    job: RunJob,
    *,
    console: Console | None = None,
    live: bool = True,
) -> SweepResult:
    """Execute every run of ``plan`` that needs it; outcomes come back in plan order.

    Ctrl-C stops the executor; finished records and the latest checkpoints stay on disk, and
    the result says ``interrupted``.
    """
    console = console or Console()
    by_id: dict[str, RunOutcome] = {}
    todo = [r for r in plan if next_action(r.state, job.retry_diverged) is not Action.SKIP]
    for run in plan:
        if run not in todo:
            by_id[run.run_id] = skipped(run)
    interrupted = False
    with LiveView(todo, console, live=live and console.is_terminal) as view:

        def on_done(spec: RunSpec, outcome: RunOutcome) -> None:
            by_id[outcome.run_id] = outcome
            view.finished(outcome)

        try:
            if todo:
                executor.run([r.spec for r in todo], job, on_done)
        except KeyboardInterrupt:
            interrupted = True
    outcomes = [by_id[r.run_id] for r in plan if r.run_id in by_id]
    return SweepResult(outcomes, interrupted)
