"""OOD metrics: oracle (OpenOOD v1.5's auc_and_fpr_recall with sklearn), heavy ties, saturation,
hand cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics

from calibench.errors import UsageError
from calibench.metrics import AUPR_CONVENTION, FPR95_CONVENTION, OOD_KEYS, ood_metrics


def openood_v15(score_id: np.ndarray, score_ood: np.ndarray) -> dict[str, float]:
    """OpenOOD v1.5's ``auc_and_fpr_recall`` (``openood/evaluators/metrics.py``) as written there:
    OOD positive, ``-conf`` the detector output; AUPR is ``auc(recall, precision)`` of sklearn's
    ``precision_recall_curve`` (trapezoidal)."""
    conf = np.concatenate([score_id, score_ood])
    ood_indicator = np.concatenate([np.zeros(len(score_id)), np.ones(len(score_ood))])
    fpr_list, tpr_list, _ = metrics.roc_curve(ood_indicator, -conf)
    precision_in, recall_in, _ = metrics.precision_recall_curve(1 - ood_indicator, conf)
    precision_out, recall_out, _ = metrics.precision_recall_curve(ood_indicator, -conf)
    return {
        "auroc": metrics.auc(fpr_list, tpr_list),
        "aupr_in": metrics.auc(recall_in, precision_in),
        "aupr_out": metrics.auc(recall_out, precision_out),
        "fpr95": float(fpr_list[np.argmax(tpr_list >= 0.95)]),
    }


def check(score_id, score_ood) -> None:
    got = ood_metrics(torch.as_tensor(score_id), torch.as_tensor(score_ood))
    want = openood_v15(np.asarray(score_id, float), np.asarray(score_ood, float))
    assert set(got) == set(OOD_KEYS)
    for key in OOD_KEYS:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


@pytest.mark.parametrize("seed", range(3))
def test_continuous_scores_match_sklearn(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    check(
        torch.randn(500, generator=g, dtype=torch.float64) + 1,
        torch.randn(300, generator=g, dtype=torch.float64),
    )


@settings(max_examples=60, deadline=None)
@given(
    score_id=st.lists(st.integers(0, 4), min_size=1, max_size=60),
    score_ood=st.lists(st.integers(0, 4), min_size=1, max_size=60),
)
def test_heavy_ties_match_sklearn(score_id: list[int], score_ood: list[int]) -> None:
    check(torch.tensor(score_id, dtype=torch.float64), torch.tensor(score_ood, dtype=torch.float64))


def test_large_scores_do_not_saturate() -> None:
    # torchmetrics applies a sigmoid to scores outside [0, 1]: these would all tie at 1.0.
    m = ood_metrics(
        torch.arange(50.0, 60.0, dtype=torch.float64), torch.arange(40.0, 50.0, dtype=torch.float64)
    )
    assert m == pytest.approx({"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0})


def test_hand_cases() -> None:
    assert ood_metrics(torch.tensor([1.0]), torch.tensor([1.0]))["auroc"] == 0.5
    reversed_ = ood_metrics(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0]))
    assert reversed_["auroc"] == 0.0
    assert reversed_["fpr95"] == 1.0
    # id {3, 1}, ood {2, 0}: pairs id > ood are (3,2), (3,0), (1,0): 3 of 4
    m = ood_metrics(torch.tensor([3.0, 1.0]), torch.tensor([2.0, 0.0]))
    assert m["auroc"] == pytest.approx(0.75)
    # flagging every OOD sample (score <= 2) also flags the ID sample with score 1
    assert m["fpr95"] == pytest.approx(0.5)


def test_integer_scores_are_accepted() -> None:
    assert ood_metrics(torch.tensor([2, 3]), torch.tensor([0, 1]))["auroc"] == 1.0


def test_aupr_is_trapezoidal_not_average_precision() -> None:
    # id {1, 0}, ood {0}: ID-positive PR points (recall, precision) at thresholds 1, 0 and the
    # end point: (1/2, 1), (1, 2/3), (0, 1). Trapezoids: (0 -> 1/2) 1/2 * 1 + (1/2 -> 1)
    # 1/2 * (1 + 2/3) / 2 = 11/12; average precision would be 1/2 * 1 + 1/2 * 2/3 = 5/6.
    m = ood_metrics(torch.tensor([1.0, 0.0]), torch.tensor([0.0]))
    assert m["aupr_in"] == pytest.approx(11 / 12, abs=1e-15)
    assert m["aupr_in"] != pytest.approx(metrics.average_precision_score([1, 1, 0], [1, 0, 0]))


def test_convention_is_recorded() -> None:
    assert "OpenOOD v1.5" in FPR95_CONVENTION
    assert "0.95" in FPR95_CONVENTION
    assert "OpenOOD v1.5" in AUPR_CONVENTION and "trapezoidal" in AUPR_CONVENTION


@pytest.mark.parametrize(
    ("score_id", "score_ood", "match"),
    [
        (torch.zeros(0), torch.zeros(3), "non-empty"),
        (torch.zeros(2, 2), torch.zeros(3), "1-D"),
        (torch.tensor([float("nan")]), torch.zeros(3), "NaN"),
        ([1.0, 2.0], torch.zeros(3), "tensor"),
    ],
)
def test_bad_input(score_id, score_ood, match) -> None:
    with pytest.raises(UsageError, match=match):
        ood_metrics(score_id, score_ood)
