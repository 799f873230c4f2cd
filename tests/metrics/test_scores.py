"""OOD scores in float64."""

from __future__ import annotations

import pytest
import torch

from calibench.errors import UnknownNameError, UsageError
from calibench.metrics import SCORES, ood_metrics, ood_scores


def test_scores_by_definition() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]])
    probs = torch.softmax(logits.double(), dim=1)
    s = ood_scores(logits, probs)
    assert set(s) == set(SCORES) == {"msp", "energy", "maxlogit"}
    assert all(v.dtype == torch.float64 for v in s.values())
    assert s["maxlogit"].tolist() == [2.0, 0.5]
    assert s["energy"][1].item() == pytest.approx(0.5 + torch.log(torch.tensor(3.0)).item())
    assert s["msp"][1].item() == pytest.approx(1 / 3)


def test_msp_in_float64_keeps_saturated_predictions_apart() -> None:
    id_logits = torch.tensor([[40.0, 0.0], [39.0, 0.0]])
    ood_logits = torch.tensor([[20.0, 0.0], [21.0, 0.0]])
    assert torch.softmax(id_logits, 1).amax(1).unique().numel() == 1  # float32 saturates
    sid = ood_scores(id_logits, torch.softmax(id_logits.double(), 1), ["msp"])["msp"]
    sood = ood_scores(ood_logits, torch.softmax(ood_logits.double(), 1), ["msp"])["msp"]
    assert ood_metrics(sid, sood)["auroc"] == 1.0


def test_msp_uses_the_given_probabilities() -> None:
    logits = torch.tensor([[1.0, 0.0]])
    probs = torch.tensor([[0.25, 0.75]], dtype=torch.float64)
    assert ood_scores(logits, probs, ["msp"])["msp"].item() == 0.75


def test_errors() -> None:
    with pytest.raises(UnknownNameError, match="available"):
        ood_scores(torch.zeros(1, 2), torch.zeros(1, 2), ["odin"])
    with pytest.raises(UsageError, match="shape"):
        ood_scores(torch.zeros(1, 2), torch.zeros(1, 3))
