"""The runner's one seam to the engine: trainer -> evaluation -> records.

Kept in one module so that :mod:`calibench.runner.execute` (locking, failure handling) does not
depend on how those modules spell their arguments.
"""

from __future__ import annotations

import datetime as _dt
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calibench.runner import layout
from calibench.spec import RunSpec


@dataclass
class EngineResult:
    status: str  # completed | diverged
    reason: str = ""
    epochs: int | None = None
    img_per_s: float | None = None


def _model_device(model: Any) -> str:
    try:
        return str(next(model.parameters()).device)
    except (StopIteration, AttributeError):
        return "cpu"


def train_and_record(
    spec: RunSpec,
    directory: Path,
    *,
    device: str,
    data_root: Path | str | None,
    compile: bool,
    progress: Any,
) -> EngineResult:
    """Train (resuming), then evaluate and write ``record.json``; or write a diverged record."""
    from calibench import records
    from calibench.engine.trainer import train

    result = train(
        spec, directory, device=device, data_root=data_root, compile=compile, progress=progress
    )
    timing = getattr(result, "timing", {}) or {}
    img_per_s = timing.get("img_per_s")
    if result.status == "diverged":
        reason = f"non-finite loss at epoch {result.epoch}"
        write_status_record(spec, directory, "diverged", reason, epoch=result.epoch)
        return EngineResult("diverged", reason, result.epoch, img_per_s)
    progress(phase="evaluate")
    from calibench.evaluation import evaluate
    from calibench.registry import create_ood

    ood_sets = [
        create_ood(name, root=data_root, like=result.dataset, seed=spec.seed) for name in spec.ood
    ]
    evaluation = evaluate(
        result.model, result.loss, result.dataset, ood_sets, device=_model_device(result.model)
    )
    record = records.build_record(spec, result, evaluation)
    records.write_record(record, directory)
    return EngineResult("completed", "", result.epoch, img_per_s)


def write_status_record(
    spec: RunSpec, directory: Path, status: str, reason: str, **extra: Any
) -> None:
    """A ``failed`` or ``diverged`` record: the spec, the reason, where and when."""
    record = {
        "status": status,
        "reason": reason,
        "run_id": spec.run_id(),
        "spec": spec.to_dict(),
        "loss_label": spec.loss_label,
        "host": socket.gethostname(),
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }
    layout.atomic_write_json(directory / layout.RECORD, record)


def write_failed_record(spec: RunSpec, directory: Path, *, reason: str, log: str) -> None:
    write_status_record(spec, directory, "failed", reason, log=log)
