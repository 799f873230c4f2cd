"""The evaluator on a tiny model: structure of the result, predictive logits, TS, OOD, plots,
errors."""

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
from calibench.evaluation import (
    CONVENTIONS,
    Evaluation,
    NonFiniteLogitsError,
    NonFinitePredictiveLogitsError,
    evaluate,
    predict_logits,
)
from calibench.losses.base import CalibrationLoss
from calibench.metrics import (
    AUPR_CONVENTION,
    CALIBRATION_KEYS,
    FPR95_CONVENTION,
    OOD_KEYS,
    fit_temperature,
    logit_metrics,
    ood_metrics,
    ood_scores,
)
from calibench.metrics.bootstrap import INTERVAL_CONVENTION, SIGNIFICANCE_CONVENTION

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
    """A loss whose predictive logits are 2 z, so its distribution is softmax(2 z)."""

    def compute(self, logits, targets):
        return nn.functional.cross_entropy(2 * logits, targets)

    def predictive_logits(self, logits):
        return 2 * logits


class ProbabilitiesOnlyLoss(nn.Module):
    """A plugin-style loss that defines only ``probabilities`` (softmax(2 z))."""

    def forward(self, logits, targets):
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
    s = ev.test_predictive_logits
    assert s.dtype == torch.float32 and s.shape == (300, 3)
    assert torch.equal(ev.test_labels, toy.test.y)
    assert set(ev.ood_scores) == {"noise"}
    assert set(ev.ood_scores["noise"]) == {"msp", "energy", "maxlogit"}
    for scores in ev.ood_scores["noise"].values():
        assert scores.dtype == torch.float64 and scores.shape == (150,)
    c = ev.conventions
    assert c["n_bins"] == 15 and c["norm"] == "l1" and c["ts_fit_split"] == "val"
    assert c["fpr95"] == FPR95_CONVENTION and c["aupr"] == AUPR_CONVENTION
    assert c["interval"] == INTERVAL_CONVENTION and c["significance"] == SIGNIFICANCE_CONVENTION
    assert "loss.predictive_logits" in c["predictive_logits"]
    assert "softmax(s_val / T)" in c["ts"] and "no floor" in c["nll"]
    assert "nll_floor" not in c and c == {**CONVENTIONS, **c}
    assert set(ev.plots) == {"reliability", "reliability_ts", "ood_noise"}
    for path in ev.plots.values():
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_agree_with_the_parts(toy: ImageDataset, fast_smece) -> None:
    from calibench.losses.ce import CrossEntropyLoss

    model = MeanPixel()
    ev = evaluate(model, CrossEntropyLoss(), toy, [ood()], device="cpu")
    logits = predict_logits(model, toy.test.x, MEAN, STD, device="cpu")
    assert torch.equal(logits, ev.test_predictive_logits)  # cross-entropy: s = z
    assert ev.metrics["test"] == logit_metrics(logits, toy.test.y)
    val_logits = predict_logits(model, toy.val.x, MEAN, STD, device="cpu")
    t = fit_temperature(val_logits, toy.val.y)
    assert ev.metrics["test_ts"]["temperature"] == t
    want = logit_metrics(logits.double() / t, toy.test.y)
    assert ev.metrics["test_ts"] == {"temperature": t, **want}
    ood_logits = predict_logits(model, ood().x, MEAN, STD, device="cpu")
    assert {k: v.tolist() for k, v in ev.ood_scores["noise"].items()} == {
        k: v.tolist() for k, v in ood_scores(ood_logits).items()
    }
    assert ev.plots == {}


def test_every_number_is_recomputed_from_the_saved_arrays(toy: ImageDataset, fast_smece) -> None:
    # what the leaderboard does: test predictive logits (float32) and OOD scores, no loss
    ev = evaluate(MeanPixel(sharpness=0.5), HalfTemperatureLoss(), toy, [ood()], device="cpu")
    s = torch.from_numpy(ev.test_predictive_logits.numpy().copy())
    assert ev.metrics["test"] == logit_metrics(s, ev.test_labels)
    t = ev.metrics["test_ts"]["temperature"]
    assert ev.metrics["test_ts"] == {
        "temperature": t,
        **logit_metrics(s.double() / t, ev.test_labels),
    }
    id_scores = ood_scores(s)
    for name, want in ev.metrics["ood"]["noise"].items():
        assert ood_metrics(id_scores[name], ev.ood_scores["noise"][name]) == want


def test_the_loss_defines_the_predictive_logits(toy: ImageDataset, fast_smece) -> None:
    from calibench.losses.ce import CrossEntropyLoss

    model = MeanPixel(sharpness=0.5)
    plain = evaluate(model, CrossEntropyLoss(), toy, [ood()], device="cpu")
    sharp = evaluate(model, HalfTemperatureLoss(), toy, [ood()], device="cpu")
    z = plain.test_predictive_logits
    assert torch.equal(sharp.test_predictive_logits, 2 * z)
    assert sharp.metrics["test"] == logit_metrics(2 * z, toy.test.y)
    assert sharp.metrics["test"]["nll"] != plain.metrics["test"]["nll"]
    # TS divides the predictive logits, so the fitted T doubles and post-TS metrics agree
    t_plain = plain.metrics["test_ts"]["temperature"]
    assert sharp.metrics["test_ts"]["temperature"] == pytest.approx(2 * t_plain, rel=1e-6)
    assert sharp.metrics["test_ts"]["nll"] == pytest.approx(
        plain.metrics["test_ts"]["nll"], abs=1e-9
    )
    # every OOD score comes from the predictive logits 2 z: energy = logsumexp(2 z)
    z_ood = predict_logits(model, ood().x, MEAN, STD, device="cpu")
    want = ood_metrics(torch.logsumexp(2 * z.double(), 1), torch.logsumexp(2 * z_ood.double(), 1))
    assert sharp.metrics["ood"]["noise"]["energy"] == want
    assert sharp.metrics["ood"]["noise"]["energy"] != plain.metrics["ood"]["noise"]["energy"]
    # a loss with only probabilities: s = log(probabilities), the same distribution
    plugin = evaluate(model, ProbabilitiesOnlyLoss(), toy, [], device="cpu")
    for key in CALIBRATION_KEYS:
        assert plugin.metrics["test"][key] == pytest.approx(sharp.metrics["test"][key], abs=1e-6)


class ConstantLogits(nn.Module):
    """Raw logits [-9, -8, -10] for every image, plus a tiny image-dependent jitter."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = torch.tensor([-9.0, -8.0, -10.0])
        return base + 1e-3 * x.mean(dim=(1, 2, 3))[:, None]


@pytest.mark.parametrize("loss_name", ["iq-fkl", "iq-hellinger", "iq-js"])
def test_temperature_scaling_keeps_the_argmax_of_the_predictive_logits(
    toy: ImageDataset, fast_smece, loss_name: str
) -> None:
    # issue 10: with these IQ energy maps, softmax(m(z / T) / alpha) at T = 0.01 predicted class
    # 0 for raw logits [-9, -8, -10]; dividing the predictive logits keeps class 1
    from calibench.registry import create_loss

    loss = create_loss(loss_name)
    val = dataclasses.replace(toy.val, y=torch.ones_like(toy.val.y))  # all class 1: T -> T_MIN
    ev = evaluate(ConstantLogits(), loss, dataclasses.replace(toy, val=val), [], device="cpu")
    t = ev.metrics["test_ts"]["temperature"]
    assert t == pytest.approx(0.01)
    assert ev.test_predictive_logits.argmax(1).unique().tolist() == [1]
    share_of_class_1 = float((toy.test.y == 1).double().mean())
    assert ev.metrics["test"]["acc"] == ev.metrics["test_ts"]["acc"] == share_of_class_1
    # the old definition would have changed the prediction
    z = ConstantLogits()(torch.zeros(1, 3, 32, 32))
    assert loss.probabilities(z.double() / t).argmax(1).tolist() == [0]


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


def test_non_finite_predictive_logits_are_reported(toy: ImageDataset, fast_smece) -> None:
    class UnderflowingLoss(nn.Module):
        def probabilities(self, logits):
            return torch.softmax(1e4 * logits, dim=-1)  # exact zeros: log gives -inf

    with pytest.raises(NonFinitePredictiveLogitsError, match="predictive_logits"):
        evaluate(MeanPixel(), UnderflowingLoss(), toy, [], device="cpu")


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
    assert ev.test_predictive_logits.shape == (300, 10)
    assert all(math.isfinite(v) for v in ev.metrics["test"].values())
    assert 0.0 <= ev.metrics["ood"]["gaussian"]["msp"]["auroc"] <= 1.0
    assert (tmp_path / "ood_gaussian.png").is_file()
