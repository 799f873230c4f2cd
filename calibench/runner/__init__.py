"""The sweep runner behind ``calibench run``: plan, execute one run, executors, live view.

- :mod:`.selection`: parse ``--losses 'ce,focal(gamma=2)'``, seeds and name lists;
- :mod:`.plan`: loss × backbone × dataset × seed -> :class:`RunSpec` s and their state;
- :mod:`.layout`: the results folder, ``RESULTS/<protocol>/<run_id>/``;
- :mod:`.execute`: :func:`execute_run`, lock -> train -> evaluate -> record, never raising for a
  failed run; :mod:`.engine` is its one seam to trainer / evaluation / records;
- :mod:`.executors`: ``local``, ``ray``, ``slurm``; :mod:`.sweep`: run a plan through one;
- :mod:`.live`, :mod:`.summary`, :mod:`.report`: live view, summary table, leaderboard.
"""

from __future__ import annotations

from calibench.runner.execute import RunOutcome, execute_run
from calibench.runner.plan import PlannedRun, build_specs, plan_runs
from calibench.runner.selection import LossChoice, parse_losses, parse_seeds

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
