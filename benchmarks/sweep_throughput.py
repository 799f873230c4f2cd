"""Total training throughput of a whole sweep, for several ``--runs-per-device``.

For each N of ``--runs-per-device``, runs one real ``calibench run`` (a subprocess; same
losses, seeds and settings every time, into a fresh results folder) with ``--runs-per-device
N`` and ``--cpu-threads`` (on the CPU each of the N workers gets ``cpu_threads // N``
threads), and reports:

- ``sweep_img_per_s``: images trained by all runs / wall-clock seconds of the whole command
  (process start, data loading, training, evaluation, records): what a user waits for;
- ``train_img_per_s_per_run``: the mean over runs of the trainer's own img/s (training only);
- ``cpu_threads``: the threads each run used, from its record.

Records of the same spec must not depend on N at the same threads per run: the script checks
that the metrics of sweeps whose runs used the same thread count agree, and says so (CPU
results differ between thread counts). The machine's load average is printed;
other processes on the machine change the figures. The last line printed is one JSON object.

    python benchmarks/sweep_throughput.py --runs-per-device 1 2 --cpu-threads 2 \\
        --train-subset 5000 --epochs 2 --seeds 0-3 --data-root ../shared/data
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import typer
from benchtools import REPO_ROOT, SHARED_CIFAR10, environment, fail, print_json_line
from rich.console import Console
from rich.table import Table

from calibench.errors import CalibenchError, UsageError


def sweep_command(
    results: Path,
    runs_per_device: int,
    *,
    device: str = "cpu",
    cpu_threads: int | None = 2,
    losses: str = "ce",
    backbone: str = "resnet20",
    protocol: str = "smoke",
    seeds: str = "0-3",
    train_subset: int | None = None,
    epochs: int | None = None,
    data_root: Path | None = None,
) -> list[str]:
    """The ``calibench run`` command line of one sweep."""
    cmd = [
        sys.executable, "-m", "calibench", "run", "--losses", losses, "--backbone", backbone,
        "--protocol", protocol, "--seeds", seeds, "--device", device, "--results", str(results),
        "--runs-per-device", str(runs_per_device), "--no-live",
    ]  # fmt: skip
    if cpu_threads is not None:
        cmd += ["--cpu-threads", str(cpu_threads)]
    if train_subset is not None:
        cmd += ["--train-subset", str(train_subset)]
    if epochs is not None:
        cmd += ["--epochs", str(epochs)]
    if data_root is not None:
        cmd += ["--data-root", str(data_root)]
    return cmd


def sweep_figures(records: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    """Throughput of one sweep from its records and its wall-clock seconds."""
    if not records or any(r["status"] != "completed" for r in records):
        raise UsageError("the sweep did not complete every run; see its output above")
    timings = [r["timing"] for r in records]
    images = sum(t["img_per_s"] * t["train_seconds"] for t in timings)
    threads = sorted({t.get("cpu_threads") for t in timings}, key=str)
    return {
        "runs": len(records),
        "wall_seconds": wall_s,
        "train_images": round(images),
        "sweep_img_per_s": images / wall_s,
        "train_img_per_s_per_run": sum(t["img_per_s"] for t in timings) / len(timings),
        "train_seconds_per_run": sum(t["train_seconds"] for t in timings) / len(timings),
        "cpu_threads": threads[0] if len(threads) == 1 else threads,
    }


def run_sweep(cmd: list[str]) -> tuple[float, str]:
    path = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}  # this checkout's calibench
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise UsageError(f"calibench run exited with {done.returncode}")
    return wall, done.stdout


def read_records(results: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(results.rglob("record.json"))]


def benchmark(runs_per_device: list[int], keep: Path | None = None, **options: Any) -> dict:
    if not runs_per_device or min(runs_per_device) < 1:
        raise UsageError("--runs-per-device takes positive integers")
    root = Path(tempfile.mkdtemp(prefix="sweep-throughput-", dir=keep))
    sweeps: list[dict[str, Any]] = []
    by_threads: dict[str, list[dict[str, Any]]] = {}
    try:
        for n in runs_per_device:
            results = root / f"n{n}"
            cmd = sweep_command(results, n, **options)
            load_before = os.getloadavg()
            wall, _ = run_sweep(cmd)
            records = read_records(results)
            sweeps.append(
                {
                    "runs_per_device": n,
                    **sweep_figures(records, wall),
                    "load_avg_before": [round(v, 2) for v in load_before],
                    "command": " ".join(cmd[1:]),
                }
            )
            by_threads.setdefault(str(sweeps[-1]["cpu_threads"]), []).append(
                {r["run_id"]: r["metrics"] for r in records}
            )
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
    same = {
        threads: all(m == group[0] for m in group)
        for threads, group in by_threads.items()
        if len(group) > 1
    }
    return {
        "benchmark": "sweep_throughput",
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in options.items()},
        "sweeps": sweeps,
        "records_equal_at_same_threads": same or None,
        **environment(torch.device(options.get("device", "cpu"))),
    }


def main(
    runs_per_device: list[int] = typer.Option([1, 2], help="Values of --runs-per-device."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    cpu_threads: int = typer.Option(2, help="--cpu-threads of each sweep (split among workers)."),
    losses: str = typer.Option("ce"),
    backbone: str = typer.Option("resnet20"),
    protocol: str = typer.Option("smoke"),
    seeds: str = typer.Option("0-3", help="Seeds: the sweep has one run per seed and loss."),
    train_subset: int = typer.Option(None, help="--train-subset (default: the protocol's)."),
    epochs: int = typer.Option(None, help="--epochs (default: the protocol's)."),
    data_root: Path = typer.Option(
        SHARED_CIFAR10.parent if SHARED_CIFAR10.exists() else None, help="--data-root."
    ),
    keep: Path = typer.Option(None, help="Keep the results folders under this folder."),
) -> None:
    """Time whole sweeps with several --runs-per-device and print their total img/s."""
    options = dict(
        device=device,
        cpu_threads=cpu_threads,
        losses=losses,
        backbone=backbone,
        protocol=protocol,
        seeds=seeds,
        train_subset=train_subset,
        epochs=epochs,
        data_root=data_root,
    )
    try:
        r = benchmark(list(runs_per_device), keep, **options)
    except CalibenchError as exc:
        fail(exc)
    table = Table(title=f"sweep throughput: {backbone}, {protocol}, {r['device_name']}")
    for col in ("runs/device", "runs", "threads/run", "wall s", "sweep img/s", "train img/s/run"):
        table.add_column(col, justify="right")
    for s in r["sweeps"]:
        table.add_row(
            str(s["runs_per_device"]),
            str(s["runs"]),
            str(s["cpu_threads"]),
            f"{s['wall_seconds']:.1f}",
            f"{s['sweep_img_per_s']:.0f}",
            f"{s['train_img_per_s_per_run']:.0f}",
        )
    console = Console()
    console.print(table)
    console.print(
        f"records equal at the same threads per run: {r['records_equal_at_same_threads']}"
    )
    console.print(f"load average (1, 5, 15 min) at the end: {r['load_avg_1_5_15']}")
    print_json_line(r)


if __name__ == "__main__":
    typer.run(main)
