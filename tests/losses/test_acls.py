"""acls against a step-by-step transcription of ``ACLS`` (cvlab-yonsei/ACLS).

The oracle follows ``calibrate/losses/acls.py``: ``nn.CrossEntropyLoss()`` (mean), then ``get_reg``
(the row maximum repeated over the classes, an indicator of the entries equal to it on detached
copies, ``neg_dist`` from the detached maximum, ``relu(max - margin) ** 2`` on the indicator and
``relu(neg_dist - margin) ** 2`` off it, divided by ``N`` and ``N (K - 1)``), combined as
``loss_ce + alpha * loss_reg``. It runs in float64 and is differentiated with autograd.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from calibench import create_loss
from calibench.errors import UsageError
from calibench.registry import get_registry

from .conftest import random_batch, value_and_grad


def oracle_acls(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    pos_lambda: float = 1.0,
    neg_lambda: float = 0.1,
    alpha: float = 0.1,
    margin: float = 10.0,
) -> torch.Tensor:
    """``ACLS(pos_lambda, neg_lambda, alpha, margin).forward(inputs, targets)[0]``."""
    loss_ce = nn.CrossEntropyLoss()(inputs, targets)
    max_values, _ = inputs.max(dim=1)
    max_values = max_values.unsqueeze(dim=1).repeat(1, inputs.shape[1])
    indicator = (max_values.clone().detach() == inputs.clone().detach()).float()
    batch_size, num_classes = inputs.size()
    num_pos = batch_size * 1.0
    num_neg = batch_size * (num_classes - 1.0)
    neg_dist = max_values.clone().detach() - inputs
    pos_dist_margin = F.relu(max_values - margin)
    neg_dist_margin = F.relu(neg_dist - margin)
    pos = indicator * pos_dist_margin**2
    neg = (1.0 - indicator) * (neg_dist_margin**2)
    reg = pos_lambda * (pos.sum() / num_pos) + neg_lambda * (neg.sum() / num_neg)
    return loss_ce + alpha * reg


def test_defaults_are_the_official_config() -> None:
    # configs/loss/acls.yaml lines 2-5; ACLS.__init__ signature (acls.py lines 9-12)
    assert get_registry("losses").get("acls").defaults == {
        "pos_lambda": 1.0,
        "neg_lambda": 0.1,
        "alpha": 0.1,
        "margin": 10.0,
    }


@pytest.mark.parametrize(
    ("seed", "n", "k", "scale", "params"),
    [
        (0, 16, 10, 8.0, {}),
        (1, 32, 100, 6.0, {}),
        (2, 64, 10, 12.0, {}),
        (3, 7, 3, 2.0, {"margin": 1.0, "alpha": 2.0}),
        (4, 20, 5, 4.0, {"pos_lambda": 0.3, "neg_lambda": 2.0, "alpha": 1.0, "margin": 2.0}),
        (5, 9, 2, 15.0, {"margin": 0.0, "alpha": 0.5}),
    ],
)
def test_matches_the_oracle_on_random_batches(
    seed: int, n: int, k: int, scale: float, params: dict[str, float]
) -> None:
    z, y = random_batch(seed, n, k, scale)
    loss = create_loss("acls", **params)
    ours, our_grad = value_and_grad(loss, z, y)
    theirs, their_grad = value_and_grad(lambda a, b: oracle_acls(a, b, **params), z, y)
    assert ours.dtype == torch.float64
    # the regulariser is active on these batches (the comparison is not CE against CE)
    assert float(theirs - F.cross_entropy(z, y)) > 0
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10)
    torch.testing.assert_close(our_grad, their_grad, rtol=0, atol=1e-10)
    # float32, the training path, agrees with the float64 oracle
    torch.testing.assert_close(loss(z.float(), y).double(), theirs, rtol=1e-6, atol=1e-5)


def test_both_terms_are_active_on_the_default_setting() -> None:
    """At the defaults the winner term and the gap term each contribute on a CIFAR-scale batch."""
    z, y = random_batch(6, 32, 10, scale=8.0)
    only_pos = oracle_acls(z, y, neg_lambda=0.0) - F.cross_entropy(z, y)
    only_neg = oracle_acls(z, y, pos_lambda=0.0) - F.cross_entropy(z, y)
    assert float(only_pos) > 0 and float(only_neg) > 0
    torch.testing.assert_close(
        create_loss("acls", neg_lambda=0.0)(z, y) - F.cross_entropy(z, y), only_pos
    )
    torch.testing.assert_close(
        create_loss("acls", pos_lambda=0.0)(z, y) - F.cross_entropy(z, y), only_neg
    )


def test_ties_at_the_maximum_match_the_oracle() -> None:
    """Tied maxima all count as winners (value), the gradient reaches the one torch.max picks."""
    z = torch.tensor(
        [[14.0, 14.0, 1.0, -3.0], [12.0, 0.0, 12.0, 12.0], [0.0, 0.0, 0.0, 0.0]],
        dtype=torch.float64,
    )
    y = torch.tensor([0, 1, 2])
    params = {"margin": 2.0, "alpha": 1.0}
    ours, our_grad = value_and_grad(create_loss("acls", **params), z, y)
    theirs, their_grad = value_and_grad(lambda a, b: oracle_acls(a, b, **params), z, y)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    torch.testing.assert_close(our_grad, their_grad, rtol=0, atol=1e-12)


def test_hand_computed_value() -> None:
    """One sample, K = 4, margin 10: top 15 -> pos (15 - 10)^2 = 25; gaps 12, 15, 2 ->
    relu(gap - 10)^2 = 4, 25, 0, sum 29 over K - 1 = 3. R = 1 * 25 + 0.1 * 29 / 3."""
    z = torch.tensor([[15.0, 3.0, 0.0, 13.0]], dtype=torch.float64)
    y = torch.tensor([1])
    value = create_loss("acls", alpha=1.0)(z, y)
    torch.testing.assert_close(value, F.cross_entropy(z, y) + 25.0 + 0.1 * 29.0 / 3.0)


def test_regulariser_ignores_the_labels() -> None:
    z, y = random_batch(7, 16, 10, scale=8.0)
    y2 = (y + 3) % 10
    loss = create_loss("acls")
    torch.testing.assert_close(
        loss(z, y) - F.cross_entropy(z, y), loss(z, y2) - F.cross_entropy(z, y2)
    )


def test_is_cross_entropy_when_logits_stay_within_the_margin() -> None:
    z, y = random_batch(8, 16, 10, scale=1.0)
    assert float(z.max()) < 10 and float((z.max(dim=1, keepdim=True).values - z).max()) < 10
    torch.testing.assert_close(create_loss("acls")(z, y), F.cross_entropy(z, y))


@pytest.mark.parametrize(
    ("param", "value"),
    [("pos_lambda", -1.0), ("neg_lambda", -0.1), ("alpha", -0.1), ("margin", -1.0)],
)
def test_rejects_negative_parameters(param: str, value: float) -> None:
    with pytest.raises(UsageError, match=param):
        create_loss("acls", **{param: value})
