r"""MMCE: cross-entropy plus a maximum mean calibration error (Kumar, Sarawagi & Jain 2018).

Both losses follow ``Losses/mmce.py`` and ``Losses/loss.py`` of Mukhoti et al.'s code
(``torrvision/focal_calibration``), which benchmarked ``mmce_weighted`` with ``--lamda 2.0``
(``train_scripts/cifar10.sh``):

* ``mmce`` = ``CE_mean + lambda * MMCE_w`` (their ``MMCE_weighted``, Kumar et al.'s weighted
  estimator with its square root), lambda 2;
* ``mmce-unweighted`` = ``CE_mean + lambda * MMCE_m^2`` (their ``MMCE``: the squared unweighted
  estimator, no square root), lambda 1 (``train.py``'s ``--lamda`` default).

Confidence :math:`r_i = \max_k \mathrm{softmax}(z_i)_k` carries the gradient; correctness
:math:`c_i = \mathbb{1}[\arg\max_k z_{ik} = y_i]` does not. Kernel
:math:`k(a, b) = e^{-|a - b|/w}`, :math:`w = 0.4`. Both terms couple the samples of a batch.

Their training loop multiplies the returned value by the batch size (``train_utils.py``), i.e.
it trains on ``CE_sum + N * lambda * MMCE``; these losses return the per-batch value their
``loss.py`` returns (mean CE), and that scaling is the trainer's (the protocol's reduction).

Differences from their code (none changes a value beyond rounding where theirs is finite):

* dtype and device: computed in the logits' dtype (at least float32, float64 kept) on the
  logits' device; theirs builds the masks, the ``m*m + 1e-5`` denominators and ``1/N^2`` in
  float32 even for float64 logits (values differ by up to about 2e-8 in float64) and moves
  constants between devices.
* The three pair sums of ``MMCE_w`` are quadratic forms ``a^T K b`` over the whole batch
  with masked weights, not ``topk``-selected sub-matrices; the sums are the same (they do not
  depend on order).
* A batch with no correct or no wrong prediction: their code multiplies the term by 0 (after
  filling the empty group with ``topk`` of zeros); here the term is exactly 0 as well. For
  ``N <= 2`` their ``topk`` of size ``N - 2`` makes that product ``0 * NaN = NaN``; here it is 0.
* Their ``sqrt(mmd + 1e-10)`` is NaN when ``mmd + 1e-10 < 0``, which their ``1e-5``-shifted
  denominators allow when the two weighted embeddings nearly coincide (e.g. one correct and
  two wrong predictions, all with confidence 2/3: ``mmd = -(1e-5)/36``); here the term is 0
  there (and its gradient 0).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from calibench.losses.base import CalibrationLoss, check_param, float_logits
from calibench.registry import register_loss

__all__ = [
    "MMCELoss",
    "MMCEUnweightedLoss",
    "confidence_and_correct",
    "mmce_unweighted_squared",
    "mmce_weighted",
]

#: The Laplacian kernel width hard-coded in their ``torch_kernel`` (``/(0.4)``).
KERNEL_WIDTH = 0.4
#: Added under the square root of ``MMCE_w`` (their ``torch.sqrt(mmd_error + 1e-10)``).
SQRT_EPS = 1e-10
#: Added to the ``m*m``, ``n*n`` and ``m*n`` denominators of ``MMCE_w`` (their ``+ 1e-5``).
DENOMINATOR_EPS = 1e-5

REFERENCE = (
    "Kumar, Sarawagi & Jain 2018, 'Trainable Calibration Measures for Neural Networks from "
    "Kernel Mean Embeddings' (ICML); as implemented by Mukhoti et al. 2020 "
    "(torrvision/focal_calibration, Losses/mmce.py)"
)


def confidence_and_correct(
    logits: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(r, c)``: max softmax probability (with gradient) and 0/1 correctness (without)."""
    confidence, predicted = torch.softmax(logits, dim=1).max(dim=1)
    return confidence, (predicted == targets).to(logits.dtype)


def _kernel(confidence: torch.Tensor, width: float) -> torch.Tensor:
    return torch.exp(-(confidence.unsqueeze(1) - confidence.unsqueeze(0)).abs() / width)


def mmce_unweighted_squared(
    confidence: torch.Tensor, correct: torch.Tensor, width: float = KERNEL_WIDTH
) -> torch.Tensor:
    r""":math:`\mathrm{MMCE}_m^2 = \frac{1}{N^2}\sum_{i,j}(c_i - r_i)(c_j - r_j)k(r_i, r_j)`."""
    residual = correct - confidence
    return residual @ _kernel(confidence, width) @ residual / confidence.numel() ** 2


def mmce_weighted(
    confidence: torch.Tensor, correct: torch.Tensor, width: float = KERNEL_WIDTH
) -> torch.Tensor:
    r"""Their ``MMCE_weighted``: :math:`\sqrt{\mathrm{mmd} + 10^{-10}}`, 0 unless both groups exist.

    With :math:`m` correct and :math:`n` wrong predictions, :math:`a_i = (1 - r_i)` on correct
    and :math:`b_j = r_j` on wrong samples (0 elsewhere), and the pair **means**
    :math:`\bar S_{aa} = a^\top K a / m^2`, :math:`\bar S_{bb} = b^\top K b / n^2`,
    :math:`\bar S_{ab} = a^\top K b / (mn)`:

    .. math:: \mathrm{mmd} = \frac{\bar S_{aa}}{m^2 + 10^{-5}} + \frac{\bar S_{bb}}{n^2 + 10^{-5}}
              - \frac{2 \bar S_{ab}}{mn + 10^{-5}}

    (the code divides by the group sizes twice: once in its ``torch.mean``, once explicitly).
    """
    kernel = _kernel(confidence, width)
    a = correct * (1.0 - confidence)
    b = (1.0 - correct) * confidence
    m = correct.sum()
    n = (1.0 - correct).sum()
    m1, n1 = m.clamp_min(1.0), n.clamp_min(1.0)  # only the degenerate batches, masked below
    mmd = (
        (a @ kernel @ a) / (m1 * m1) / (m * m + DENOMINATOR_EPS)
        + (b @ kernel @ b) / (n1 * n1) / (n * n + DENOMINATOR_EPS)
        - 2.0 * (a @ kernel @ b) / (m1 * n1) / (m * n + DENOMINATOR_EPS)
    )
    radicand = mmd + SQRT_EPS
    defined = (m > 0) & (n > 0) & (radicand > 0)
    root = torch.where(defined, radicand, torch.ones_like(radicand)).sqrt()
    return torch.where(defined, root, torch.zeros_like(root))


class _CEPlusMMCE(CalibrationLoss):
    """``CE + lam * mmce_term(confidence, correct, width)``; subclasses name the term."""

    mmce_term: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]

    def __init__(self, lam: float, width: float) -> None:
        super().__init__()
        self.lam = check_param("lam", lam, low=0.0)
        self.width = check_param("width", width, low=0.0, strict=True)

    def compute(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z = float_logits(logits)
        confidence, correct = confidence_and_correct(z, targets)
        mmce = type(self).mmce_term(confidence, correct, self.width)
        return F.cross_entropy(z, targets) + self.lam * mmce

    def extra_repr(self) -> str:
        return f"lam={self.lam}, width={self.width}"


@register_loss(
    "mmce",
    summary="CE + lambda * MMCE_w (weighted MMCE, Laplacian kernel 0.4), as Mukhoti et al. ran it",
    reference=REFERENCE,
)
class MMCELoss(_CEPlusMMCE):
    r"""Cross-entropy plus the weighted maximum mean calibration error :math:`\mathrm{MMCE}_w`.

    .. math:: L = \frac{1}{N}\sum_i -\log p_{iy_i} + \lambda\,\mathrm{MMCE}_w,\qquad
              \mathrm{MMCE}_w = \mathbb{1}[m > 0,\ n > 0]\sqrt{\mathrm{mmd} + 10^{-10}}

    with ``mmd`` as in :func:`mmce_weighted` (their ``Losses/mmce.py``, ``MMCE_weighted``):
    the weighted kernel discrepancy between the correct samples (weights :math:`1 - r_i`) and the
    wrong ones (weights :math:`r_j`), confidence :math:`r_i = \max_k p_{ik}`. Batch-coupled; as
    coded, the term scales like :math:`1/N` in the batch size (pair means divided again by
    :math:`m^2`, :math:`n^2`, :math:`mn`). Differences from their code: see the module docstring.

    Parameters: ``lam`` (lambda) >= 0, default 2 (``--loss mmce_weighted --lamda 2.0`` in their
    ``train_scripts/cifar10.sh``); ``width`` > 0, default 0.4 (their kernel).
    Predictive logits: ``z`` (probabilities ``softmax(z)``).
    Reference: Kumar, Sarawagi & Jain 2018 (ICML); Mukhoti et al. 2020's implementation.
    """

    mmce_term = staticmethod(mmce_weighted)

    def __init__(self, lam: float = 2.0, width: float = KERNEL_WIDTH) -> None:
        super().__init__(lam, width)


@register_loss(
    "mmce-unweighted",
    summary="CE + lambda * MMCE_m^2 (unweighted MMCE, squared, Laplacian kernel 0.4)",
    reference=REFERENCE,
)
class MMCEUnweightedLoss(_CEPlusMMCE):
    r"""Cross-entropy plus the squared unweighted maximum mean calibration error.

    .. math:: L = \frac{1}{N}\sum_i -\log p_{iy_i} + \lambda\,\mathrm{MMCE}_m^2,\quad
              \mathrm{MMCE}_m^2 = \frac{1}{N^2}\sum_{i,j}(c_i - r_i)(c_j - r_j)
              e^{-|r_i - r_j|/w}

    exactly as their ``Losses/mmce.py`` class ``MMCE`` (no square root, no epsilon), with
    confidence :math:`r_i = \max_k p_{ik}` and correctness :math:`c_i` (no gradient).
    Batch-coupled (a V-statistic: a batch repeated twice gives the same value).

    Parameters: ``lam`` (lambda) >= 0, default 1 (their ``train.py`` ``--lamda`` default);
    ``width`` > 0, default 0.4 (their kernel). Predictive logits: ``z``.
    Reference: Kumar, Sarawagi & Jain 2018 (ICML); Mukhoti et al. 2020's implementation.
    """

    mmce_term = staticmethod(mmce_unweighted_squared)

    def __init__(self, lam: float = 1.0, width: float = KERNEL_WIDTH) -> None:
        super().__init__(lam, width)
