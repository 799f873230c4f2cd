"""Time the two metric hot spots of an evaluation and a leaderboard build, on CPU.

- ``smooth_ece`` on ``--n`` top-label confidences of a well-calibrated model (confidences
  ``Beta(--sharpness, 1)``, correctness ``Bernoulli(confidence)``: smECE about 0.001 for the
  default 300), next to torch-uncertainty's own ``SmoothCalibrationError(kernel_type=
  "reflected")`` with its direct ``conv1d``, the computation calibench used before;
- ``bootstrap_ci`` of every vectorised metric (``FAST_METRICS``), ``--n-boot`` resamples of
  ``--n`` samples with ``--classes`` classes.

Median of ``--repeats`` calls after one warm-up call. The last line printed is one JSON object.

    python benchmarks/metric_speed.py
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import typer
from benchtools import environment, print_json_line, summarize
from rich.console import Console

from calibench.metrics import FAST_METRICS, bootstrap_ci
from calibench.metrics.calibration import smooth_ece


def _seconds(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return summarize(times)


def _direct_smooth_ece(conf: torch.Tensor, correct: torch.Tensor) -> float:
    from torch_uncertainty.metrics.classification.calibration.smooth_calibration_error import (
        SmoothCalibrationError,
    )

    metric = SmoothCalibrationError(kernel_type="reflected", bandwidth="auto")
    c, a = conf.float(), correct.float()
    return float(metric._compute_smooth_ece(c, a, metric._search_bandwidth(c, a)))


def benchmark(
    n: int = 10_000,
    sharpness: float = 300.0,
    classes: int = 10,
    n_boot: int = 1000,
    repeats: int = 5,
) -> dict[str, Any]:
    """Time smooth_ece (FFT and direct) and bootstrap_ci; see module doc."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    conf = torch.distributions.Beta(torch.tensor(sharpness), torch.tensor(1.0)).sample((n,))
    conf = conf.double()
    correct = (torch.rand(n, generator=g, dtype=torch.float64) < conf).double()
    probs = torch.softmax(3 * torch.randn(n, classes, generator=g, dtype=torch.float64), 1)
    labels = torch.randint(0, classes, (n,), generator=g)
    return {
        "n": n,
        "smece": smooth_ece(conf, correct),
        "smece_direct": _direct_smooth_ece(conf, correct),
        "smooth_ece_s": _seconds(lambda: smooth_ece(conf, correct), repeats),
        "smooth_ece_direct_s": _seconds(lambda: _direct_smooth_ece(conf, correct), repeats),
        "bootstrap_s": _seconds(
            lambda: bootstrap_ci(probs, labels, list(FAST_METRICS), n_boot=n_boot), repeats
        ),
        "n_boot": n_boot,
        **environment(torch.device("cpu")),
    }


app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    n: int = typer.Option(10_000, help="samples"),
    sharpness: float = typer.Option(300.0, help="confidences ~ Beta(sharpness, 1)"),
    classes: int = typer.Option(10, help="classes of the bootstrap probabilities"),
    n_boot: int = typer.Option(1000, help="bootstrap resamples"),
    repeats: int = typer.Option(5, help="timed calls"),
) -> None:
    r = benchmark(n, sharpness, classes, n_boot, repeats)
    Console().print(
        f"smooth_ece (FFT): {r['smooth_ece_s']['median']:.4f} s, torch-uncertainty direct "
        f"conv1d: {r['smooth_ece_direct_s']['median']:.4f} s per call (smECE {r['smece']:.5f} "
        f"vs {r['smece_direct']:.5f}); bootstrap_ci of {len(FAST_METRICS)} metrics x "
        f"{r['n_boot']}: {r['bootstrap_s']['median']:.3f} s"
    )
    print_json_line(r)


if __name__ == "__main__":
    app()
