"""A short real training run, checked: ``train()`` then ``evaluate()`` on real CIFAR-10 images.

Trains ``--backbone`` with cross-entropy for ``--epochs`` epochs of the ``--protocol`` recipe
(its optimizer, schedule over those epochs, augmentation, precision) on the ``cifar10.npz`` in
``--data-root`` (e.g. the carried subset cut by ``make_subset.py``), then evaluates it on val
(temperature scaling), test and a Gaussian-noise OOD set. It checks that the run completed,
that the mean training loss fell from the first epoch to the last, and that every metric is
finite. Prints the figures; the last line is one JSON object with ``"ok"``. Exit status 1 when
a check fails.

    python benchmarks/train_check.py --data-root .carry/cifar10_subset --device cuda
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import typer
from benchtools import environment, fail, print_json_line, wall_timer
from rich.console import Console

from calibench.data.datasets import ImageDataset, Split
from calibench.errors import CalibenchError, UsageError
from calibench.evaluation import evaluate
from calibench.protocols import load_protocol
from calibench.registry import create_ood
from calibench.spec import RunSpec
from calibench.training.trainer import resolve_device, train


def _cap(dataset: ImageDataset, n: int) -> ImageDataset:
    def cut(s: Split) -> Split:
        return Split(s.x[:n], s.y[:n])

    return dataclasses.replace(dataset, val=cut(dataset.val), test=cut(dataset.test))


def _finite(obj: Any) -> bool:
    if isinstance(obj, dict):
        return all(_finite(v) for v in obj.values())
    if isinstance(obj, float):
        return math.isfinite(obj)
    return True


def check(
    *,
    data_root: Path,
    backbone: str = "resnet50",
    device: str = "auto",
    protocol: str = "fast",
    epochs: int = 2,
    batch_size: int = 0,
    train_subset: int = 0,
    eval_images: int = 0,
    compile: bool = False,
    run_dir: Path | None = None,
) -> dict[str, Any]:
    """Train, evaluate and check; returns the JSON result (see module doc)."""
    if not (Path(data_root) / "cifar10.npz").is_file():
        raise UsageError(
            f"--data-root {data_root} has no cifar10.npz; cut one with benchmarks/make_subset.py"
        )
    if epochs < 2:
        raise UsageError(f"--epochs must be >= 2 to see the loss fall, got {epochs}")
    dev = resolve_device(device)
    base = load_protocol(protocol)
    overrides: dict[str, Any] = {"epochs": epochs}
    if batch_size:
        overrides["batch_size"] = batch_size
    if train_subset:
        overrides["train_subset"] = train_subset
    _, deviations = base.with_overrides(**overrides)
    spec = RunSpec(
        protocol=base.name,
        protocol_version=base.version,
        protocol_hash=base.content_hash,
        loss="ce",
        backbone=backbone,
        dataset="cifar10",
        seed=0,
        deviations=deviations,
    )
    with tempfile.TemporaryDirectory(prefix="calibench-train-check-") as tmp:
        t0 = time.perf_counter()
        result = train(
            spec,
            run_dir or Path(tmp) / "run",
            device=dev,
            data_root=data_root,
            compile=compile,
        )
        train_wall = time.perf_counter() - t0
    dataset = _cap(result.dataset, eval_images) if eval_images else result.dataset
    ood = create_ood("gaussian", like=dataset)
    with wall_timer(dev) as t:
        ev = evaluate(result.model, result.loss, dataset, [ood], device=dev)
    history = result.history
    checks = {
        "completed": result.status == "completed" and len(history) == epochs,
        "loss_fell": len(history) >= 2 and history[-1] < history[0],
        "losses_finite": all(math.isfinite(v) for v in history),
        "metrics_finite": _finite(ev.metrics),
    }
    return {
        "ok": all(checks.values()),
        "checks": checks,
        "device": str(dev),
        "backbone": backbone,
        "protocol": result.protocol.label,
        "precision": result.precision,
        "compile": compile,
        "epochs": epochs,
        "batch_size": result.protocol.train.batch_size,
        "train_images": len(dataset.train),
        "history": history,
        "train_img_s": result.timing["img_per_s"],
        "train_seconds": result.timing["train_seconds"],
        "train_wall_seconds": train_wall,
        "eval_seconds": t["seconds"],
        "eval_sizes": {"val": len(dataset.val), "test": len(dataset.test), "ood": len(ood.x)},
        "test": ev.metrics["test"],
        "test_ts": ev.metrics["test_ts"],
        "ood": ev.metrics["ood"],
        **environment(dev),
    }


app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    data_root: Path = typer.Option(..., help="folder holding cifar10.npz"),
    backbone: str = typer.Option("resnet50", help="registered backbone name"),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N"),
    protocol: str = typer.Option("fast", help="protocol whose recipe is trained"),
    epochs: int = typer.Option(2, help="epochs (>= 2)"),
    batch_size: int = typer.Option(0, help="batch size; 0 keeps the protocol's"),
    train_subset: int = typer.Option(0, help="train images; 0 keeps all"),
    eval_images: int = typer.Option(0, help="cap on val and test images; 0 keeps all"),
    compile: bool = typer.Option(False, "--compile/--no-compile", help="torch.compile"),
) -> None:
    try:
        result = check(
            data_root=data_root,
            backbone=backbone,
            device=device,
            protocol=protocol,
            epochs=epochs,
            batch_size=batch_size,
            train_subset=train_subset,
            eval_images=eval_images,
            compile=compile,
        )
    except CalibenchError as e:
        fail(e)
    console = Console()
    console.print(
        f"{result['backbone']} {result['epochs']} epochs on {result['train_images']} images, "
        f"{result['device_name']} ({result['precision']}): losses {result['history']}, "
        f"{result['train_img_s']:.0f} img/s; evaluation {result['eval_seconds']:.2f} s; "
        f"test acc {result['test']['acc']:.4f} ece {result['test']['ece']:.4f}"
    )
    console.print(f"checks: {result['checks']} -> {'OK' if result['ok'] else 'FAILED'}")
    print_json_line(result)
    if not result["ok"]:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
