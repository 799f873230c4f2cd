"""iq-ref-*: the poster code's behaviour, checked against the issue's formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from calibench import create_loss

from .conftest import at, random_batch

C = math.log(math.e - 1.0)
LOG2 = math.log(2.0)


def _batch(seed: int = 0, n: int = 6, k: int = 4, scale: float = 2.0):
    return random_batch(seed, n, k, scale)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 3.0])
def test_ref_chi_is_ce_plus_mean_square_of_all_logits(alpha: float) -> None:
    z, y = _batch()
    expected = (-at(z, y) + torch.logsumexp(z, dim=1)).mean() + alpha / 4 * (z**2).sum() / z.numel()
    torch.testing.assert_close(create_loss("iq-ref-chi", alpha=alpha)(z, y), expected)


REF_MAPS = {
    "iq-ref-hellinger": (
        lambda z: F.softplus(z + C) - 1 + 1e-5,
        lambda x: 1 / (1 + x) ** 2,
        lambda z: torch.sigmoid(z + C),
    ),
    "iq-ref-js": (
        lambda z: F.softplus(z) - LOG2 + 1e-5,
        lambda x: torch.exp(-x) / (2 - torch.exp(-x)),
        torch.sigmoid,
    ),
    "iq-ref-klfix": (lambda z: z, lambda x: torch.exp(-x), torch.ones_like),
}


@pytest.mark.parametrize("name", sorted(REF_MAPS))
def test_detached_weight_value_and_gradient(name: str) -> None:
    m, dphi, dm = REF_MAPS[name]
    z, y = _batch(1)
    z.requires_grad_()
    r = m(z.detach())
    w = dphi(at(r, y))
    inner = (-w * at(r, y) + torch.logsumexp(r, dim=1)).mean()
    expected_value = torch.log(inner + 1) if name == "iq-ref-klfix" else inner
    value = create_loss(name)(z, y)
    torch.testing.assert_close(value, expected_value)
    # the gradient is the IQ gradient at alpha = 1 on r (w carries no gradient)
    (grad,) = torch.autograd.grad(value, z)
    n, k = z.shape
    d_inner_dr = (torch.softmax(r, dim=1) - F.one_hot(y, k) * w[:, None]) / n
    chain = 1 / (1 + inner) if name == "iq-ref-klfix" else 1.0
    torch.testing.assert_close(grad, chain * d_inner_dr * dm(z.detach()))


@pytest.mark.parametrize("name", ["iq-ref-chi", "iq-ref-klfix"])
def test_predictive_logits_of_the_plain_log_partition_variants_are_the_logits(name: str) -> None:
    z, _ = _batch(2)
    torch.testing.assert_close(create_loss(name).predictive_logits(z), z, rtol=0, atol=0)


@pytest.mark.parametrize(("name", "table1"), [("iq-ref-hellinger", "iq-hellinger"), ("iq-ref-js", "iq-js")])  # fmt: skip
def test_predictive_logits_are_the_energies_of_the_log_partition(name: str, table1: str) -> None:
    """``s = r = m(z) + 1e-5``: its softmax is the Table 1 model's distribution at alpha = 1."""
    m = REF_MAPS[name][0]
    z, y = _batch(2)
    loss = create_loss(name)
    s = loss.predictive_logits(z)
    torch.testing.assert_close(s, m(z), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss.probabilities(z), create_loss(table1).probabilities(z))
    # the loss is -w r_y + logsumexp(s): s is exactly the vector whose log-partition it takes
    w = REF_MAPS[name][1](at(s, y))
    torch.testing.assert_close(loss(z, y), (torch.logsumexp(s, dim=1) - w * at(s, y)).mean())
    # m is increasing: the predicted class is the one softmax(z) predicts
    assert torch.equal(s.argmax(dim=1), z.argmax(dim=1))


def test_ref_variants_differ_from_the_table1_losses() -> None:
    z, y = _batch(3)
    for ref, exact in [("iq-ref-chi", "iq-chi2"), ("iq-ref-hellinger", "iq-hellinger")]:
        assert not torch.isclose(create_loss(ref)(z, y), create_loss(exact)(z, y))
