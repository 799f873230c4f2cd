"""Training throughput (img/s) of three pipelines in one process, and their ratios.

- (a) ``calibench``: the trainer's own step (:class:`calibench.training.step.TrainStep`: bf16
  autocast on CUDA when the protocol says so, channels_last, fused SGD on CUDA / foreach on CPU,
  optional ``torch.compile``) fed by the device-resident
  :class:`~calibench.data.pipeline.DeviceLoader` (seeded shuffle, per-sample crop + flip,
  normalisation on the device), under the trainer's backend flags;
- (b) ``pure``: the same ``TrainStep`` object on one pre-made device batch, again and again: the
  upper bound with no input pipeline;
- (c) ``baseline``: the typical CIFAR recipe: a torchvision ``CIFAR10``-style dataset (PIL image
  per sample) with ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip()``, ``ToTensor()``,
  ``Normalize``, a ``DataLoader`` with workers (pinned memory on CUDA), float32, NCHW, plain
  ``torch.optim.SGD``, default backend flags, no compile.

Each pipeline gets ``--warmup`` untimed steps, then ``--repeats`` timed runs of ``--steps``
steps (a and b interleaved); the figure is the median img/s with its spread. Efficiency is
a/b, speed-up a/c. TFLOP/s = 3 x forward FLOPs per image (``torch.utils.flop_counter``,
multiply-add = 2 FLOPs; backward ~ 2 x forward) x img/s of (a). The last line printed is one
JSON object.

    python benchmarks/train_throughput.py --backbone resnet20 --batch-size 128 --device cpu
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import typer
from benchtools import environment, fail, print_json_line, summarize, time_steps
from rich.console import Console
from rich.table import Table
from torch import nn

from calibench.data.datasets import CIFAR10_MEAN, CIFAR10_STD, Split
from calibench.data.pipeline import DeviceLoader
from calibench.errors import CalibenchError, UsageError
from calibench.protocols import load_protocol
from calibench.registry import create_backbone, create_loss
from calibench.training.step import TrainStep, backend_flags, precision_for
from calibench.training.trainer import resolve_device

JSON_KEYS = (
    "device",
    "backbone",
    "batch_size",
    "img_s_calibench",
    "img_s_pure",
    "img_s_baseline",
    "efficiency",
    "speedup",
    "tflops",
)


def load_images(data: Path | None, images: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(x uint8 (N, 32, 32, 3), y int64 (N,))``: the first ``images`` train rows of an npz
    (keys ``x_train``, ``y_train``), or random pixels and labels when ``data`` is ``None``."""
    if images < 1:
        raise UsageError(f"--images must be positive, got {images}")
    if data is None:
        rng = np.random.default_rng(seed)
        x = rng.integers(0, 256, (images, 32, 32, 3), dtype=np.uint8)
        return x, rng.integers(0, 10, images).astype(np.int64)
    if not Path(data).is_file():
        raise UsageError(f"--data {data}: no such file; pass an npz with x_train and y_train")
    with np.load(data) as f:
        if "x_train" not in f or "y_train" not in f:
            raise UsageError(f"--data {data}: needs keys x_train and y_train, has {list(f.keys())}")
        return np.ascontiguousarray(f["x_train"][:images]), f["y_train"][:images].astype(np.int64)


def forward_flops_per_image(model: nn.Module, device: torch.device) -> float:
    """Forward FLOPs of ``model`` per 32x32 image (multiply-add = 2), counted on a batch of 2."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(2, 3, 32, 32, device=device))
    model.train(was_training)
    return counter.get_total_flops() / 2


class _CIFAR10Style(torch.utils.data.Dataset):
    """torchvision ``CIFAR10.__getitem__``: uint8 HWC array -> PIL image -> transform."""

    def __init__(self, x: np.ndarray, y: np.ndarray, transform: Any) -> None:
        self.data, self.targets, self.transform = x, y.tolist(), transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


def _forever(loader: Any) -> Iterator[Any]:
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def _measure(
    steps: dict[str, Any], batch: int, warmup: int, n: int, repeats: int, dev: torch.device
) -> dict[str, list[float]]:
    for step in steps.values():
        time_steps(step, warmup, dev)
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            rates[name].append(batch * n / time_steps(step, n, dev))
    return rates


def run_calibench_and_pure(
    x: np.ndarray,
    y: np.ndarray,
    *,
    backbone: str,
    batch_size: int,
    device: torch.device,
    protocol_name: str,
    loss: str,
    compile: bool,
    warmup: int,
    steps: int,
    repeats: int,
) -> tuple[dict[str, list[float]], str]:
    """img/s of pipelines (a) and (b), interleaved, and the precision used."""
    protocol = load_protocol(protocol_name)
    precision = precision_for(device, protocol.train.precision)
    split = Split(torch.from_numpy(x), torch.from_numpy(y))
    with backend_flags(device):
        torch.manual_seed(0)
        model = create_backbone(backbone, num_classes=10)
        model = model.to(device, memory_format=torch.channels_last)
        criterion = create_loss(loss).to(device)
        criterion.validate_inputs = False
        train_step = TrainStep.from_protocol(
            model, criterion, protocol, device=device, compile=compile
        )
        loader = DeviceLoader(
            split,
            batch_size,
            device,
            CIFAR10_MEAN,
            CIFAR10_STD,
            train=True,
            seed=0,
            channels_last=True,
            padding=protocol.train.augment.crop_padding,
            augment=protocol.train.augment.crop_padding > 0 or protocol.train.augment.flip,
        )
        if len(loader) == 0:
            raise UsageError(f"--images {len(y)} is fewer than one batch of {batch_size}")
        batches = _forever(loader)
        loss_sum = torch.zeros((), device=device)
        x0, y0 = next(batches)
        model.train()

        def step_calibench() -> None:
            nonlocal loss_sum
            xb, yb = next(batches)
            loss_sum += train_step(xb, yb)

        def step_pure() -> None:
            nonlocal loss_sum
            loss_sum += train_step(x0, y0)

        rates = _measure(
            {"calibench": step_calibench, "pure": step_pure},
            batch_size,
            warmup,
            steps,
            repeats,
            device,
        )
        if not torch.isfinite(loss_sum):
            raise UsageError("the training loss became non-finite during the benchmark")
    return rates, precision


def run_baseline(
    x: np.ndarray,
    y: np.ndarray,
    *,
    backbone: str,
    batch_size: int,
    device: torch.device,
    workers: int,
    warmup: int,
    steps: int,
    repeats: int,
) -> list[float]:
    """img/s of pipeline (c), the typical torchvision recipe."""
    from torchvision import transforms

    transform = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD),
        ]
    )
    loader = torch.utils.data.DataLoader(
        _CIFAR10Style(x, y, transform),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=workers > 0,
    )
    torch.manual_seed(0)
    model = create_backbone(backbone, num_classes=10).to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    model.train()
    batches = _forever(loader)

    def step() -> None:
        xb, yb = next(batches)
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        loss = criterion(model(xb), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return _measure({"baseline": step}, batch_size, warmup, steps, repeats, device)["baseline"]


def benchmark(
    *,
    backbone: str = "resnet20",
    batch_size: int = 128,
    device: str = "auto",
    compile: bool = False,
    protocol: str = "standard",
    loss: str = "ce",
    data: Path | None = None,
    images: int = 50_000,
    workers: int = 4,
    warmup: int = 10,
    steps: int = 20,
    repeats: int = 5,
    baseline: bool = True,
) -> dict[str, Any]:
    """Measure pipelines (a), (b) and (c); returns the JSON result (see module doc)."""
    for name, value in (("batch_size", batch_size), ("steps", steps), ("repeats", repeats)):
        if value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if warmup < 0 or workers < 0:
        raise UsageError("--warmup and --workers must be >= 0")
    dev = resolve_device(device)
    x, y = load_images(data, images)
    if len(y) < batch_size:
        raise UsageError(f"{len(y)} images are fewer than one batch of {batch_size}")
    flops = forward_flops_per_image(create_backbone(backbone, num_classes=10).to(dev), dev)
    rates, precision = run_calibench_and_pure(
        x,
        y,
        backbone=backbone,
        batch_size=batch_size,
        device=dev,
        protocol_name=protocol,
        loss=loss,
        compile=compile,
        warmup=warmup,
        steps=steps,
        repeats=repeats,
    )
    if baseline:
        rates["baseline"] = run_baseline(
            x,
            y,
            backbone=backbone,
            batch_size=batch_size,
            device=dev,
            workers=workers,
            warmup=warmup,
            steps=steps,
            repeats=repeats,
        )
    stats = {name: summarize(values) for name, values in rates.items()}
    a = stats["calibench"]["median"]
    b = stats["pure"]["median"]
    c = stats["baseline"]["median"] if baseline else None
    return {
        "device": str(dev),
        "backbone": backbone,
        "batch_size": batch_size,
        "img_s_calibench": a,
        "img_s_pure": b,
        "img_s_baseline": c,
        "efficiency": a / b,
        "speedup": a / c if c else None,
        "tflops": 3 * flops * a / 1e12,
        "compile": compile,
        "precision": precision,
        "gflops_fwd_per_image": flops / 1e9,
        "images": len(y),
        "data": str(data) if data else "synthetic",
        "baseline_workers": workers,
        "warmup": warmup,
        "steps": steps,
        "repeats": repeats,
        "stats": stats,
        **environment(dev),
    }


def _print_table(result: dict[str, Any]) -> None:
    table = Table(
        title=f"train img/s: {result['backbone']} batch {result['batch_size']} on "
        f"{result['device_name']} ({result['precision']}, compile={result['compile']})"
    )
    for col in ("pipeline", "median img/s", "min", "max", "spread"):
        table.add_column(col, justify="right" if col != "pipeline" else "left")
    labels = {
        "calibench": "(a) calibench",
        "pure": "(b) pure model step",
        "baseline": "(c) torchvision baseline",
    }
    for name, s in result["stats"].items():
        table.add_row(
            labels[name],
            f"{s['median']:.1f}",
            f"{s['min']:.1f}",
            f"{s['max']:.1f}",
            f"{100 * s['spread']:.1f}%",
        )
    console = Console()
    console.print(table)
    console.print(f"efficiency a/b = {result['efficiency']:.3f}")
    if result["speedup"] is not None:
        console.print(f"speed-up a/c = {result['speedup']:.2f}x")
    console.print(
        f"achieved {result['tflops']:.3f} TFLOP/s "
        f"({result['gflops_fwd_per_image']:.3f} GFLOP forward per image, x3 for training)"
    )


app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    backbone: str = typer.Option("resnet20", help="registered backbone name"),
    batch_size: int = typer.Option(128, help="images per step"),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N"),
    compile: bool = typer.Option(False, "--compile/--no-compile", help="torch.compile (a), (b)"),
    protocol: str = typer.Option("standard", help="protocol giving optimizer, precision, crop"),
    loss: str = typer.Option("ce", help="registered loss name"),
    data: Path | None = typer.Option(None, help="npz with x_train/y_train; default random"),
    images: int = typer.Option(50_000, help="images in the training set"),
    workers: int = typer.Option(4, help="DataLoader workers of the baseline (c)"),
    warmup: int = typer.Option(10, help="untimed steps per pipeline"),
    steps: int = typer.Option(20, help="steps per timed repeat"),
    repeats: int = typer.Option(5, help="timed repeats per pipeline"),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="run pipeline (c)"),
) -> None:
    try:
        result = benchmark(
            backbone=backbone,
            batch_size=batch_size,
            device=device,
            compile=compile,
            protocol=protocol,
            loss=loss,
            data=data,
            images=images,
            workers=workers,
            warmup=warmup,
            steps=steps,
            repeats=repeats,
            baseline=baseline,
        )
    except CalibenchError as e:
        fail(e)
    _print_table(result)
    print_json_line(result)


if __name__ == "__main__":
    app()
