"""Shared helpers of the speed scripts: device-correct timing, statistics, environment, errors.

Timing on CUDA brackets the timed steps with CUDA events after a ``torch.cuda.synchronize()``,
so queued work of earlier steps is not counted and all work of the timed steps is; on CPU it
uses ``time.perf_counter``. Figures are reported as the median over repeats with the spread
(min, max) and the relative spread ``(max - min) / median``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from calibench.errors import CalibenchError

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_CIFAR10 = REPO_ROOT.parent / "shared" / "data" / "cifar10.npz"


def synchronize(device: torch.device) -> None:
    """Wait for all queued work on ``device`` (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], object], n_steps: int, device: torch.device) -> float:
    """Seconds taken by ``n_steps`` calls of ``step``, all their device work included."""
    synchronize(device)
    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n_steps):
            step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    t0 = time.perf_counter()
    for _ in range(n_steps):
        step()
    return time.perf_counter() - t0


@contextmanager
def wall_timer(device: torch.device) -> Iterator[dict[str, float]]:
    """``with wall_timer(dev) as t: ...`` then ``t["seconds"]``; synchronizes before and after."""
    out: dict[str, float] = {}
    synchronize(device)
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        synchronize(device)
        out["seconds"] = time.perf_counter() - t0


def summarize(values: list[float]) -> dict[str, float]:
    """Median, min, max and relative spread ``(max - min) / median`` of ``values``."""
    med = statistics.median(values)
    lo, hi = min(values), max(values)
    return {
        "median": med,
        "min": lo,
        "max": hi,
        "spread": (hi - lo) / med if med else 0.0,
        "n": len(values),
    }


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (or ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def device_name(device: torch.device) -> str:
    """``"NVIDIA H100 80GB HBM3"`` on CUDA, ``"cpu: <model>, <n> cores"`` on CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu: {cpu_model()}, {os.cpu_count()} cores"


def environment(device: torch.device) -> dict[str, Any]:
    """Date (UTC), device, torch version, load average and the command line, for RESULTS.md."""
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device_name": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_avg_1_5_15": [round(v, 2) for v in load],
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git": _git_head(),
    }


def _git_head() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def print_json_line(result: dict[str, Any]) -> None:
    """Print ``result`` as one JSON line (the scripts' last line)."""
    sys.stdout.write(json.dumps(result, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def fail(error: CalibenchError) -> None:
    """Print a one-line error for a bad argument and exit with status 2."""
    sys.stderr.write(f"error: {error}\n")
    raise SystemExit(2)
