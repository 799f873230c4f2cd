"""Synthetic run records for the leaderboard tests, with their saved files, as the evaluator
writes them: ``build_record`` with metrics from ``logit_metrics`` / ``ood_metrics`` of the same
float32 predictive logits and float64 OOD scores that ``save_predictions`` / ``save_ood_scores``
store."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from calibench.leaderboard import Leaderboard, build_leaderboard
from calibench.metrics import logit_metrics, ood_metrics, ood_scores
from calibench.records import build_record, save_ood_scores, save_predictions, write_record
from calibench.spec import RunSpec

N_TEST = 600
N_OOD = 400
K = 10
TEMPERATURE = 1.5
SCORES = ("msp", "energy", "maxlogit")
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
"""The smallest file that passes for a PNG (the signature, then zeros)."""


def synthetic_logits(labels: np.ndarray, strength: float, seed: int) -> np.ndarray:
    """Gaussian logits with the true class boosted by ``strength`` (higher = more accurate)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(len(labels), K))
    z[np.arange(len(labels)), labels] += strength
    return z.astype(np.float32)


def synthetic_ood_scores(names: Sequence[str], seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Each OOD set's scores: those of Gaussian logits with no boosted class (less confident)."""
    out = {}
    for i, name in enumerate(names):
        z = np.random.default_rng([seed, i, 99]).normal(size=(N_OOD, K)).astype(np.float32) * 1.5
        scores = ood_scores(torch.from_numpy(z), SCORES)
        out[name] = {k: v.numpy() for k, v in scores.items()}
    return out


def evaluator_metrics(
    logits: np.ndarray, labels: np.ndarray, ood: dict[str, dict[str, np.ndarray]] | None = None
) -> dict[str, Any]:
    """The evaluator's metric layout, computed with calibench.metrics as the evaluator does."""
    s = torch.from_numpy(logits)
    y = torch.from_numpy(labels)
    id_scores = ood_scores(s, SCORES)
    return {
        "test": logit_metrics(s, y),
        "test_ts": {"temperature": TEMPERATURE, **logit_metrics(s.double() / TEMPERATURE, y)},
        "ood": {
            name: {k: ood_metrics(id_scores[k], torch.from_numpy(v)) for k, v in per.items()}
            for name, per in (ood or {}).items()
        },
    }


@pytest.fixture
def test_labels() -> np.ndarray:
    return np.random.default_rng(123).integers(0, K, N_TEST)


@pytest.fixture
def allow_losses() -> None:
    """Requested by a test that trains in-process, before it builds a leaderboard."""


@pytest.fixture(autouse=True)
def no_loss_is_ever_created(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leaderboard computes everything from saved files: creating a loss is a bug."""
    import calibench.registry as registry

    if "allow_losses" in request.fixturenames:
        return

    def refuse(name: str, **params: Any) -> Any:
        raise AssertionError(f"the leaderboard created loss {name!r}")

    monkeypatch.setattr(registry, "create_loss", refuse)


MakeRun = Callable[..., Path]


@pytest.fixture
def make_run(tmp_path: Path, test_labels: np.ndarray) -> MakeRun:
    """``make_run(loss=..., seed=..., status=..., strength=... | metrics=...)`` -> record path.

    With ``strength`` (the default), the run has saved predictions, OOD scores for each set in
    ``ood_sets``, and the metrics the evaluator computes from them; with ``metrics``, only a
    record holding those numbers (and ``ood``, fake OOD metrics).
    """

    def make(
        *,
        loss: str = "ce",
        params: dict[str, Any] | None = None,
        seed: int = 0,
        status: str = "completed",
        strength: float | None = 2.0,
        metrics: dict[str, Any] | None = None,
        ood: dict[str, Any] | None = None,
        ood_sets: Sequence[str] = (),
        deviations: dict[str, Any] | None = None,
        dataset: str = "cifar10",
        backbone: str = "resnet20",
        protocol: str = "smoke",
        results: Path | None = None,
        plots: dict[str, bytes] | None = None,
        labels: np.ndarray | None = None,
        loss_source: dict[str, Any] | None = None,
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
            ood=tuple(ood_sets or ood or ()),
            deviations=deviations or {},
        )
        run_dir = (results or tmp_path / "results") / protocol / spec.run_id()
        y = test_labels if labels is None else labels
        artifacts: dict[str, Any] = {"plots": {}}
        if status == "completed" and metrics is None and strength is not None:
            logits = synthetic_logits(y, strength, seed)
            scores = synthetic_ood_scores(ood_sets, seed) if ood_sets else None
            metrics = evaluator_metrics(logits, y, scores)
            artifacts["predictions"] = save_predictions(run_dir, logits, y)
            if scores:
                artifacts["ood_scores"] = save_ood_scores(run_dir, scores)
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
            loss_source=loss_source or {"type": "builtin"},
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


@pytest.fixture
def board(make_run: MakeRun, tmp_path: Path) -> Leaderboard:
    """Two seeds of dual_focal with reliability diagrams, a ce row with a diverged seed, and a
    malformed record; OOD columns for SVHN; 50 bootstrap resamples."""
    for seed in range(2):
        make_run(
            loss="dual_focal",
            seed=seed,
            strength=2.5,
            ood_sets=["svhn"],
            plots={"reliability": PNG},
        )
    make_run(loss="ce", seed=0, strength=1.0, ood_sets=["svhn"])
    make_run(loss="ce", seed=1, status="diverged")
    bad = tmp_path / "results" / "smoke" / "junk" / "record.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("[]")
    return build_leaderboard(tmp_path / "results", n_boot=50)
