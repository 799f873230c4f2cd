"""mbls against a step-by-step transcription of ``LogitMarginL1`` (by-liu/MbLS).

The oracle follows ``calibrate/losses/logit_margin_l1.py``: ``nn.CrossEntropyLoss()`` (mean),
``get_diff`` (the row maximum repeated over the classes, minus the logits) and
``F.relu(diff - margin).mean()``, combined as ``loss_ce + alpha * loss_margin``. It runs in float64
and is differentiated with autograd.
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


def oracle_mbls(
    inputs: torch.Tensor, targets: torch.Tensor, margin: float = 10, alpha: float = 0.1
) -> torch.Tensor:
    """``LogitMarginL1(margin, alpha).forward(inputs, targets)[0]`` with no alpha schedule."""
    loss_ce = nn.CrossEntropyLoss()(inputs, targets)
    max_values = inputs.max(dim=1).values.unsqueeze(dim=1).repeat(1, inputs.shape[1])
    diff = max_values - inputs
    loss_margin = F.relu(diff - margin).mean()
    return loss_ce + alpha * loss_margin


def test_defaults_are_the_published_settings() -> None:
    # LogitMarginL1(margin=10, alpha=0.1); README: loss.margin=10.0 loss.alpha=0.1
    assert get_registry("losses").get("mbls").defaults == {"margin": 10.0, "alpha": 0.1}


@pytest.mark.parametrize(
    ("seed", "n", "k", "scale", "margin", "alpha"),
    [
        (0, 16, 10, 8.0, 10.0, 0.1),
        (1, 32, 100, 6.0, 10.0, 0.1),
        (2, 7, 3, 1.0, 0.5, 2.0),
        (3, 64, 10, 12.0, 4.0, 1.0),
        (4, 5, 2, 20.0, 0.0, 0.3),
    ],
)
def test_matches_the_oracle_on_random_batches(
    seed: int, n: int, k: int, scale: float, margin: float, alpha: float
) -> None:
    z, y = random_batch(seed, n, k, scale)
    loss = create_loss("mbls", margin=margin, alpha=alpha)
    ours, our_grad = value_and_grad(loss, z, y)
    theirs, their_grad = value_and_grad(lambda a, b: oracle_mbls(a, b, margin, alpha), z, y)
    assert ours.dtype == torch.float64
    # the penalty is active on these batches (the comparison is not CE against CE)
    assert float(theirs - F.cross_entropy(z, y)) > 0
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10)
    torch.testing.assert_close(our_grad, their_grad, rtol=0, atol=1e-10)
    # float32, the training path, agrees with the float64 oracle to 1e-6 (relative to scale)
    torch.testing.assert_close(loss(z.float(), y).double(), theirs, rtol=1e-6, atol=1e-6)


def test_is_cross_entropy_when_every_logit_distance_is_within_the_margin() -> None:
    z, y = random_batch(5, 16, 10, scale=1.0)
    assert float((z.max(dim=1, keepdim=True).values - z).max()) < 10
    torch.testing.assert_close(create_loss("mbls")(z, y), F.cross_entropy(z, y))


def test_penalty_is_a_mean_over_all_classes_and_samples() -> None:
    """One sample, K = 4: distances 0, 12, 15, 2 -> relu(d - 10) = 0, 2, 5, 0, mean 7/4."""
    z = torch.tensor([[15.0, 3.0, 0.0, 13.0]], dtype=torch.float64)
    y = torch.tensor([0])
    value = create_loss("mbls", alpha=1.0)(z, y)
    torch.testing.assert_close(value, F.cross_entropy(z, y) + 7.0 / 4.0)


@pytest.mark.parametrize(("param", "value"), [("margin", -1.0), ("alpha", -0.1)])
def test_rejects_negative_parameters(param: str, value: float) -> None:
    with pytest.raises(UsageError, match=param):
        create_loss("mbls", **{param: value})
