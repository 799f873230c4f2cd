"""Temperature scaling against a scipy oracle, a generic link function and degenerate data."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.optimize import minimize_scalar

from calibench.errors import UsageError
from calibench.metrics import fit_temperature, scaled_probabilities
from calibench.metrics.temperature import T_MAX, T_MIN


def data(seed: int, n: int = 3000, true_t: float = 2.5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 10, generator=g) * 4
    labels = torch.multinomial(torch.softmax(logits.double() / true_t, 1), 1, generator=g).squeeze(
        1
    )
    return logits, labels


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_scipy_bounded_search(seed: int) -> None:
    logits, labels = data(seed)

    def nll(t: float) -> float:
        return float(torch.nn.functional.cross_entropy(logits.double() / t, labels))

    want = minimize_scalar(nll, bounds=(0.05, 20), method="bounded", options={"xatol": 1e-8}).x
    assert fit_temperature(logits, labels) == pytest.approx(want, rel=1e-4)


def test_recovers_the_generating_temperature() -> None:
    logits, labels = data(2, n=20000)
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.06)


def test_non_softmax_link_scales_the_logits_the_loss_sees() -> None:
    logits, labels = data(3)
    t_softmax = fit_temperature(logits, labels)
    # softmax(2 z / T) = softmax(z / (T / 2)): the fitted T doubles
    t_sharp = fit_temperature(logits, labels, lambda z: torch.softmax(2 * z, dim=1))
    assert t_sharp == pytest.approx(2 * t_softmax, rel=1e-4)
    probs = scaled_probabilities(logits, t_sharp, lambda z: torch.softmax(2 * z, dim=1))
    assert torch.allclose(probs, scaled_probabilities(logits, t_softmax), atol=1e-6)
    assert probs.dtype == torch.float64


def test_scaling_lowers_val_nll() -> None:
    logits, labels = data(4)
    t = fit_temperature(logits, labels)
    before = torch.nn.functional.nll_loss(scaled_probabilities(logits, 1.0).log(), labels)
    after = torch.nn.functional.nll_loss(scaled_probabilities(logits, t).log(), labels)
    assert after < before


def test_separable_data_stays_in_range() -> None:
    logits = torch.zeros(20, 3)
    logits[:, 0] = 5.0
    t = fit_temperature(logits, torch.zeros(20, dtype=torch.long))
    assert T_MIN <= t < 1.0 and math.isfinite(t)


@pytest.mark.parametrize(
    ("logits", "labels", "match"),
    [
        (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), "N > 0"),
        (torch.zeros(3), torch.zeros(3, dtype=torch.long), r"\(N, K\)"),
        (torch.full((2, 2), float("nan")), torch.zeros(2, dtype=torch.long), "non-finite"),
    ],
)
def test_bad_input(logits, labels, match) -> None:
    with pytest.raises(UsageError, match=match):
        fit_temperature(logits, labels)
    assert T_MAX > T_MIN
