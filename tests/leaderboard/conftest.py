"""Synthetic run records for the leaderboard tests, built with the real ``build_record``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from calibench.metrics.calibration import adaptive_ece, binned_ece, top_label
from calibench.records import build_record, save_predictions, write_record
from calibench.spec import RunSpec

N_TEST = 600
K = 10
TEMPERATURE = 1.5


def synthetic_logits(labels: np.ndarray, strength: float, seed: int) -> np.ndarray:
    """Gaussian logits with the true class boosted by ``strength`` (higher = more accurate)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(len(labels), K))
    z[np.arange(len(labels)), labels] += strength
    return z.astype(np.float16).astype(np.float32)


def _split_metrics(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    conf, correct = top_label(probs, labels)
    p_true = probs.gather(1, labels[:, None]).squeeze(1)
    return {
        "acc": float(correct.mean()),
        "ece": binned_ece(conf, correct),
        "adaece": adaptive_ece(conf, correct),
        "nll": float(-p_true.log().mean()),
    }


def metrics_from_logits(logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """The evaluator's metric layout, computed with calibench.metrics from the given logits."""
    z = torch.from_numpy(logits).double()
    y = torch.from_numpy(labels)
    return {
        "test": _split_metrics(torch.softmax(z, 1), y),
        "test_ts": {
            "temperature": TEMPERATURE,
            **_split_metrics(torch.softmax(z / TEMPERATURE, 1), y),
        },
        "ood": {},
    }


@pytest.fixture
def test_labels() -> np.ndarray:
    return np.random.default_rng(123).integers(0, K, N_TEST)


@pytest.fixture(autouse=True)
def any_loss_is_softmax(monkeypatch: pytest.MonkeyPatch) -> None:
    """Synthetic loss names (focal, ls, ...) get plain softmax probabilities in the bootstrap."""
    import calibench.registry as registry

    real = registry.create_loss
    monkeypatch.setattr(registry, "create_loss", lambda name, **params: real("ce"))


MakeRun = Callable[..., Path]


@pytest.fixture
def make_run(tmp_path: Path, test_labels: np.ndarray) -> MakeRun:
    """``make_run(loss=..., seed=..., status=..., strength=... | metrics=...)`` -> record path."""

    def make(
        *,
        loss: str = "ce",
        params: dict[str, Any] | None = None,
        seed: int = 0,
        status: str = "completed",
        strength: float | None = 2.0,
        metrics: dict[str, Any] | None = None,
        ood: dict[str, Any] | None = None,
        deviations: dict[str, Any] | None = None,
        dataset: str = "cifar10",
        backbone: str = "resnet20",
        protocol: str = "smoke",
        results: Path | None = None,
        plots: dict[str, bytes] | None = None,
        labels: np.ndarray | None = None,
    ) -> Path:
        spec = RunSpec(
            protocol=protocol,
            protocol_version=1,
            protocol_hash="sha256:test",
            loss=loss,
            backbone=backbone,
            dataset=dataset,
            seed=seed,
            loss_params=params or {},
            ood=tuple(ood or ()),
            deviations=deviations or {},
        )
        run_dir = (results or tmp_path / "results") / protocol / spec.run_id()
        y = test_labels if labels is None else labels
        artifacts: dict[str, Any] = {"plots": {}}
        if status == "completed" and metrics is None and strength is not None:
            logits = synthetic_logits(y, strength, seed)
            metrics = metrics_from_logits(logits, y)
            artifacts["predictions"] = save_predictions(run_dir, logits, y)
        if metrics is not None and ood:
            metrics = {**metrics, "ood": ood}
        for name, payload in (plots or {}).items():
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / f"{name}.png").write_bytes(payload)
            artifacts["plots"][name] = f"{name}.png"
        record = build_record(
            spec,
            status=status,
            reason=None if status == "completed" else f"synthetic {status} run",
            metrics=metrics or {},
            loss_source={"type": "builtin"},
            timing={"train_seconds": 1.0, "img_per_s": 100.0},
            epoch=2,
            artifacts=artifacts,
            code={"calibench_version": "0.1.0", "git_sha": None, "git_dirty": None},
            env={
                "python": "3.11",
                "torch": "2",
                "cuda": None,
                "timm": None,
                "torch_uncertainty": None,
                "device": "cpu",
            },
        )
        return write_record(run_dir, record)

    return make
