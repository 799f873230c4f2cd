"""mmce and mmce-unweighted against a step-by-step transcription of Mukhoti et al.'s code.

The oracles follow ``Losses/mmce.py`` (classes ``MMCE_weighted`` and ``MMCE``) and
``Losses/loss.py`` (``ce + lamda * mmce``) of torrvision/focal_calibration line by line: the same
group sizes and their replacement by 2 and N - 2 in a degenerate batch, ``topk`` selection, pair
means, ``1e-5``-shifted denominators, ``sqrt(. + 1e-10)`` and ``max(., 0)``, but with explicit
loops over pairs instead of tiled tensors. They run in float64 and differentiate with autograd.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from calibench import create_loss
from calibench.registry import get_registry

from .conftest import random_batch, value_and_grad

WIDTH = 0.4


def _kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.exp(-1.0 * torch.abs(a - b) / WIDTH)


def _pair_mean(left: torch.Tensor, right: torch.Tensor, weight_left, weight_right):
    terms = [
        _kernel(left[i], right[j]) * weight_left(left[i]) * weight_right(right[j])
        for i in range(len(left))
        for j in range(len(right))
    ]
    return torch.stack(terms).mean() if terms else torch.tensor(math.nan, dtype=torch.float64)


def oracle_mmce_weighted(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``MMCE_weighted.forward``."""
    predicted_probs, predicted_labels = torch.max(F.softmax(logits, dim=1), 1)
    correct_mask = (predicted_labels == target).to(torch.float64)
    n_total = correct_mask.shape[0]
    k = int(correct_mask.sum())
    k_p = int((1.0 - correct_mask).sum())
    cond_k = 0 if k == 0 else 1
    cond_k_p = 0 if k_p == 0 else 1
    both = cond_k * cond_k_p
    k = max(k, 1) * both + (1 - both) * 2
    k_p = max(k_p, 1) * both + (1 - both) * (n_total - 2)
    correct_prob = torch.topk(predicted_probs * correct_mask, k).values
    incorrect_prob = torch.topk(predicted_probs * (1 - correct_mask), k_p).values

    def one_minus(p):
        return 1.0 - p

    def same(p):
        return p

    correct_correct = _pair_mean(correct_prob, correct_prob, one_minus, one_minus)
    incorrect_incorrect = _pair_mean(incorrect_prob, incorrect_prob, same, same)
    correct_incorrect = _pair_mean(correct_prob, incorrect_prob, one_minus, same)
    m = torch.sum(correct_mask)
    n = torch.sum(1.0 - correct_mask)
    mmd_error = 1.0 / (m * m + 1e-5) * correct_correct
    mmd_error = mmd_error + 1.0 / (n * n + 1e-5) * incorrect_incorrect
    mmd_error = mmd_error - 2.0 / (m * n + 1e-5) * correct_incorrect
    gate = torch.tensor(float(both), dtype=torch.float64)
    return torch.maximum(gate * torch.sqrt(mmd_error + 1e-10), torch.tensor(0.0).double())


def oracle_mmce_unweighted(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``MMCE.forward``: sum over all pairs divided by N^2, no square root."""
    predicted_probs, pred_labels = torch.max(F.softmax(logits, dim=1), 1)
    c_minus_r = (pred_labels == target).to(torch.float64) - predicted_probs
    n = len(target)
    total = sum(
        c_minus_r[i] * c_minus_r[j] * _kernel(predicted_probs[i], predicted_probs[j])
        for i in range(n)
        for j in range(n)
    )
    return total / n**2


def oracle_loss(name: str, logits: torch.Tensor, target: torch.Tensor, lam: float):
    """``loss.py``: ``F.cross_entropy(logits, targets) + lamda * mmce``."""
    term = oracle_mmce_weighted if name == "mmce" else oracle_mmce_unweighted
    return F.cross_entropy(logits, target) + lam * term(logits, target)


def _batch(seed: int, n: int = 16, k: int = 10, scale: float = 3.0, accuracy: float = 0.0):
    """Random logits; each target is the predicted class with probability ``accuracy``."""
    g = torch.Generator().manual_seed(seed)
    z, y = random_batch(g, n, k, scale)
    hit = torch.rand(n, generator=g) < accuracy
    return z, torch.where(hit, z.argmax(dim=1), y)


def _compare(name: str, z: torch.Tensor, y: torch.Tensor, lam: float) -> None:
    loss = create_loss(name, lam=lam)
    ours, our_grad = value_and_grad(loss, z, y)
    theirs, their_grad = value_and_grad(lambda a, b: oracle_loss(name, a, b, lam), z, y)
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10)
    torch.testing.assert_close(our_grad, their_grad, rtol=0, atol=1e-10)
    # float32, the training path, agrees with the float64 oracle to 1e-6
    torch.testing.assert_close(loss(z.float(), y).double(), theirs, rtol=0, atol=1e-6)


def test_defaults_are_the_published_settings() -> None:
    losses = get_registry("losses")
    assert losses.get("mmce").defaults == {"lam": 2.0, "width": 0.4}  # cifar10.sh: --lamda 2.0
    assert losses.get("mmce-unweighted").defaults == {"lam": 1.0, "width": 0.4}  # train.py


@pytest.mark.parametrize("name", ["mmce", "mmce-unweighted"])
@pytest.mark.parametrize(
    ("seed", "n", "scale", "accuracy"),
    [(0, 16, 1.0, 0.5), (1, 16, 3.0, 0.9), (2, 40, 6.0, 0.7), (3, 7, 2.0, 0.3), (4, 32, 0.5, 0.1)],
)
def test_matches_the_oracle_on_random_batches(
    name: str, seed: int, n: int, scale: float, accuracy: float
) -> None:
    z, y = _batch(seed, n=n, scale=scale, accuracy=accuracy)
    correct = int((z.argmax(dim=1) == y).sum())
    assert 0 < correct < n  # both groups present (the empty cases are tested below)
    _compare(name, z, y, lam=2.0)


@pytest.mark.parametrize("name", ["mmce", "mmce-unweighted"])
@pytest.mark.parametrize("group", ["no wrong prediction", "no correct prediction"])
def test_matches_the_oracle_when_one_group_is_empty(name: str, group: str) -> None:
    z, _ = _batch(5, n=12, scale=2.0)
    predicted = z.argmax(dim=1)
    y = predicted if group == "no wrong prediction" else (predicted + 1) % z.shape[1]
    _compare(name, z, y, lam=2.0)
    if name == "mmce":  # the weighted term is switched off: the loss is the cross-entropy
        torch.testing.assert_close(create_loss(name)(z, y), F.cross_entropy(z, y))


def test_mmce_is_cross_entropy_where_the_reference_gives_nan() -> None:
    """Two documented differences: N = 2 with one empty group, and a negative radicand."""
    z = torch.tensor([[3.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    y = torch.tensor([0, 1])  # both correct: their topk of size N - 2 = 0 gives a NaN mean
    assert torch.isnan(oracle_loss("mmce", z, y, 2.0))
    torch.testing.assert_close(create_loss("mmce")(z, y), F.cross_entropy(z, y))
    # one correct, two wrong, all with confidence 2/3: the 1e-5 shifts make mmd = -(1e-5)/36
    z = torch.tensor([[math.log(4.0), 0.0, 0.0]] * 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    assert torch.isnan(oracle_loss("mmce", z, y, 2.0))
    value, grad = value_and_grad(create_loss("mmce"), z, y)
    torch.testing.assert_close(value, F.cross_entropy(z, y))
    assert bool(torch.isfinite(grad).all())


def test_weighted_term_scales_like_one_over_the_batch_size_as_coded() -> None:
    """Pair means divided again by m^2, n^2, mn: repeating the batch halves the term."""
    z, y = _batch(6, n=16, scale=1.5, accuracy=0.6)
    term = create_loss("mmce", lam=1.0)(z, y) - F.cross_entropy(z, y)
    zz, yy = torch.cat([z, z]), torch.cat([y, y])
    doubled = create_loss("mmce", lam=1.0)(zz, yy) - F.cross_entropy(zz, yy)
    assert term > 0 and doubled.item() == pytest.approx(term.item() / 2, rel=1e-4)
    # the unweighted V-statistic is a mean over pairs: unchanged
    unweighted = create_loss("mmce-unweighted")
    torch.testing.assert_close(unweighted(zz, yy), unweighted(z, y))


@pytest.mark.parametrize("name", ["mmce", "mmce-unweighted"])
def test_gradient_is_finite_when_confident_and_correct(name: str) -> None:
    z = torch.tensor([[30.0, 0.0], [0.0, 30.0], [25.0, 0.0]], requires_grad=True)
    value = create_loss(name)(z, torch.tensor([0, 1, 1]))
    assert bool(torch.isfinite(torch.autograd.grad(value, z)[0]).all())
