"""The evaluator on a tiny model: structure of the result, probabilities, TS, OOD, plots, errors."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from calibench.data.datasets import ImageDataset, Split
from calibench.data.ood import OODSet
from calibench.errors import UsageError
from calibench.evaluation import Evaluation, NonFiniteLogitsError, evaluate, predict_logits
from calibench.losses.base import CalibrationLoss
from calibench.metrics import (
    CALIBRATION_KEYS,
    FPR95_CONVENTION,
    OOD_KEYS,
    calibration_metrics,
    fit_temperature,
)

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def toy_split(n: int, seed: int) -> Split:
    """Class c has images of brightness about 60 c + 40, with 15 % of the labels redrawn at random,
    so the task is learnable from the mean pixel but not separable (temperature stays finite)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    noise = torch.randint(0, 80, (n, 32, 32, 3), generator=g)
    x = (noise + 60 * y[:, None, None, None]).to(torch.uint8)
    redraw = torch.rand(n, generator=g) < 0.15
    y = torch.where(redraw, torch.randint(0, 3, (n,), generator=g), y)
    return Split(x, y)


@pytest.fixture
def fast_smece(monkeypatch) -> None:
    """smECE's bandwidth search costs about a second per call; it is tested in tests/metrics."""
    import calibench.metrics.calibration as calibration

    monkeypatch.setattr(calibration, "smooth_ece", lambda conf, correct: 0.125)


@pytest.fixture
def toy() -> ImageDataset:
    return ImageDataset(
        "toy", ("a", "b", "c"), MEAN, STD, toy_split(8, 0), toy_split(200, 1), toy_split(300, 2)
    )


class MeanPixel(nn.Module):
    """Logits from the mean normalised pixel: class c scores -(mean - centre_c)^2 * sharpness."""

    def __init__(self, sharpness: float = 3.0) -> None:
        super().__init__()
        self.centres = nn.Parameter(torch.tensor([-1.4, -0.45, 0.5]))
        self.sharpness = sharpness

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3))[:, None]
        return -self.sharpness * (m - self.centres) ** 2 * 10


class HalfTemperatureLoss(CalibrationLoss):
    """A loss whose predictive distribution is softmax(2 z), not softmax(z)."""

    def compute(self, logits, targets):
        return nn.functional.cross_entropy(2 * logits, targets)

    def probabilities(self, logits):
        return torch.softmax(2 * logits, dim=-1)


def ood(n: int = 150) -> OODSet:
    g = torch.Generator().manual_seed(9)
    return OODSet("noise", torch.randint(0, 256, (n, 32, 32, 3), generator=g).to(torch.uint8))


def test_result_structure_and_json(toy: ImageDataset, tmp_path, fast_smece) -> None:
    from calibench.losses.ce import CrossEntropyLoss

    model = MeanPixel()
    model.train()
    ev = evaluate(
        model, CrossEntropyLoss(), toy, [ood()], device="cpu", batch_size=64, plots_dir=tmp_path
    )
    assert isinstance(ev, Evaluation)
    assert model.training  # restored
    json.dumps(ev.metrics, allow_nan=False)
    json.dumps(ev.conventions, allow_nan=False)
    assert set(ev.metrics) == {"val", "test", "test_ts", "ood"}
    assert set(ev.metrics["test"]) == set(CALIBRATION_KEYS)
    assert set(ev.metrics["test_ts"]) == {"temperature", *CALIBRATION_KEYS}
    assert set(ev.metrics["ood"]) == {"noise"}
    assert set(ev.metrics["ood"]["noise"]) == {"msp", "energy", "maxlogit"}
    assert set(ev.metrics["ood"]["noise"]["msp"]) == set(OOD_KEYS)
    assert ev.metrics["test"]["acc"] > 0.75  # the toy task is learnable from the mean pixel
    assert ev.test_logits.dtype == torch.float32 and ev.test_logits.shape == (300, 3)
    assert torch.equal(ev.test_labels, toy.test.y)
    assert ev.conventions["n_bins"] == 15 and ev.conventions["norm"] == "l1"
    assert ev.conventions["fpr95"] == FPR95_CONVENTION and ev.conventions["ts_fit_split"] == "val"
    assert set(ev.plots) == {"reliability", "reliability_ts", "ood_noise"}
    for path in ev.plots.values():
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_agree_with_the_parts(toy: ImageDataset, fast_smece) -> None:
    from calibench.losses.ce import CrossEntropyLoss

    model = MeanPixel()
    ev = evaluate(model, CrossEntropyLoss(), toy, [], device="cpu")
    logits = predict_logits(model, toy.test.x, MEAN, STD, device="cpu")
    assert torch.equal(logits, ev.test_logits)
    probs = torch.softmax(logits.double(), 1)
    assert ev.metrics["test"] == calibration_metrics(probs, toy.test.y)
    val_logits = predict_logits(model, toy.val.x, MEAN, STD, device="cpu")
    t = fit_temperature(val_logits, toy.val.y)
    assert ev.metrics["test_ts"]["temperature"] == pytest.approx(t)
    want = calibration_metrics(torch.softmax(logits.double() / t, 1), toy.test.y)
    assert ev.metrics["test_ts"]["nll"] == pytest.approx(want["nll"])
    assert ev.metrics["ood"] == {}
    assert ev.plots == {}


def test_the_loss_defines_the_probabilities(toy: ImageDataset, fast_smece) -> None:
    from calibench.losses.ce import CrossEntropyLoss

    model = MeanPixel(sharpness=0.5)
    plain = evaluate(model, CrossEntropyLoss(), toy, [ood()], device="cpu")
    sharp = evaluate(model, HalfTemperatureLoss(), toy, [ood()], device="cpu")
    probs = torch.softmax(2 * plain.test_logits.double(), 1)
    assert sharp.metrics["test"] == calibration_metrics(probs, toy.test.y)
    assert sharp.metrics["test"]["nll"] != plain.metrics["test"]["nll"]
    # TS scales the logits the loss sees, so the fitted T doubles and post-TS metrics agree
    t_plain = plain.metrics["test_ts"]["temperature"]
    assert sharp.metrics["test_ts"]["temperature"] == pytest.approx(2 * t_plain, rel=1e-4)
    assert sharp.metrics["test_ts"]["nll"] == pytest.approx(
        plain.metrics["test_ts"]["nll"], abs=1e-6
    )
    # energy and maxlogit use the raw logits; msp uses the loss's probabilities
    assert sharp.metrics["ood"]["noise"]["energy"] == plain.metrics["ood"]["noise"]["energy"]


def test_without_val_there_is_no_temperature(toy: ImageDataset, fast_smece) -> None:
    from calibench.losses.ce import CrossEntropyLoss

    no_val = dataclasses.replace(toy, val=toy.val.take(torch.arange(0)))
    ev = evaluate(MeanPixel(), CrossEntropyLoss(), no_val, [], device="cpu")
    assert ev.metrics["test_ts"] is None and "val" not in ev.metrics
    assert ev.conventions["ts_fit_split"] is None


def test_diverged_model_is_reported(toy: ImageDataset, fast_smece) -> None:
    from calibench.losses.ce import CrossEntropyLoss

    class NaNModel(nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 3), float("nan"))

    with pytest.raises(NonFiniteLogitsError, match="diverged"):
        evaluate(NaNModel(), CrossEntropyLoss(), toy, [], device="cpu")


def test_unknown_score(toy: ImageDataset, fast_smece) -> None:
    from calibench.losses.ce import CrossEntropyLoss

    with pytest.raises(UsageError, match="odin"):
        evaluate(MeanPixel(), CrossEntropyLoss(), toy, [], device="cpu", ood_scores=("odin",))


def test_real_cifar10_prefix(shared_data_dir, tmp_path) -> None:
    from calibench.losses.ce import CrossEntropyLoss
    from calibench.registry import create_dataset, create_ood

    ds = create_dataset("cifar10", root=shared_data_dir, download=False, val_size=500)
    ds = dataclasses.replace(
        ds, val=ds.val.take(torch.arange(200)), test=ds.test.take(torch.arange(300))
    )
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )
    gauss = create_ood("gaussian", like=ds)
    ev = evaluate(model, CrossEntropyLoss(), ds, [gauss], device="cpu", plots_dir=tmp_path)
    assert ev.test_logits.shape == (300, 10)
    assert all(math.isfinite(v) for v in ev.metrics["test"].values())
    assert 0.0 <= ev.metrics["ood"]["gaussian"]["msp"]["auroc"] <= 1.0
    assert (tmp_path / "ood_gaussian.png").is_file()
