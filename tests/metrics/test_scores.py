"""OOD scores from predictive logits, in float64."""

from __future__ import annotations

import math

import pytest
import torch

from calibench.errors import UnknownNameError, UsageError
from calibench.metrics import SCORES, ood_metrics, ood_scores


def test_scores_by_definition() -> None:
    s = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]])
    got = ood_scores(s)
    assert set(got) == set(SCORES) == {"msp", "energy", "maxlogit"}
    assert all(v.dtype == torch.float64 and v.shape == (2,) for v in got.values())
    assert got["maxlogit"].tolist() == [2.0, 0.5]
    assert got["energy"][0].item() == pytest.approx(math.log(math.exp(2) + 1 + math.exp(-1)))
    assert got["energy"][1].item() == pytest.approx(0.5 + math.log(3))
    assert got["msp"][0].item() == pytest.approx(math.exp(2) / (math.exp(2) + 1 + math.exp(-1)))
    assert got["msp"][1].item() == pytest.approx(1 / 3)


def test_scores_describe_the_predictive_distribution_only() -> None:
    # two raw-logit vectors with the same predictive logits give the same scores; msp is the
    # max of softmax(s), the distribution the calibration metrics describe
    s = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert ood_scores(s, ["msp"])["msp"].item() == pytest.approx(torch.softmax(s, 1).max().item())
    shifted = ood_scores(s + 3.0)
    assert shifted["msp"].item() == pytest.approx(ood_scores(s)["msp"].item(), abs=1e-15)
    assert shifted["energy"].item() == pytest.approx(ood_scores(s)["energy"].item() + 3.0)


def test_energy_does_not_overflow_for_huge_predictive_logits() -> None:
    s = torch.tensor([[1e5, 0.0], [7e4, 7e4]], dtype=torch.float32)  # beyond float16 range
    got = ood_scores(s)
    assert got["energy"].tolist() == pytest.approx([1e5, 7e4 + math.log(2)])
    assert got["msp"].tolist() == [1.0, 0.5]


def test_msp_in_float64_keeps_saturated_predictions_apart() -> None:
    id_logits = torch.tensor([[40.0, 0.0], [39.0, 0.0]])
    ood_logits = torch.tensor([[20.0, 0.0], [21.0, 0.0]])
    assert torch.softmax(id_logits, 1).amax(1).unique().numel() == 1  # float32 saturates
    sid = ood_scores(id_logits, ["msp"])["msp"]
    sood = ood_scores(ood_logits, ["msp"])["msp"]
    assert ood_metrics(sid, sood)["auroc"] == 1.0


def test_errors() -> None:
    with pytest.raises(UnknownNameError, match="available"):
        ood_scores(torch.zeros(1, 2), ["odin"])
    with pytest.raises(UsageError, match="shape"):
        ood_scores(torch.zeros(3))
    with pytest.raises(UsageError, match="floating"):
        ood_scores(torch.zeros(1, 2, dtype=torch.long))
