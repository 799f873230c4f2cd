"""Time to write one training checkpoint atomically, and what it costs a GPU run per epoch.

Builds the backbone (default ``resnet50``, CIFAR stem, 10 classes) and an SGD optimizer with
momentum, takes one step so the momentum buffers exist, and writes the trainer's checkpoint
content (model, optimizer, scheduler, RNG states, history, spec) with
:func:`calibench.training.checkpoint.save_checkpoint`: ``torch.save`` to a temporary file in the
same folder, flush, ``fsync``, ``os.replace``, ``fsync`` of the folder. Each of ``--repeats``
writes goes to a fresh folder under ``--dir`` (default: a temporary folder beside the
repository, on its disk, not on a tmpfs); the figure is the median with its spread.

The cost per epoch follows from ``--img-per-s`` and ``--epoch-images`` (the issue's GPU target:
21,000 img/s, 45,000 images): an epoch trains ``epoch_images / img_per_s`` seconds; writing a
checkpoint after every epoch costs ``write / (epoch + write)`` of the time, writing one every
``--every`` seconds ``write / (every + write)``. With ``--device cuda`` the model and optimizer
state live on the GPU, as in training, and the timed write includes their device-to-host copy.
The last line printed is one JSON object.

    python benchmarks/checkpoint_cost.py --backbone resnet50 --repeats 5
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import typer
from benchtools import REPO_ROOT, environment, fail, print_json_line, summarize, synchronize
from rich.console import Console
from rich.table import Table

from calibench.errors import CalibenchError, UsageError
from calibench.registry import create_backbone
from calibench.training import CHECKPOINT_EVERY_S
from calibench.training.checkpoint import capture_rng_state, save_checkpoint


def checkpoint_state(backbone: str, device: str = "cpu", num_classes: int = 10) -> dict[str, Any]:
    """What the trainer checkpoints for ``backbone`` after one SGD step with momentum."""
    model = create_backbone(backbone, num_classes=num_classes).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)
    x = torch.randn(2, 3, 32, 32, device=device)
    model(x).logsumexp(1).mean().backward()
    optimizer.step()
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "loss": {},
        "rng": capture_rng_state(),
        "loader": {"seed": 0, "epoch": 1, "step": 0},
        "history": [2.3],
        "spec": {"backbone": backbone},
        "train_seconds_total": 1.0,
    }


def tensor_megabytes(state: Any) -> float:
    """MB (10^6 bytes) of the tensors in ``state``, nested dicts and lists included."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size() / 1e6
    if isinstance(state, dict):
        return sum(tensor_megabytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(tensor_megabytes(v) for v in state)
    return 0.0


def cost_fractions(
    write_s: float, img_per_s: float, epoch_images: int, every_s: float
) -> dict[str, float]:
    """The share of training time spent writing checkpoints, per epoch and per interval."""
    epoch_s = epoch_images / img_per_s
    return {
        "epoch_seconds": epoch_s,
        "every_epoch_fraction": write_s / (epoch_s + write_s),
        "by_time_fraction": write_s / (every_s + write_s),
        "by_time_every_s": every_s,
    }


def benchmark(
    backbone: str = "resnet50",
    repeats: int = 5,
    directory: Path | None = None,
    img_per_s: float = 21_000.0,
    epoch_images: int = 45_000,
    every_s: float = CHECKPOINT_EVERY_S,
    device: str = "cpu",
) -> dict[str, Any]:
    if repeats < 1:
        raise UsageError(f"--repeats must be >= 1, got {repeats}")
    if img_per_s <= 0 or epoch_images < 1 or every_s <= 0:
        raise UsageError("--img-per-s, --epoch-images and --every must be positive")
    state = checkpoint_state(backbone, device)
    parent = Path(directory) if directory is not None else REPO_ROOT.parent
    root = Path(tempfile.mkdtemp(prefix=".checkpoint-cost-", dir=parent))
    seconds, file_mb = [], 0.0
    try:
        for i in range(repeats):
            synchronize(torch.device(device))
            t0 = time.perf_counter()
            path = save_checkpoint(root / str(i), 1, state)
            seconds.append(time.perf_counter() - t0)
            file_mb = path.stat().st_size / 1e6
    finally:
        shutil.rmtree(root, ignore_errors=True)
    stats = summarize(seconds)
    return {
        "benchmark": "checkpoint_cost",
        "backbone": backbone,
        "file_mb": file_mb,
        "model_mb": tensor_megabytes(state["model"]),
        "optimizer_mb": tensor_megabytes(state["optimizer"]),
        "write_seconds": stats["median"],
        "stats": stats,
        "write_mb_per_s": file_mb / stats["median"],
        "img_per_s": img_per_s,
        "epoch_images": epoch_images,
        **cost_fractions(stats["median"], img_per_s, epoch_images, every_s),
        "folder": str(parent),
        "state_device": device,
        **environment(torch.device(device)),
    }


def main(
    backbone: str = typer.Option("resnet50", help="Backbone whose checkpoint is written."),
    repeats: int = typer.Option(5, help="Checkpoints written (median reported)."),
    directory: Path = typer.Option(None, "--dir", help="Folder to write in (default: ../)."),
    img_per_s: float = typer.Option(21_000.0, help="Training speed assumed for the cost."),
    epoch_images: int = typer.Option(45_000, help="Images per epoch assumed for the cost."),
    every: float = typer.Option(CHECKPOINT_EVERY_S, help="Seconds between time-based ones."),
    device: str = typer.Option("cpu", help="Where the state lives: cpu or cuda."),
) -> None:
    """Time one atomic checkpoint write and its share of a GPU epoch."""
    try:
        r = benchmark(backbone, repeats, directory, img_per_s, epoch_images, every, device)
    except CalibenchError as exc:
        fail(exc)
    table = Table(title=f"checkpoint write: {backbone} + SGD momentum ({r['device_name']})")
    for col in ("MB", "write s (median)", "spread", "MB/s", "every epoch", f"every {every:g} s"):
        table.add_column(col, justify="right")
    table.add_row(
        f"{r['file_mb']:.1f}",
        f"{r['write_seconds']:.3f}",
        f"{r['stats']['spread']:.0%}",
        f"{r['write_mb_per_s']:.0f}",
        f"{r['every_epoch_fraction']:.1%}",
        f"{r['by_time_fraction']:.3%}",
    )
    Console().print(table)
    Console().print(
        f"epoch of {epoch_images:,} images at {img_per_s:,.0f} img/s: {r['epoch_seconds']:.2f} s"
    )
    print_json_line(r)


if __name__ == "__main__":
    typer.run(main)
