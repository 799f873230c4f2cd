"""The results folder: one self-contained folder per run, no shared index.

``RESULTS/<protocol>/<run_id>/`` holds ``record.json`` (written last, by atomic rename),
``spec.json``, ``checkpoints/`` (the trainer's), plots and test logits (the evaluator's),
``progress.json`` (live progress, removed when the run ends), ``logs/`` (one line per attempt,
tracebacks of failures) and ``.lock`` (held while a worker trains the run, so two workers never
train the same run; the OS releases it when the worker dies, even by SIGKILL).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from calibench import records
from calibench.errors import RecordError
from calibench.spec import RunSpec
from calibench.status import RecordStatus, RunState, state_from_record

RECORD = records.RECORD_FILENAME
SPEC = "spec.json"
CHECKPOINTS = "checkpoints"
PROGRESS = "progress.json"
LOGS = "logs"
LOCK = ".lock"


RESULTS_ENV = "CALIBENCH_RESULTS"


def default_results_dir() -> Path:
    """Where ``calibench run`` writes and ``calibench leaderboard`` reads: $CALIBENCH_RESULTS or ./results."""
    return Path(os.environ.get(RESULTS_ENV) or "results")


def run_dir(results: Path | str, spec: RunSpec) -> Path:
    """``RESULTS/<protocol>/<run_id>``."""
    return Path(results) / spec.protocol / spec.run_id()


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path`` (``progress.json``), or None when it is missing or unreadable."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def record_status(directory: Path) -> tuple[RecordStatus | None, str]:
    """``(status, reason)`` of the run's record, read and validated by :mod:`calibench.records`.

    ``(None, "")`` without a record; ``(None, why)`` for a malformed one, which a rerun replaces.
    """
    path = directory / RECORD
    if not path.is_file():
        return None, ""
    try:
        record = records.load_record(path)
    except RecordError as exc:
        return None, f"invalid record, to be replaced ({exc})"
    status = RecordStatus(record["status"])
    return status, "" if status is RecordStatus.COMPLETED else str(record.get("reason") or "")


def has_checkpoint(directory: Path) -> bool:
    ckpt = directory / CHECKPOINTS
    return ckpt.is_dir() and any(p.is_file() and not p.name.startswith(".") for p in ckpt.iterdir())


def run_state(directory: Path) -> tuple[RunState, str]:
    """The run's :class:`~calibench.status.RunState` and the reason its record gives, if any."""
    status, reason = record_status(directory)
    state = state_from_record(status, has_checkpoint(directory))
    return state, "" if state is RunState.DONE else reason
