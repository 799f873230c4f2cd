"""Wall time of one full evaluation: :func:`calibench.evaluation.evaluate` as a run calls it.

The evaluation covers 10,000 ID test images, 5,000 val images (temperature scaling is fitted
on them) and 26,032 OOD images (the size of the SVHN test set; same-sized uniform noise, since
the time does not depend on the pixels), every calibration metric on val, test and test after
TS, and every OOD metric for the msp, energy and maxlogit scores. With ``--shift-per-cell N``
it also evaluates a shift grid of 15 corruptions x 5 severities x N images (75 N images; 10,000
per cell is the full CIFAR-10-C grid, 750,000 images) as a run with ``eval.shift`` does
(:func:`calibench.evaluation.evaluate_shift`, after TS too); its images are random (the time
does not depend on the pixels, and generating CIFAR-10-C is timed by the data module's own
figures), one array shared by every cell so the host memory stays that of one cell. ID images are the first rows
of ``--data`` (an npz with ``x_train``, ``y_train``, ``x_test``, ``y_test``) or random ones.

One untimed warm-up evaluation comes first (``--warmup full``: the same sizes, so CUDA kernels,
cuDNN plans and ``torch.compile`` graphs are ready; ``tiny``: 200 images per set, enough to
import and initialise everything, the default on CPU where a full run is slow). Each timed
evaluation synchronises the device before and after. ``breakdown`` splits the time into the
forward passes and each metric family (the functions :mod:`calibench.evaluation` calls are
wrapped with timers while the benchmark runs). The last line printed is one JSON object.

    python benchmarks/eval_throughput.py --backbone resnet20 --device cpu
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import typer
from benchtools import environment, fail, print_json_line, summarize, wall_timer
from rich.console import Console
from rich.table import Table

import calibench.evaluation as evaluation_module
import calibench.metrics.calibration as calibration_module
from calibench.data.datasets import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, ImageDataset, Split
from calibench.data.ood import OODSet
from calibench.data.shift import CORRUPTIONS, SEVERITIES, ShiftSuite
from calibench.errors import CalibenchError, UsageError
from calibench.registry import create_backbone, create_loss
from calibench.training.trainer import resolve_device

SVHN_TEST_SIZE = 26_032
TIMED = {
    evaluation_module: (
        "predict_logits",
        "predictive_logits",
        "logit_metrics",
        "fit_temperature",
        "compute_ood_scores",
        "ood_metrics",
        "evaluate_shift",  # includes its own predict_logits and logit_metrics calls
    ),
    calibration_module: ("smooth_ece",),
}


def make_sets(
    data: Path | None, n_test: int, n_val: int, n_ood: int, seed: int = 0
) -> tuple[ImageDataset, OODSet]:
    """The ID dataset (empty train, ``n_val`` val, ``n_test`` test) and the OOD noise set."""
    for name, n in (("--n-test", n_test), ("--n-ood", n_ood)):
        if n < 1:
            raise UsageError(f"{name} must be positive, got {n}")
    if n_val < 0:
        raise UsageError(f"--n-val must be >= 0, got {n_val}")
    g = torch.Generator().manual_seed(seed)
    if data is None:
        x_val = torch.randint(0, 256, (n_val, 32, 32, 3), generator=g, dtype=torch.uint8)
        y_val = torch.randint(0, 10, (n_val,), generator=g)
        x_test = torch.randint(0, 256, (n_test, 32, 32, 3), generator=g, dtype=torch.uint8)
        y_test = torch.randint(0, 10, (n_test,), generator=g)
    else:
        if not Path(data).is_file():
            raise UsageError(f"--data {data}: no such file; pass a CIFAR-10 style npz")
        with np.load(data) as f:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.keys())
            if missing:
                raise UsageError(f"--data {data}: missing keys {', '.join(sorted(missing))}")
            if n_val > len(f["y_train"]) or n_test > len(f["y_test"]):
                raise UsageError(f"--data {data} has fewer images than --n-val / --n-test")
            x_val = torch.from_numpy(np.ascontiguousarray(f["x_train"][:n_val]))
            y_val = torch.from_numpy(f["y_train"][:n_val].astype(np.int64))
            x_test = torch.from_numpy(np.ascontiguousarray(f["x_test"][:n_test]))
            y_test = torch.from_numpy(f["y_test"][:n_test].astype(np.int64))
    empty = Split(torch.zeros(0, 32, 32, 3, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64))
    dataset = ImageDataset(
        "cifar10",
        CIFAR10_CLASSES,
        CIFAR10_MEAN,
        CIFAR10_STD,
        train=empty,
        val=Split(x_val, y_val),
        test=Split(x_test, y_test),
    )
    x_ood = torch.randint(0, 256, (n_ood, 32, 32, 3), generator=g, dtype=torch.uint8)
    return dataset, OODSet("noise", x_ood, {"source": "synthetic uniform", "size": n_ood})


def make_shift_suite(per_cell: int, seed: int = 0) -> ShiftSuite:
    """A full-grid suite (15 corruptions x 5 severities) of ``per_cell`` random images per cell,
    one array shared by every cell."""
    if per_cell < 1:
        raise UsageError(f"--shift-per-cell must be positive (or 0 for none), got {per_cell}")
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (per_cell, 32, 32, 3), generator=g, dtype=torch.uint8).numpy()
    y = torch.randint(0, 10, (per_cell,), generator=g).numpy()
    cells = {(c, s): x for c in CORRUPTIONS for s in SEVERITIES}
    source = {"kind": "generated", "note": "benchmark: random images, not CIFAR-10-C"}
    return ShiftSuite.from_arrays("cifar10-c", "cifar10", cells, y, source)


def _shrink(dataset: ImageDataset, ood: OODSet, n: int) -> tuple[ImageDataset, OODSet]:
    def cut(s: Split) -> Split:
        return Split(s.x[:n], s.y[:n])

    small = ImageDataset(
        dataset.name,
        dataset.classes,
        dataset.mean,
        dataset.std,
        dataset.train,
        cut(dataset.val),
        cut(dataset.test),
    )
    return small, OODSet(ood.name, ood.x[:n], ood.provenance)


@contextmanager
def timed_stages(device: torch.device) -> Iterator[dict[str, float]]:
    """Wrap the functions of :data:`TIMED` with timers; yields ``{name: seconds}``."""
    seconds: dict[str, float] = defaultdict(float)
    saved: list[tuple[Any, str, Callable[..., Any]]] = []

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds[name] += time.perf_counter() - t0

        return timed

    for module, names in TIMED.items():
        for name in names:
            fn = getattr(module, name)
            saved.append((module, name, fn))
            setattr(module, name, wrap(name, fn))
    try:
        yield seconds
    finally:
        for module, name, fn in saved:
            setattr(module, name, fn)


def benchmark(
    *,
    backbone: str = "resnet20",
    device: str = "auto",
    batch_size: int = 1000,
    compile: bool = False,
    loss: str = "ce",
    data: Path | None = None,
    n_test: int = 10_000,
    n_val: int = 5_000,
    n_ood: int = SVHN_TEST_SIZE,
    repeats: int = 1,
    warmup: str = "auto",
    breakdown: bool = True,
    shift_per_cell: int = 0,
) -> dict[str, Any]:
    """Time :func:`calibench.evaluation.evaluate`; returns the JSON result (see module doc)."""
    if repeats < 1 or batch_size < 1:
        raise UsageError("--repeats and --batch-size must be positive")
    dev = resolve_device(device)
    if warmup == "auto":
        warmup = "full" if dev.type == "cuda" else "tiny"
    if warmup not in ("full", "tiny", "none"):
        raise UsageError(f"--warmup must be auto, full, tiny or none, got {warmup!r}")
    dataset, ood = make_sets(data, n_test, n_val, n_ood)
    shift = make_shift_suite(shift_per_cell) if shift_per_cell else None
    n_shift = shift.num_cells * shift_per_cell if shift is not None else 0
    torch.manual_seed(0)
    model = create_backbone(backbone, num_classes=dataset.num_classes)
    model = model.to(dev, memory_format=torch.channels_last).eval()
    criterion = create_loss(loss)
    evaluated = torch.compile(model) if compile else model

    def run(ds: ImageDataset, o: OODSet, suite: ShiftSuite | None = shift) -> dict[str, Any]:
        return evaluation_module.evaluate(
            evaluated, criterion, ds, [o], device=dev, batch_size=batch_size, shift=suite
        ).metrics

    if warmup == "full":
        run(dataset, ood)
    elif warmup == "tiny":
        run(*_shrink(dataset, ood, 200), make_shift_suite(2) if shift is not None else None)
    times: list[float] = []
    stages: list[dict[str, float]] = []
    metrics: dict[str, Any] = {}
    for _ in range(repeats):
        if breakdown:
            with timed_stages(dev) as stage_seconds, wall_timer(dev) as t:
                metrics = run(dataset, ood)
            stages.append(dict(stage_seconds))
        else:
            with wall_timer(dev) as t:
                metrics = run(dataset, ood)
        times.append(t["seconds"])
    finite = _all_finite(metrics)
    if not finite:
        raise UsageError("the evaluation produced non-finite metrics")
    stats = summarize(times)
    # The breakdown of one whole run (the lower-median one), never mixed with another run's time.
    middle = sorted(range(len(times)), key=times.__getitem__)[(len(times) - 1) // 2]
    return {
        "device": str(dev),
        "backbone": backbone,
        "batch_size": batch_size,
        "eval_seconds": stats["median"],
        "n_test": n_test,
        "n_val": n_val,
        "n_ood": n_ood,
        "n_shift": n_shift,
        "shift_per_cell": shift_per_cell,
        "images_per_s": (n_test + n_val + n_ood + n_shift) / stats["median"],
        "compile": compile,
        "warmup": warmup,
        "repeats": repeats,
        "stats": stats,
        "stages": stages[middle] if stages else None,
        "stages_run_seconds": times[middle],
        "metrics_finite": finite,
        "data": str(data) if data else "synthetic",
        **environment(dev),
    }


def _all_finite(obj: Any) -> bool:
    if isinstance(obj, dict):
        return all(_all_finite(v) for v in obj.values())
    if isinstance(obj, float):
        return bool(np.isfinite(obj))
    return True


def _print_table(result: dict[str, Any]) -> None:
    console = Console()
    s = result["stats"]
    console.print(
        f"full evaluation of {result['backbone']} on {result['device_name']}: "
        f"{result['n_test']} test + {result['n_val']} val + {result['n_ood']} OOD "
        f"+ {result['n_shift']} shift images, "
        f"batch {result['batch_size']}, compile={result['compile']}: "
        f"median {s['median']:.2f} s (min {s['min']:.2f}, max {s['max']:.2f}, n={s['n']})"
    )
    if result["stages"]:
        table = Table(title="where the time goes (median run)")
        table.add_column("stage")
        table.add_column("seconds", justify="right")
        for name, sec in sorted(result["stages"].items(), key=lambda kv: -kv[1]):
            table.add_row(name, f"{sec:.3f}")
        console.print(table)


app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    backbone: str = typer.Option("resnet20", help="registered backbone name"),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N"),
    batch_size: int = typer.Option(1000, help="evaluation batch size"),
    compile: bool = typer.Option(False, "--compile/--no-compile", help="torch.compile the model"),
    loss: str = typer.Option("ce", help="registered loss (its predictive distribution)"),
    data: Path | None = typer.Option(None, help="CIFAR-10 style npz; default random images"),
    n_test: int = typer.Option(10_000, help="ID test images"),
    n_val: int = typer.Option(5_000, help="val images (temperature scaling is fitted on them)"),
    n_ood: int = typer.Option(SVHN_TEST_SIZE, help="OOD noise images"),
    repeats: int = typer.Option(1, help="timed evaluations"),
    warmup: str = typer.Option("auto", help="auto (full on CUDA, tiny on CPU), full, tiny, none"),
    breakdown: bool = typer.Option(True, "--breakdown/--no-breakdown", help="time each stage"),
    shift_per_cell: int = typer.Option(
        0, help="images per cell of a 75-cell shift grid (10000: full CIFAR-10-C); 0: none"
    ),
) -> None:
    try:
        result = benchmark(
            backbone=backbone,
            device=device,
            batch_size=batch_size,
            compile=compile,
            loss=loss,
            data=data,
            n_test=n_test,
            n_val=n_val,
            n_ood=n_ood,
            repeats=repeats,
            warmup=warmup,
            breakdown=breakdown,
            shift_per_cell=shift_per_cell,
        )
    except CalibenchError as e:
        fail(e)
    _print_table(result)
    print_json_line(result)


if __name__ == "__main__":
    app()
