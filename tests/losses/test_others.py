"""ls, brier, poly1, logitnorm, mdca, confidence-penalty against independent formulas (MMCE: test_mmce)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from calibench import create_loss
from calibench.errors import UsageError
from calibench.registry import get_registry

from .conftest import at, random_batch


def _batch(seed: int = 0, n: int = 12, k: int = 5, scale: float = 3.0):
    return random_batch(seed, n, k, scale)


@pytest.mark.parametrize("s", [0.0, 0.05, 0.3])
def test_label_smoothing_matches_the_smoothed_target_formula(s: float) -> None:
    z, y = _batch()
    k = z.shape[1]
    q = (1 - s) * F.one_hot(y, k) + s / k
    expected = -(q * torch.log_softmax(z, dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(create_loss("ls", smoothing=s)(z, y), expected)


def test_brier_matches_numpy() -> None:
    z, y = _batch(1)
    p = torch.softmax(z, dim=1).numpy()
    onehot = F.one_hot(y, z.shape[1]).numpy()
    expected = ((p - onehot) ** 2).sum(axis=1).mean()
    assert create_loss("brier")(z, y).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("eps", [-1.0, 1.0, 2.0])
def test_poly1_is_ce_plus_epsilon_one_minus_p(eps: float) -> None:
    z, y = _batch(2)
    p_y = at(torch.softmax(z, dim=1), y)
    expected = (-torch.log(p_y) + eps * (1 - p_y)).mean()
    torch.testing.assert_close(create_loss("poly1", epsilon=eps)(z, y), expected)


@pytest.mark.parametrize("tau", [0.04, 1.0])
def test_logitnorm_is_ce_on_normalised_logits(tau: float) -> None:
    z, y = _batch(3)
    norms = torch.sqrt((z**2).sum(dim=1, keepdim=True))
    expected = F.cross_entropy(z / (tau * norms), y)
    torch.testing.assert_close(create_loss("logitnorm", tau=tau)(z, y), expected)
    # scale invariance, and all-zero logits stay finite
    torch.testing.assert_close(create_loss("logitnorm")(7 * z, y), create_loss("logitnorm")(z, y))
    zero = torch.zeros(2, 5, requires_grad=True)
    value = create_loss("logitnorm")(zero, torch.tensor([0, 1]))
    assert value.item() == pytest.approx(math.log(5))
    assert bool(torch.isfinite(torch.autograd.grad(value, zero)[0]).all())


@pytest.mark.parametrize("tau", [0.04, 0.5])
def test_logitnorm_predicts_the_distribution_its_loss_fits(tau: float) -> None:
    z, y = _batch(7)
    loss = create_loss("logitnorm", tau=tau)
    s = loss.predictive_logits(z)
    norms = torch.sqrt((z**2).sum(dim=1, keepdim=True)) + 1e-7
    torch.testing.assert_close(s, z / (tau * norms), rtol=1e-15, atol=0)
    assert torch.equal(loss(z, y), F.cross_entropy(s, y))  # the CE is taken on exactly s
    # the loss never sees the logit scale, and neither do its probabilities; softmax(z) does
    for c in (0.5, 3.0):
        torch.testing.assert_close(loss(c * z, y), loss(z, y))
        torch.testing.assert_close(loss.probabilities(c * z), loss.probabilities(z))
        assert not torch.allclose(torch.softmax(c * z, dim=1), torch.softmax(z, dim=1))


def test_logitnorm_default_tau_is_the_papers_cifar10_value() -> None:
    assert get_registry("losses").get("logitnorm").defaults == {"tau": 0.04}


@pytest.mark.parametrize("beta", [0.0, 1.0, 3.0])
def test_mdca_matches_the_per_class_loop(beta: float) -> None:
    z, y = _batch(4)
    p = torch.softmax(z, dim=1)
    k = z.shape[1]
    mdca = sum(abs(p[:, j].mean() - (y == j).double().mean()) for j in range(k)) / k
    expected = F.cross_entropy(z, y) + beta * mdca
    torch.testing.assert_close(create_loss("mdca", beta=beta)(z, y), expected)


@pytest.mark.parametrize("beta", [0.0, 0.1, 1.0])
def test_confidence_penalty_wrapper_is_ce_minus_beta_entropy(beta: float) -> None:
    z, y = _batch(6)
    log_p = torch.log_softmax(z, dim=1)
    entropy = -(log_p.exp() * log_p).sum(dim=1)
    expected = (F.cross_entropy(z, y, reduction="none") - beta * entropy).mean()
    # torch-uncertainty's p*log(p + 1e-6) biases the entropy by less than K * 1e-6
    torch.testing.assert_close(
        create_loss("confidence-penalty", beta=beta)(z.float(), y),
        expected.float(),
        rtol=0,
        atol=beta * z.shape[1] * 1e-6 + 1e-6,
    )


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("ls", {"smoothing": -0.1}, "smoothing must be >= 0"),
        ("ls", {"smoothing": 1.0}, "smoothing must be < 1"),
        ("poly1", {"epsilon": -1.5}, "epsilon must be >= -1"),
        ("logitnorm", {"tau": 0.0}, "tau must be > 0"),
        ("mdca", {"beta": -1.0}, "beta must be >= 0"),
        ("mmce", {"lam": -1.0}, "lam must be >= 0"),
        ("mmce", {"width": 0.0}, "width must be > 0"),
        ("mmce-unweighted", {"lam": -1.0}, "lam must be >= 0"),
        ("mmce-unweighted", {"width": -0.4}, "width must be > 0"),
        ("confidence-penalty", {"beta": -0.1}, "beta must be >= 0"),
    ],
)
def test_invalid_parameters_are_rejected(name: str, params: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        create_loss(name, **params)
