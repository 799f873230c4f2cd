"""The run-status model: the words, the state of a results folder, the skip / resume / retry rule."""

from __future__ import annotations

import json
import pickle

import pytest

from calibench.records import record_schema
from calibench.status import (
    Action,
    Outcome,
    RecordStatus,
    RunState,
    next_action,
    state_from_record,
)


def test_record_statuses_are_the_schema_enum() -> None:
    assert [s.value for s in RecordStatus] == record_schema()["properties"]["status"]["enum"]


def test_a_member_is_its_word() -> None:
    assert RecordStatus.COMPLETED == "completed" and Outcome("skipped") is Outcome.SKIPPED
    assert {"diverged": 1}[RunState.DIVERGED] == 1 and {Outcome.FAILED: 2}["failed"] == 2
    assert f"{Action.RESUME:>7}|{RunState.NEW}" == " resume|new"
    assert json.dumps({"status": RecordStatus.FAILED}) == '{"status": "failed"}'
    assert pickle.loads(pickle.dumps(Outcome.DIVERGED)) is Outcome.DIVERGED
    with pytest.raises(ValueError):
        RunState("finished")


@pytest.mark.parametrize(
    ("status", "checkpoint", "state"),
    [
        (None, False, RunState.NEW),
        (None, True, RunState.RESUMABLE),
        ("completed", False, RunState.DONE),
        ("completed", True, RunState.DONE),
        ("diverged", False, RunState.DIVERGED),
        ("diverged", True, RunState.DIVERGED),
        ("failed", False, RunState.FAILED),
        ("failed", True, RunState.RESUMABLE),
    ],
)
def test_state_from_record(status, checkpoint, state) -> None:
    assert state_from_record(status, checkpoint) is state


@pytest.mark.parametrize(
    ("state", "keep", "retry"),
    [
        (RunState.DONE, Action.SKIP, Action.SKIP),
        (RunState.DIVERGED, Action.SKIP, Action.RETRY),
        (RunState.FAILED, Action.RETRY, Action.RETRY),
        (RunState.RESUMABLE, Action.RESUME, Action.RESUME),
        (RunState.NEW, Action.RUN, Action.RUN),
    ],
)
def test_next_action(state, keep, retry) -> None:
    assert next_action(state, retry_diverged=False) is keep
    assert next_action(state.value, retry_diverged=True) is retry
