"""The sweep plan: every loss × backbone × dataset × seed, as :class:`RunSpec` s with their state."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calibench.runner import layout
from calibench.runner.selection import LossChoice
from calibench.spec import RunSpec
from calibench.status import Action, RunState, next_action

STATE_STYLE = {
    RunState.DONE: "green",
    RunState.RESUMABLE: "yellow",
    RunState.DIVERGED: "magenta",
    RunState.FAILED: "red",
    RunState.NEW: "default",
}


@dataclass(frozen=True)
class PlannedRun:
    """One run of the plan, where its files live, and what a rerun would do with it."""

    spec: RunSpec
    run_dir: Path
    state: RunState
    reason: str = ""

    @property
    def run_id(self) -> str:
        return self.run_dir.name


def build_specs(
    protocol: Any,
    losses: Sequence[LossChoice],
    backbones: Sequence[str],
    datasets: Sequence[str],
    seeds: Sequence[int],
    ood: Sequence[str] = (),
    deviations: dict[str, Any] | None = None,
) -> list[RunSpec]:
    """The cartesian product, in loss-major order; ``protocol`` gives name/version/content hash."""
    return [
        RunSpec(
            protocol=protocol.name,
            protocol_version=protocol.version,
            protocol_hash=protocol.content_hash,
            loss=loss.name,
            loss_params=dict(loss.params),
            backbone=backbone,
            dataset=dataset,
            seed=seed,
            ood=tuple(ood),
            deviations=dict(deviations or {}),
        )
        for loss, backbone, dataset, seed in itertools.product(losses, backbones, datasets, seeds)
    ]


def plan_run(spec: RunSpec, results: Path | str) -> PlannedRun:
    """``spec`` with its run folder and current state (see :func:`layout.run_state`)."""
    directory = layout.run_dir(results, spec)
    return PlannedRun(spec, directory, *layout.run_state(directory))


def plan_runs(specs: Sequence[RunSpec], results: Path | str) -> list[PlannedRun]:
    return [plan_run(spec, results) for spec in specs]


def plan_table(plan: Sequence[PlannedRun], *, retry_diverged: bool = False) -> Any:
    """A rich table of the plan: run id, loss, backbone, dataset, seed, state, action."""
    from rich.table import Table

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
            f"[{STATE_STYLE[run.state]}]{status}[/]",
            str(action),
        )
    return table


def check_data_available(specs: Sequence[RunSpec], data_root: str | Path | None) -> None:
    """Load every dataset and OOD set ``specs`` need once, before any run starts.

    Missing data then fails the whole command with one :class:`~calibench.errors.DataNotFoundError`
    that names the files looked for, instead of one ``failed`` record per run. A download, where
    allowed, happens here once.
    """
    from calibench.registry import create_dataset, create_ood

    for name in sorted({s.dataset for s in specs}):
        create_dataset(name, root=data_root)
    for name in sorted({o for s in specs for o in s.ood}):
        create_ood(name, root=data_root)
