"""Training accuracy of finished runs: does a protocol put its runs in the over-fitting regime?

For each completed run under ``RESULTS/<protocol>/<run_id>/`` that still has its final
checkpoint (``checkpoints/epoch-<last>.pt``; published folders keep none), the final weights
classify the run's own training images (the class-stratified subset its protocol trains on, no
augmentation, eval mode, float32) and the script prints one JSON line per run: loss, seed,
``train_acc``, and the record's test accuracy and ECE. ``small`` v1 asks CE for at least 99 %
(``calibench/protocol_files/small.toml``).

    python benchmarks/train_accuracy.py leaderboards/small/runs --losses ce --data-root ../shared/data
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from calibench.errors import CalibenchError, UsageError


def train_accuracy(run_dir: Path, data_root: Path | None, device: str = "cpu") -> dict[str, object]:
    """One finished run's training accuracy from its newest checkpoint (see the module docstring)."""
    from calibench.evaluation import predict_logits
    from calibench.records import load_record
    from calibench.registry import create_backbone
    from calibench.spec import RunSpec
    from calibench.training.checkpoint import list_checkpoints, load_checkpoint
    from calibench.training.trainer import effective_protocol, training_dataset

    record = load_record(run_dir / "record.json")
    spec = RunSpec.from_dict(record["spec"])
    checkpoints = list_checkpoints(run_dir / "checkpoints")
    if not checkpoints:
        raise UsageError(f"{run_dir} has no checkpoint left to read the weights from")
    epoch, path = checkpoints[-1]
    dataset = training_dataset(spec, effective_protocol(spec), data_root)
    model = create_backbone(spec.backbone, num_classes=dataset.num_classes)
    model.load_state_dict(load_checkpoint(path)["model"])
    logits = predict_logits(model, dataset.train.x, dataset.mean, dataset.std, device=device)
    correct = (logits.argmax(1) == dataset.train.y).float().mean().item()
    return {
        "run_id": record["run_id"],
        "loss": record["loss"]["label"],
        "seed": spec.seed,
        "epoch": epoch,
        "train_images": len(dataset.train.y),
        "train_acc": correct,
        "test_acc": record["metrics"]["test"]["acc"],
        "test_ece": record["metrics"]["test"]["ece"],
    }


def main(
    results: Path = typer.Argument(..., help="Results folder: RESULTS/<protocol>/<run_id>/."),
    losses: str = typer.Option(None, "--losses", help="Comma-separated loss labels; default all."),
    data_root: Path = typer.Option(None, "--data-root", help="Folder of data files."),
) -> None:
    """Print one JSON line per completed run with a checkpoint: its training accuracy."""
    wanted = None if losses is None else {x.strip() for x in losses.split(",") if x.strip()}
    found = 0
    try:
        for record_path in sorted(results.glob("*/*/record.json")):
            record = json.loads(record_path.read_text(encoding="utf-8"))
            if record["status"] != "completed":
                continue
            if wanted is not None and record["loss"]["label"] not in wanted:
                continue
            if not (record_path.parent / "checkpoints").is_dir():
                continue
            print(json.dumps(train_accuracy(record_path.parent, data_root)), flush=True)
            found += 1
    except CalibenchError as exc:
        raise SystemExit(f"error: {exc}") from None
    if not found:
        raise SystemExit(f"error: no completed run with a checkpoint under {results}")


if __name__ == "__main__":
    typer.run(main)
