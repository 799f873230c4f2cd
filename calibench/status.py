"""The one run-status model: what a record says, what the results folder holds, what a rerun does.

- :class:`RecordStatus`: the ``status`` of a written ``record.json``.
- :class:`RunState`: what the results folder holds for a run, from its record and checkpoints
  (:func:`state_from_record`).
- :class:`Action` and :func:`next_action`: the one skip / resume / retry rule that the plan, the
  sweep and every worker apply.
- :class:`Outcome`: what happened to a run in one invocation.

The members are strings (``RecordStatus.COMPLETED == "completed"``): they compare equal to, hash
like, print as and serialise to the words written in records, tables and logs.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["Action", "Outcome", "RecordStatus", "RunState", "next_action", "state_from_record"]


class _Word(str, Enum):
    """A member is its word: equal to it, hashed like it (so dict keys mix), printed as it."""

    __hash__ = str.__hash__

    def __str__(self) -> str:
        return self.value


class RecordStatus(_Word):
    """The status a run's record holds; a diverged or failed record also holds a reason."""

    COMPLETED = "completed"
    DIVERGED = "diverged"
    FAILED = "failed"


class RunState(_Word):
    """What the results folder holds for one run."""

    DONE = "done"  # a completed record
    DIVERGED = "diverged"  # a diverged record
    FAILED = "failed"  # a failed record and no checkpoint
    RESUMABLE = "resumable"  # checkpoints, and no completed or diverged record
    NEW = "new"  # nothing usable


class Action(_Word):
    """What executing the plan does with one run."""

    RUN = "run"
    RESUME = "resume"
    RETRY = "retry"
    SKIP = "skip"


class Outcome(_Word):
    """What happened to one run in this invocation."""

    COMPLETED = "completed"
    SKIPPED = "skipped"
    DIVERGED = "diverged"
    FAILED = "failed"


def state_from_record(status: RecordStatus | None, has_checkpoint: bool) -> RunState:
    """The state of a run from its record's status (None: no valid record) and checkpoints.

    A completed or diverged record decides; a failed run with checkpoints resumes from them.
    """
    status = None if status is None else RecordStatus(status)
    if status is RecordStatus.COMPLETED:
        return RunState.DONE
    if status is RecordStatus.DIVERGED:
        return RunState.DIVERGED
    if has_checkpoint:
        return RunState.RESUMABLE
    if status is RecordStatus.FAILED:
        return RunState.FAILED
    return RunState.NEW


def next_action(state: RunState, retry_diverged: bool = False) -> Action:
    """The skip / resume / retry rule: completed runs are kept, diverged ones too unless
    ``retry_diverged``, failed ones are retried, checkpoints resumed, new runs run."""
    state = RunState(state)
    if state is RunState.DONE:
        return Action.SKIP
    if state is RunState.DIVERGED:
        return Action.RETRY if retry_diverged else Action.SKIP
    if state is RunState.FAILED:
        return Action.RETRY
    if state is RunState.RESUMABLE:
        return Action.RESUME
    return Action.RUN
