"""IQ losses: oracles against the poster's formulas, analytic gradients, domain safety."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from calibench import create_loss
from calibench.errors import UsageError

from .conftest import random_batch, value_and_grad

Fn = Callable[[torch.Tensor], torch.Tensor]
C = math.log(math.e - 1.0)
LOG2 = math.log(2.0)


def _softplus_inv(x: torch.Tensor) -> torch.Tensor:
    return torch.log(torch.expm1(x))


@dataclass(frozen=True)
class Table1Row:
    """One row of the poster's Table 1, written out independently of the implementation."""

    phi: Fn
    dphi: Fn
    m: Fn
    m_inv: Fn
    lower: float  # the domain of phi is x > lower


TABLE1 = {
    "iq-tv": Table1Row(lambda x: x, torch.ones_like, lambda z: z, lambda e: e, -math.inf),
    "iq-chi2": Table1Row(
        lambda x: x - x**2 / 4, lambda x: 1 - x / 2, lambda z: z, lambda e: e, -math.inf
    ),
    "iq-rkl": Table1Row(
        lambda x: -torch.exp(-x), lambda x: torch.exp(-x), lambda z: z, lambda e: e, -math.inf
    ),
    "iq-fkl": Table1Row(
        lambda x: 1 + torch.log(x), lambda x: 1 / x, F.softplus, _softplus_inv, 0.0
    ),
    "iq-hellinger": Table1Row(
        lambda x: x / (1 + x),
        lambda x: 1 / (1 + x) ** 2,
        lambda z: F.softplus(z + C) - 1,
        lambda e: _softplus_inv(e + 1) - C,
        -1.0,
    ),
    "iq-js": Table1Row(
        lambda x: torch.log(2 - torch.exp(-x)),
        lambda x: torch.exp(-x) / (2 - torch.exp(-x)),
        lambda z: F.softplus(z) - LOG2,
        lambda e: _softplus_inv(e + LOG2),
        -LOG2,
    ),
}
NAMES = sorted(TABLE1)


def _naive_loss(row: Table1Row, z: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    eps = row.m(z)
    phi_y = row.phi(eps.gather(1, y[:, None]).squeeze(1))
    return (-phi_y + alpha * torch.logsumexp(eps / alpha, dim=1)).mean()


def _batch(seed: int, n: int = 6, k: int = 4, scale: float = 3.0, dtype=torch.float64):
    z, y = random_batch(seed, n, k, scale, dtype=torch.float32)
    return z.to(dtype), y


def test_tv_with_alpha_one_is_cross_entropy() -> None:
    loss = create_loss("iq-tv")
    for seed, scale in [(0, 1.0), (1, 5.0), (2, 30.0)]:
        z, y = _batch(seed, n=16, k=10, scale=scale, dtype=torch.float32)
        torch.testing.assert_close(loss(z, y), F.cross_entropy(z, y), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(loss.probabilities(z), torch.softmax(z, dim=1))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("alpha", [0.3, 1.0, 2.5])
def test_value_and_probabilities_match_table1(name: str, alpha: float) -> None:
    row, loss = TABLE1[name], create_loss(name, alpha=alpha)
    z, y = _batch(10)
    torch.testing.assert_close(loss(z, y), _naive_loss(row, z, y, alpha), rtol=1e-12, atol=1e-12)
    expected_p = torch.softmax(row.m(z) / alpha, dim=1)
    torch.testing.assert_close(loss.probabilities(z), expected_p)
    # float32 (the training path) agrees with the float64 formula
    torch.testing.assert_close(
        loss(z.float(), y), _naive_loss(row, z, y, alpha).float(), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_gradient_in_energies_is_analytic(name: str, alpha: float) -> None:
    """d loss/d eps_y = -phi'(eps_y) + p_y and d loss/d eps_k = p_k, inside phi's domain."""
    row, loss = TABLE1[name], create_loss(name, alpha=alpha)
    g = torch.Generator().manual_seed(20)
    n, k = 7, 5
    base = 0.0 if math.isinf(row.lower) else row.lower
    low = -3.0 if math.isinf(row.lower) else 0.05
    eps = (base + low + 4.0 * torch.rand(n, k, generator=g, dtype=torch.float64)).requires_grad_()
    y = torch.randint(0, k, (n,), generator=g)
    (grad,) = torch.autograd.grad(loss(row.m_inv(eps), y), eps)
    p = torch.softmax(eps.detach() / alpha, dim=1)
    onehot = F.one_hot(y, k).to(p.dtype)
    expected = (p - onehot * row.dphi(eps.detach())) / n
    torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["iq-hellinger", "iq-js"])
def test_maps_send_zero_to_zero(name: str) -> None:
    loss = create_loss(name)
    torch.testing.assert_close(loss.energy(torch.zeros(3)), torch.zeros(3), atol=1e-7, rtol=0)


def _value_and_grad(name: str, z: torch.Tensor, y: torch.Tensor, alpha: float = 1.0, bf16=False):
    loss = create_loss(name, alpha=alpha)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return value_and_grad(loss, z, y)


@st.composite
def _logits_and_targets(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    n = draw(st.integers(1, 4))
    k = draw(st.integers(2, 6))
    value = st.one_of(
        st.floats(-1e4, 1e4, allow_nan=False, width=32),
        st.sampled_from([-1e4, 1e4, -1e3, -150.0, -88.5, -40.0, -17.0, 0.0, 17.0, 88.5]),
    )
    z = torch.tensor(draw(st.lists(value, min_size=n * k, max_size=n * k))).view(n, k)
    y = torch.tensor(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    return z, y


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=40, deadline=None)
@given(batch=_logits_and_targets(), alpha=st.floats(0.1, 10.0), bf16=st.booleans())
def test_value_and_gradient_finite_for_every_finite_logit(
    name: str, batch: tuple[torch.Tensor, torch.Tensor], alpha: float, bf16: bool
) -> None:
    z, y = batch
    z = z.bfloat16() if bf16 else z.float()
    value, grad = _value_and_grad(name, z, y, alpha, bf16=bf16)
    assert value.dtype == torch.float32 and bool(torch.isfinite(value)), value
    assert bool(torch.isfinite(grad).all()), grad


@pytest.mark.parametrize("name", NAMES)
def test_loss_keeps_decreasing_in_the_target_logit_down_to_minus_1e4(name: str) -> None:
    """No dead zone: below the floors the loss still falls as z_y rises, with a finite slope."""
    values, slopes = [], []
    for z_y in (-1e4, -1e3, -100.0, -41.0, -39.0, -10.0):
        z = torch.tensor([[z_y, 0.0, 1.0]])
        value, grad = _value_and_grad(name, z, torch.tensor([0]))
        values.append(value.item())
        slopes.append(grad[0, 0].item())
    assert all(a > b for a, b in itertools.pairwise(values)), values
    assert all(math.isfinite(s) and s < 0 for s in slopes), slopes


@pytest.mark.parametrize("name", ["iq-rkl", "iq-hellinger"])
def test_floor_is_a_tangent_continuation(name: str) -> None:
    """Value and slope are continuous at the floor (v = -40), so the loss stays C^1."""
    shift = 0.0 if name == "iq-rkl" else -C  # where log(1 + eps_y) = -40 for Hellinger (to 1e-17)
    at = -40.0 + shift
    left, right = (torch.tensor([[at + d, 0.0]], dtype=torch.float64) for d in (-1e-7, 1e-7))
    (v_l, g_l), (v_r, g_r) = (_value_and_grad(name, z, torch.tensor([0])) for z in (left, right))
    torch.testing.assert_close(v_l, v_r, rtol=1e-6, atol=0)
    torch.testing.assert_close(g_l, g_r, rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", ["iq-fkl", "iq-js"])
def test_bounded_domain_variants_are_exact_far_below_zero(name: str) -> None:
    """fkl and js need no floor: -phi(m(z)) tends to -z (+ const) with slope -1."""
    row = TABLE1[name]
    z = torch.tensor([[-20.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0])
    # the float64 naive formula still has ~7 digits at -20 (it cancels to inf near -37 for js)
    torch.testing.assert_close(
        create_loss(name)(z, y), _naive_loss(row, z, y, 1.0), rtol=1e-6, atol=0
    )
    torch.testing.assert_close(create_loss(name)(z.float(), y), _naive_loss(row, z, y, 1.0).float())
    _, grad = _value_and_grad(name, torch.tensor([[-1e4, 0.0]]), y)
    assert grad[0, 0].item() == pytest.approx(-1.0, abs=1e-6)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("alpha", [0.0, -1.0, math.nan, "x"])
def test_invalid_alpha_is_rejected(name: str, alpha: object) -> None:
    with pytest.raises(UsageError, match="parameter alpha must"):
        create_loss(name, alpha=alpha)


@pytest.mark.parametrize("name", ["iq-fkl", "iq-hellinger", "iq-js"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_temperature_scaling_of_predictive_logits_keeps_the_argmax(
    name: str, dtype: torch.dtype
) -> None:
    """The issue's case: ``[-9, -8, -10]`` predicts class 1 at every temperature."""
    loss = create_loss(name)
    z = torch.tensor([[-9.0, -8.0, -10.0]], dtype=dtype)
    assert loss.probabilities(z).argmax().item() == 1
    # before issue 10, "temperature scaling" fed z / T through the energy map: class 0 at T = 0.01
    old = loss.probabilities(z / 0.01)
    assert old.argmax().item() == 0
    torch.testing.assert_close(old, torch.full_like(old, 1 / 3))  # m(z / T) collapsed to a tie
    s = loss.predictive_logits(z)
    # float32 over the fitting range of temperature scaling, float64 (the evaluator's) wider
    grid = torch.logspace(-2, 2, 41) if dtype == torch.float32 else torch.logspace(-4, 4, 81)
    p = torch.softmax(s / grid[:, None].to(dtype), dim=-1)
    assert bool((p.argmax(dim=-1) == 1).all())
    # and sharpness is monotone: the top probability falls as T grows
    assert bool((p[1:, 1] <= p[:-1, 1]).all())


def test_tv_energy_of_predictive_logits_follows_the_models_free_energy() -> None:
    """iq-tv, alpha = 0.2: raw logsumexp(z) ranks a flat and a peaked input the wrong way round."""
    alpha = 0.2
    loss = create_loss("iq-tv", alpha=alpha)
    flat = torch.zeros(1, 10, dtype=torch.float64)
    peaked = torch.tensor([[1.5] + [-10.0] * 9], dtype=torch.float64)
    raw = [torch.logsumexp(z, dim=1).item() for z in (flat, peaked)]
    assert raw[0] > raw[1]  # the raw logits' energy calls the flat input more in-distribution

    def free_energy(z: torch.Tensor) -> float:
        """alpha * log Z with Z = sum_k exp(eps_k / alpha) and eps = m(z) = z."""
        return alpha * math.log(math.fsum(math.exp(v / alpha) for v in z[0].tolist()))

    free = [free_energy(flat), free_energy(peaked)]
    assert free[0] < free[1]
    energy = [torch.logsumexp(loss.predictive_logits(z), dim=1).item() for z in (flat, peaked)]
    assert energy[0] < energy[1]
    assert energy == pytest.approx([f / alpha for f in free], rel=1e-12)
