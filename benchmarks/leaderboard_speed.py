"""Wall time of ``calibench leaderboard`` over a sweep of completed runs, cold and warm.

Makes ``--runs`` synthetic completed runs in a temporary results folder, as the runner leaves
them: ``record.json`` (:func:`calibench.records.build_record` / ``write_record``, its metrics
computed by :func:`calibench.metrics.logit_metrics` / ``ood_metrics`` from the saved arrays, as
the evaluator does), ``test_predictions.npz`` (``--n-test`` float32 predictive logits of
``--classes`` classes, Gaussian with the true class boosted, a different strength per loss) and
``ood_scores.npz`` (msp, energy and maxlogit of SVHN-sized (26,032) Gaussian logits, plus
10,000-image gaussian and uniform sets). Losses are the built-in names, ``--seeds`` seeds each.

Then it runs the real CLI in a subprocess, ``python -m calibench leaderboard --results DIR
--format md --bootstrap N``, with this checkout first on ``PYTHONPATH``:

- **cold**: no ``leaderboard_cache.npz`` in any run folder (every run is bootstrapped, and its
  cache written);
- **warm**: ``--repeats`` more renderings of the unchanged folder (every cache is reused);
- **startup**: ``python -m calibench --help``, the floor set by importing the CLI.

It checks that the warm outputs are byte-identical to the cold one and prints the figures, the
machine's load average, then one JSON object as its last line.

    python benchmarks/leaderboard_speed.py            # 80 runs of 10k images, n_boot 1000
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import typer
from benchtools import REPO_ROOT, environment, fail, print_json_line, summarize
from rich.console import Console
from rich.table import Table

from calibench.errors import CalibenchError, UsageError
from calibench.leaderboard.cache import CACHE_FILENAME
from calibench.metrics import logit_metrics, ood_metrics, ood_scores
from calibench.records import build_record, save_ood_scores, save_predictions, write_record
from calibench.spec import RunSpec

BUILTIN_LOSSES = (
    "brier", "ce", "confidence-penalty", "dual-focal", "flsd53", "focal", "iq-chi2",
    "iq-fkl", "iq-hellinger", "iq-js", "iq-ref-chi", "iq-ref-hellinger", "iq-ref-js",
    "iq-ref-klfix", "iq-rkl", "iq-tv", "logitnorm", "ls", "mbls", "mdca", "mmce",
    "mmce-unweighted", "poly1",
)  # fmt: skip
LOSSES: tuple[tuple[str, dict[str, Any]], ...] = (
    *((name, {}) for name in BUILTIN_LOSSES),
    ("focal", {"gamma": 1.0}),
    ("focal", {"gamma": 5.0}),
    ("ls", {"smoothing": 0.1}),
    ("mmce", {"lam": 4.0}),
)
"""The 23 built-in losses and 4 parameter variants: 27 leaderboard rows."""
SCORES = ("msp", "energy", "maxlogit")
SVHN_TEST_SIZE = 26_032
NOISE_OOD_SIZE = 10_000
TEMPERATURE = 1.3


def _scores(z: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in ood_scores(torch.from_numpy(z), SCORES).items()}


def make_run(
    results: Path, index: int, seed: int, *, labels: np.ndarray, n_classes: int, n_ood: int
) -> Path:
    """One completed run of ``LOSSES[index]`` and ``seed`` under ``results/smoke/<run_id>/``."""
    loss, params = LOSSES[index]
    spec = RunSpec(
        protocol="smoke",
        protocol_version=1,
        protocol_hash="sha256:benchmark",
        loss=loss,
        loss_params=params,
        backbone="resnet20",
        dataset="cifar10",
        seed=seed,
        ood=("svhn", "gaussian", "uniform"),
    )
    run_dir = results / "smoke" / spec.run_id()
    rng = np.random.default_rng([index, seed])
    strength = 2.0 + 0.05 * index
    z = rng.normal(size=(len(labels), n_classes))
    z[np.arange(len(labels)), labels] += strength
    logits = z.astype(np.float32)
    sizes = {
        "svhn": n_ood,
        "gaussian": min(n_ood, NOISE_OOD_SIZE),
        "uniform": min(n_ood, NOISE_OOD_SIZE),
    }
    ood = {
        name: _scores((rng.normal(size=(size, n_classes)) * 1.5).astype(np.float32))
        for name, size in sizes.items()
    }
    s, y = torch.from_numpy(logits), torch.from_numpy(labels)
    id_scores = ood_scores(s, SCORES)
    metrics = {
        "test": logit_metrics(s, y),
        "test_ts": {"temperature": TEMPERATURE, **logit_metrics(s.double() / TEMPERATURE, y)},
        "ood": {
            name: {k: ood_metrics(id_scores[k], torch.from_numpy(v)) for k, v in per.items()}
            for name, per in ood.items()
        },
    }
    artifacts = {
        "predictions": save_predictions(run_dir, logits, labels),
        "ood_scores": save_ood_scores(run_dir, ood),
        "plots": {},
    }
    record = build_record(
        spec,
        status="completed",
        metrics=metrics,
        conventions={"n_bins": 15},
        loss_source={"type": "builtin"},
        timing={"train_seconds": 1.0, "img_per_s": 100.0},
        epoch=2,
        artifacts=artifacts,
    )
    return write_record(run_dir, record)


def make_runs(
    results: Path, *, n_runs: int, n_test: int, n_ood: int, n_classes: int = 10, seeds: int = 3
) -> list[Path]:
    """``n_runs`` completed runs: the losses of :data:`LOSSES` in turn, ``seeds`` seeds each."""
    labels = np.random.default_rng(0).integers(0, n_classes, n_test)
    pairs = [(index, seed) for index in range(len(LOSSES)) for seed in range(seeds)]
    if n_runs > len(pairs):
        raise UsageError(f"--runs at most {len(pairs)} ({len(LOSSES)} losses x {seeds} seeds)")
    return [
        make_run(results, index, seed, labels=labels, n_classes=n_classes, n_ood=n_ood)
        for index, seed in pairs[:n_runs]
    ]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def time_cli(args: list[str]) -> tuple[float, str]:
    """Seconds of ``python -m calibench ARGS`` in a fresh process, and its stdout."""
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "calibench", *args],
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"calibench {' '.join(args)} failed:\n{done.stderr}")
    return seconds, done.stdout


def clear_caches(results: Path) -> int:
    """Delete every run's leaderboard cache; the number deleted."""
    found = list(results.rglob(CACHE_FILENAME))
    for path in found:
        path.unlink()
    return len(found)


def benchmark(
    *,
    runs: int = 80,
    n_test: int = 10_000,
    n_ood: int = SVHN_TEST_SIZE,
    n_boot: int = 1000,
    repeats: int = 3,
    keep: Path | None = None,
) -> dict[str, Any]:
    """Make the runs, then time the CLI cold (no cache) and warm ``repeats`` times."""
    if runs < 1 or n_test < 2 or n_ood < 2 or repeats < 1 or n_boot < 0 or n_boot == 1:
        raise UsageError(
            "need --runs >= 1, --n-test >= 2, --n-ood >= 2, --repeats >= 1, --n-boot 0 or >= 2"
        )
    tmp = Path(tempfile.mkdtemp(prefix="calibench-lb-"))
    results = keep or tmp / "results"
    try:
        t0 = time.perf_counter()
        if not (results / "smoke").is_dir():
            make_runs(results, n_runs=runs, n_test=n_test, n_ood=n_ood)
        make_seconds = time.perf_counter() - t0
        cleared = clear_caches(results)
        args = ["leaderboard", "--results", str(results), "--format", "md"]
        args += ["--bootstrap", str(n_boot)]
        startup, _ = time_cli(["--help"])
        cold, cold_text = time_cli(args)
        warm, identical = [], True
        for _ in range(repeats):
            seconds, text = time_cli(args)
            warm.append(seconds)
            identical &= text == cold_text
        cached = len(list(results.rglob(CACHE_FILENAME)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "runs": runs,
        "n_test": n_test,
        "n_ood_svhn": n_ood,
        "n_boot": n_boot,
        "make_runs_seconds": make_seconds,
        "caches_cleared": cleared,
        "caches_written": cached,
        "startup_seconds": startup,
        "cold_seconds": cold,
        "warm_seconds": summarize(warm),
        "warm_identical_to_cold": identical,
        "rows": cold_text.count("\n"),
        "env": environment(torch.device("cpu")),
    }


def main(
    runs: int = typer.Option(80, help="Completed runs to make (27 losses x 3 seeds at most)."),
    n_test: int = typer.Option(10_000, help="Test images per run."),
    n_ood: int = typer.Option(SVHN_TEST_SIZE, help="SVHN scores per run."),
    n_boot: int = typer.Option(1000, help="--bootstrap of the leaderboard."),
    repeats: int = typer.Option(3, help="Warm renderings timed."),
    keep: Path = typer.Option(None, help="Make (or reuse) the runs here, and keep them."),
) -> None:
    try:
        r = benchmark(
            runs=runs, n_test=n_test, n_ood=n_ood, n_boot=n_boot, repeats=repeats, keep=keep
        )
    except CalibenchError as exc:
        fail(exc)
    table = Table(
        title=f"calibench leaderboard over {runs} runs ({n_test} test images, n_boot {n_boot})"
    )
    table.add_column("what")
    table.add_column("seconds", justify="right")
    table.add_row("make the runs", f"{r['make_runs_seconds']:.1f}")
    table.add_row("startup (python -m calibench --help)", f"{r['startup_seconds']:.2f}")
    table.add_row("cold (no cache)", f"{r['cold_seconds']:.2f}")
    w = r["warm_seconds"]
    table.add_row(
        f"warm (median of {w['n']})", f"{w['median']:.2f} ({w['min']:.2f}-{w['max']:.2f})"
    )
    Console().print(table)
    Console().print(
        f"warm output identical to cold: {r['warm_identical_to_cold']}; "
        f"load average {r['env']['load_avg_1_5_15']}"
    )
    print_json_line(r)


if __name__ == "__main__":
    typer.run(main)
