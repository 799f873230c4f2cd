"""Focal family: oracles (independent formula and torch-uncertainty), CE limit, NaN safety."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from calibench import create_loss
from calibench.errors import UsageError

from .conftest import random_batch


def _batch(seed: int = 0, n: int = 16, k: int = 10, scale: float = 3.0):
    return random_batch(seed, n, k, scale)


def _p_y(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.softmax(z, dim=1)[torch.arange(len(y)), y]


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 3.0])
def test_focal_matches_formula_and_torch_uncertainty(gamma: float) -> None:
    from torch_uncertainty.losses import FocalLoss as TUFocal

    z, y = _batch()
    p = _p_y(z, y)
    expected = (-((1 - p) ** gamma) * torch.log(p)).mean()
    loss = create_loss("focal", gamma=gamma)
    torch.testing.assert_close(loss(z, y), expected)
    torch.testing.assert_close(loss(z.float(), y), TUFocal(gamma=gamma)(z.float(), y))


def test_focal_with_gamma_zero_is_cross_entropy() -> None:
    z, y = _batch(1, scale=10.0)
    torch.testing.assert_close(create_loss("focal", gamma=0)(z, y), F.cross_entropy(z, y))


@pytest.mark.parametrize("name", ["focal", "dual-focal"])
@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.5])
def test_gradient_is_finite_when_p_y_rounds_to_one(name: str, gamma: float) -> None:
    """torch-uncertainty 0.13's FocalLoss gives NaN here for 0 < gamma < 1."""
    z = torch.tensor([[40.0, 0.0, 0.0], [1.0, 2.0, 3.0]], requires_grad=True)
    (grad,) = torch.autograd.grad(create_loss(name, gamma=gamma)(z, torch.tensor([0, 1])), z)
    assert bool(torch.isfinite(grad).all()), grad


def test_flsd53_uses_gamma_5_below_p_02_and_3_above() -> None:
    z, y = _batch(2, n=64)
    p = _p_y(z, y)
    assert bool((p < 0.2).any()) and bool((p >= 0.2).any())
    gamma = torch.where(p < 0.2, 5.0, 3.0).to(z.dtype)
    expected = (-((1 - p) ** gamma) * torch.log(p)).mean()
    torch.testing.assert_close(create_loss("flsd53")(z, y), expected)


def _dual_focal_reference(z: torch.Tensor, y: torch.Tensor, gamma: float) -> torch.Tensor:
    p = torch.softmax(z, dim=1)
    rows = []
    for i in range(len(y)):
        p_y = p[i, y[i]]
        below = [p[i, k] for k in range(p.shape[1]) if p[i, k] < p_y]
        p_j = max(below) if below else torch.zeros((), dtype=p.dtype)
        rows.append(-((1 - p_y + p_j) ** gamma) * torch.log(p_y))
    return torch.stack(rows).mean()


@pytest.mark.parametrize("gamma", [0.0, 2.0, 5.0])
def test_dual_focal_matches_the_paper(gamma: float) -> None:
    z, y = _batch(3)
    z.requires_grad_()
    value = create_loss("dual-focal", gamma=gamma)(z, y)
    expected = _dual_focal_reference(z, y, gamma)
    torch.testing.assert_close(value, expected)
    # gradients flow through p_j as well as p_y
    torch.testing.assert_close(
        torch.autograd.grad(value, z)[0], torch.autograd.grad(expected, z)[0]
    )


def test_dual_focal_p_j_is_the_next_lower_probability_not_the_top_one() -> None:
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0]], dtype=torch.float64)  # target ranked second
    y = torch.tensor([1])
    p = torch.softmax(z, dim=1)[0]
    expected = -((1 - p[1] + p[2]) ** 5) * torch.log(p[1])
    torch.testing.assert_close(create_loss("dual-focal")(z, y), expected)


@pytest.mark.parametrize("name", ["focal", "dual-focal"])
def test_negative_gamma_is_rejected(name: str) -> None:
    with pytest.raises(UsageError, match="parameter gamma must be >= 0"):
        create_loss(name, gamma=-0.5)
