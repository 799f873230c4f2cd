"""Executors: how the runs of a plan are scheduled. All call :func:`execute_run` per run.

- ``local``: in this process, one run after another; with several GPUs visible, one worker
  process per GPU (``CUDA_VISIBLE_DEVICES`` set per worker).
- ``ray``: one Ray task per run (``calibench[ray]``).
- ``slurm``: one submitit job array (``calibench[slurm]``).
"""

from __future__ import annotations

from calibench.runner.executors.base import Executor, RunJob

EXECUTORS = ("local", "ray", "slurm")

__all__ = ["EXECUTORS", "Executor", "RunJob"]
