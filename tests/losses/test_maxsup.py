"""maxsup (a wrapper of torch-uncertainty's CrossEntropyMaxSupLoss) against two oracles.

1. The paper's formula, written out here: per sample ``-z_y + logsumexp(z) + alpha (max_k z_k -
   (1/K) sum_k z_k)``, batch mean (README of ZhouYuxuanYX/Maximum-Suppression-Regularization,
   ``L_MaxSup = alpha (z_max - (1/K) sum_k z_k)`` added to the cross-entropy).
2. The official training step at a fixed weight, transcribed from
   ``Conv/common_resnet/train.py``: ``nn.CrossEntropyLoss(label_smoothing=0.0)``, ``output.topk(1,
   -1)[0] - output.mean(-1, keepdim=True)``, ``loss + lam * reg.mean()``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from calibench import create_loss
from calibench.errors import UsageError
from calibench.registry import get_registry

from .conftest import at, random_batch, value_and_grad


def oracle_paper(z: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    ce = torch.logsumexp(z, dim=1) - at(z, y)
    penalty = z.max(dim=1).values - z.sum(dim=1) / z.shape[1]
    return (ce + alpha * penalty).mean()


def oracle_official(output: torch.Tensor, target: torch.Tensor, lam: float) -> torch.Tensor:
    loss_criterion = nn.CrossEntropyLoss(label_smoothing=0.0)
    z_top1 = output.topk(1, -1)[0]
    reg = z_top1 - output.mean(-1, keepdim=True)
    return loss_criterion(output, target) + lam * reg.mean()


def test_default_is_the_schedules_starting_value() -> None:
    # alpha_e = 0.1 + 0.1 * e / (E - 1) in the official scripts; constant 0.1 in their CIFAR-10-LT run
    assert get_registry("losses").get("maxsup").defaults == {"alpha": 0.1}


@pytest.mark.parametrize(
    ("seed", "n", "k", "scale", "alpha"),
    [(0, 16, 10, 3.0, 0.1), (1, 32, 100, 6.0, 0.2), (2, 7, 2, 1.0, 1.0), (3, 64, 10, 12.0, 0.15)],
)
def test_matches_the_paper_formula_and_the_official_step(
    seed: int, n: int, k: int, scale: float, alpha: float
) -> None:
    z, y = random_batch(seed, n, k, scale)
    loss = create_loss("maxsup", alpha=alpha)
    ours, our_grad = value_and_grad(loss, z, y)
    assert ours.dtype == torch.float64
    for oracle in (oracle_paper, oracle_official):
        theirs, their_grad = value_and_grad(lambda a, b: oracle(a, b, alpha), z, y)  # noqa: B023
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10)
        torch.testing.assert_close(our_grad, their_grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(
        loss(z.float(), y).double(), oracle_paper(z, y, alpha), rtol=1e-6, atol=1e-5
    )


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    k=st.integers(2, 20),
    scale=st.floats(0.1, 30.0),
    alpha=st.floats(0.0, 0.9),
)
def test_equals_label_smoothing_when_every_prediction_is_right_and_exceeds_it_otherwise(
    seed: int, k: int, scale: float, alpha: float
) -> None:
    """LS with rate a is CE + a (z_y - mean z); MaxSup swaps z_y for max z (so MaxSup >= LS)."""
    z, _ = random_batch(seed, 12, k, scale)
    right = z.argmax(dim=1)
    maxsup = create_loss("maxsup", alpha=alpha)
    ls = create_loss("ls", smoothing=alpha)
    torch.testing.assert_close(maxsup(z, right), ls(z, right), rtol=1e-9, atol=1e-9)
    wrong = (right + 1) % k
    gap = alpha * float((z.max(dim=1).values - at(z, wrong)).mean())
    torch.testing.assert_close(float(maxsup(z, wrong) - ls(z, wrong)), gap, rtol=1e-9, atol=1e-9)


def test_alpha_zero_is_cross_entropy() -> None:
    z, y = random_batch(4, 16, 10, scale=5.0)
    torch.testing.assert_close(create_loss("maxsup", alpha=0.0)(z, y), F.cross_entropy(z, y))


def test_rejects_a_negative_alpha() -> None:
    with pytest.raises(UsageError, match="alpha"):
        create_loss("maxsup", alpha=-0.1)
