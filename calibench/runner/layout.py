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

from calibench.spec import RunSpec

RECORD = "record.json"
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
    """The JSON object in ``path``, or None when it is missing or unreadable."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def record_status(directory: Path) -> tuple[str | None, str]:
    """``(status, reason)`` of the run's record (``completed`` / ``diverged`` / ``failed``), or
    ``(None, "")`` without a readable record."""
    record = read_json(directory / RECORD)
    if record is None:
        return None, ""
    status = record.get("status")
    if not isinstance(status, str):
        return None, ""
    return status, "" if status == "completed" else str(record.get("reason") or "")


def has_checkpoint(directory: Path) -> bool:
    ckpt = directory / CHECKPOINTS
    return ckpt.is_dir() and any(p.is_file() and not p.name.startswith(".") for p in ckpt.iterdir())


def run_state(directory: Path) -> tuple[str, str]:
    """What a rerun would do: ``done``, ``diverged``, ``failed`` (retried), ``resumable`` or ``new``."""
    status, reason = record_status(directory)
    if status == "completed":
        return "done", ""
    if status == "diverged":
        return "diverged", reason
    if has_checkpoint(directory):
        return "resumable", reason
    if status == "failed":
        return "failed", reason
    return "new", ""
