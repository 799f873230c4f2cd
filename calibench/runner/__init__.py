"""The sweep runner behind ``calibench run``; one-way imports, top to bottom:

- :mod:`.plan`: the selections (``--losses 'ce,focal(gamma=2)'``, seeds, names; all checked
  before any work), the results folder ``RESULTS/<protocol>/<run_id>/``, and the plan: loss ×
  backbone × dataset × seed -> :class:`RunSpec` s with their state;
- :mod:`.execute`: :func:`execute_run`, lock -> train -> evaluate -> record, never raising for a
  failed run, and :class:`RunOutcome`, the one result of a run;
- :mod:`.view`: the plan table, the live view, the summary and the leaderboard printed at the end;
- :mod:`.executors`: the executor interface, ``local``, :func:`make_executor` and
  :func:`run_sweep`; :mod:`.ray` and :mod:`.slurm` need their optional dependencies.

The skip / resume / retry rule lives in :mod:`calibench.status`.
"""

from __future__ import annotations

from calibench.runner.execute import RunOutcome, execute_run
from calibench.runner.plan import (
    LossChoice,
    PlannedRun,
    build_specs,
    parse_losses,
    parse_seeds,
    plan_runs,
)

__all__ = [
    "LossChoice",
    "PlannedRun",
    "RunOutcome",
    "build_specs",
    "execute_run",
    "parse_losses",
    "parse_seeds",
    "plan_runs",
]
