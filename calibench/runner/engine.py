"""The runner's one seam to the engine: trainer -> evaluation -> records.

Kept in one module so that :mod:`calibench.runner.execute` (locking, failure handling) does not
depend on how those modules spell their arguments.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calibench.errors import UsageError
from calibench.spec import RunSpec


@dataclass
class EngineResult:
    status: str  # completed | diverged
    reason: str = ""
    epochs: int | None = None
    img_per_s: float | None = None
    resumed_from: int = 0


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
    common = {
        "epoch": result.epoch,
        "history": result.history,
        "timing": result.timing,
        "device": "cpu" if result.device.startswith("cpu") else None,  # None: the GPU's name
        "data": result.dataset.provenance,
    }
    img_per_s = result.timing.get("img_per_s")
    if result.status == "diverged":
        reason = f"non-finite training loss ({result.diverged_loss}) at epoch {result.epoch}"
        write_status_record(spec, directory, "diverged", reason, **common)
        return EngineResult("diverged", reason, result.epoch, img_per_s, result.resumed_from)
    evaluation = _evaluate(result, spec, directory, data_root)
    artifacts = {
        "predictions": records.save_predictions(
            directory, evaluation.test_predictive_logits, evaluation.test_labels
        ),
        "ood_scores": (
            records.save_ood_scores(directory, evaluation.ood_scores)
            if evaluation.ood_scores
            else None
        ),
        "plots": {
            name: Path(path).resolve().relative_to(directory.resolve()).as_posix()
            for name, path in evaluation.plots.items()
        },
    }
    record = records.build_record(
        spec,
        status="completed",
        metrics=record_metrics(evaluation.metrics, result.protocol.eval.temperature_scaling),
        conventions=evaluation.conventions,
        artifacts=artifacts,
        **common,
    )
    records.write_record(directory, record)
    return EngineResult("completed", "", result.epoch, img_per_s, result.resumed_from)


def _evaluate(result: Any, spec: RunSpec, directory: Path, data_root: Path | str | None) -> Any:
    """Evaluate with the protocol's eval settings: at most ``max_images`` test / OOD images."""
    from calibench.data.datasets import subset
    from calibench.evaluation import evaluate
    from calibench.registry import create_ood

    settings = result.protocol.eval
    dataset = result.dataset
    cap = settings.max_images
    if cap and cap < len(dataset.test):
        dataset = dataclasses.replace(
            dataset,
            test=subset(dataset.test, cap),
            provenance={**dataset.provenance, "eval_max_images": cap},
        )
    ood_sets = []
    for name in spec.ood:
        ood = create_ood(name, root=data_root, like=dataset, seed=spec.seed)
        if cap and cap < len(ood):
            ood = dataclasses.replace(ood, x=ood.x[:cap], y=None if ood.y is None else ood.y[:cap])
        ood_sets.append(ood)
    return evaluate(
        result.model,
        result.loss,
        dataset,
        ood_sets,
        device=result.device,
        n_bins=settings.ece_bins,
        batch_size=settings.batch_size,
        plots_dir=directory,
    )


def record_metrics(metrics: dict[str, Any], temperature_scaling: bool = True) -> dict[str, Any]:
    """The evaluator's metrics for the record; no ``test_ts`` when the protocol turns TS off."""
    return {**metrics, "test_ts": metrics.get("test_ts") if temperature_scaling else None}


def write_status_record(
    spec: RunSpec, directory: Path, status: str, reason: str, **fields: Any
) -> None:
    """A ``failed`` or ``diverged`` record (schema of :mod:`calibench.records`) with its reason."""
    from calibench import records

    try:
        record = records.build_record(spec, status=status, reason=reason, **fields)
    except UsageError:  # the loss is not registered any more: keep the failure all the same
        record = records.build_record(
            spec,
            status=status,
            reason=reason,
            loss_source={"type": "local", "module": None},
            **fields,
        )
    records.write_record(directory, record)


def write_failed_record(spec: RunSpec, directory: Path, *, reason: str, log: str) -> None:
    write_status_record(spec, directory, "failed", f"{reason} (traceback in {log})")
