"""Temperature scaling on predictive logits: scipy oracle, the exact NLL where the old 1e-12 floor
made the fit non-convex, argmax preservation, scale equivariance and degenerate data."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar

from calibench.errors import UsageError
from calibench.metrics import fit_temperature, scaled_probabilities, temperature_nll
from calibench.metrics.temperature import T_MAX, T_MIN


def data(seed: int, n: int = 3000, true_t: float = 2.5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 10, generator=g) * 4
    labels = torch.multinomial(torch.softmax(logits.double() / true_t, 1), 1, generator=g).squeeze(
        1
    )
    return logits, labels


def exact_nll(logits: torch.Tensor, labels: torch.Tensor, t: float) -> float:
    """Independent of the code under test: -mean(z_y/T - logsumexp(z/T)) with scipy."""
    from scipy.special import logsumexp

    z = logits.double().numpy() / t
    y = labels.numpy()
    return float(-(z[range(len(y)), y] - logsumexp(z, axis=1)).mean())


def oracle(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return minimize_scalar(
        lambda t: exact_nll(logits, labels, t),
        bounds=(T_MIN, T_MAX),
        method="bounded",
        options={"xatol": 1e-10},
    ).x


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_scipy_bounded_search(seed: int) -> None:
    logits, labels = data(seed)
    assert fit_temperature(logits, labels) == pytest.approx(oracle(logits, labels), rel=1e-6)


def test_recovers_the_generating_temperature() -> None:
    logits, labels = data(2, n=20000)
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.06)


def floor_case() -> tuple[torch.Tensor, torch.Tensor]:
    """1000 val samples, 10 of them wrong by a margin of about 45 (> 28 = -log 1e-12)."""
    g = torch.Generator().manual_seed(0)
    n, k = 1000, 10
    labels = torch.randint(0, k, (n,), generator=g)
    logits = torch.randn(n, k, generator=g, dtype=torch.float64)
    logits[torch.arange(n), labels] += 4.0
    logits[torch.arange(10), labels[:10]] -= 45.0
    return logits, labels


def floored_nll(logits: torch.Tensor, labels: torch.Tensor, t: float) -> float:
    """The objective before issue 10: true-class probabilities clamped at 1e-12 before the log."""
    p = torch.softmax(logits / t, 1).gather(1, labels[:, None]).squeeze(1)
    return float(-p.clamp_min(1e-12).log().mean())


def test_exact_nll_finds_the_optimum_where_the_floor_was_not_convex() -> None:
    logits, labels = floor_case()
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(oracle(logits, labels), rel=1e-6)
    assert temperature_nll(logits, labels, t) == pytest.approx(exact_nll(logits, labels, t))
    # in 1/T the exact NLL is convex and the floored one is not; the floored minimum lies far
    # from the exact one (at T ~ 0.22, where the 10 wrong samples cost only 27.6 each)
    betas = torch.linspace(0.05, 8.0, 400, dtype=torch.float64)
    exact = torch.tensor([exact_nll(logits, labels, 1 / float(b)) for b in betas])
    floored = torch.tensor([floored_nll(logits, labels, 1 / float(b)) for b in betas])
    assert float((exact[2:] - 2 * exact[1:-1] + exact[:-2]).min()) > -1e-12
    assert float((floored[2:] - 2 * floored[1:-1] + floored[:-2]).min()) < -1e-3
    t_floored = 1 / float(betas[int(floored.argmin())])
    assert t_floored < 0.5 * t
    assert floored_nll(logits, labels, t_floored) < floored_nll(logits, labels, t)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.lists(st.integers(-80, 80).map(lambda v: v / 4), min_size=3, max_size=3),
        min_size=2,
        max_size=30,
    ),
    seed=st.integers(0, 100),
)
def test_scaling_never_changes_the_argmax_and_never_raises_the_nll(rows, seed) -> None:
    logits = torch.tensor(rows, dtype=torch.float64)
    labels = torch.randint(0, 3, (len(rows),), generator=torch.Generator().manual_seed(seed))
    t = fit_temperature(logits, labels)
    assert T_MIN <= t <= T_MAX
    assert torch.equal(scaled_probabilities(logits, t).argmax(1), logits.argmax(1))
    assert temperature_nll(logits, labels, t) <= temperature_nll(logits, labels, 1.0) + 1e-12


def test_the_issue_case_keeps_its_argmax_at_t_001() -> None:
    # issue 10: softmax(m(z / T) / alpha) with z = [-9, -8, -10] predicted class 0 at T = 0.01;
    # dividing the predictive logits keeps class 1 at every T
    s = torch.tensor([[-9.0, -8.0, -10.0]] * 4, dtype=torch.float64)
    t = fit_temperature(s, torch.ones(4, dtype=torch.long))
    assert t == T_MIN
    assert scaled_probabilities(s, t).argmax(1).tolist() == [1] * 4


def test_the_temperature_scales_with_the_predictive_logits() -> None:
    logits, labels = data(3)
    t = fit_temperature(logits, labels)
    # softmax(2 s / T) = softmax(s / (T / 2)): the fitted T doubles, the scaled distribution is one
    assert fit_temperature(2 * logits, labels) == pytest.approx(2 * t, rel=1e-6)
    probs = scaled_probabilities(2 * logits, 2 * t)
    assert torch.allclose(probs, scaled_probabilities(logits, t), atol=1e-12)
    assert probs.dtype == torch.float64


def test_scaling_lowers_val_nll() -> None:
    logits, labels = data(4)
    t = fit_temperature(logits, labels)
    assert temperature_nll(logits, labels, t) < temperature_nll(logits, labels, 1.0)


def test_separable_data_stays_in_range() -> None:
    logits = torch.zeros(20, 3)
    logits[:, 0] = 5.0
    t = fit_temperature(logits, torch.zeros(20, dtype=torch.long))
    assert t == T_MIN and math.isfinite(t)


def test_uninformative_logits_give_the_upper_bound_or_one() -> None:
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2000, 4, generator=g)
    labels = torch.randint(0, 4, (2000,), generator=g)  # independent of the logits
    assert fit_temperature(logits, labels) > 10
    assert fit_temperature(torch.zeros(5, 3), torch.zeros(5, dtype=torch.long)) == 1.0


@pytest.mark.parametrize(
    ("logits", "labels", "match"),
    [
        (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), "N > 0"),
        (torch.zeros(3), torch.zeros(3, dtype=torch.long), r"\(N, K\)"),
        (torch.full((2, 2), float("nan")), torch.zeros(2, dtype=torch.long), "non-finite"),
        (torch.zeros(2, 2), torch.tensor([0, 2]), r"\[0, 2\)"),
        (torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, dtype=torch.long), "floating"),
    ],
)
def test_bad_input(logits, labels, match) -> None:
    with pytest.raises(UsageError, match=match):
        fit_temperature(logits, labels)
