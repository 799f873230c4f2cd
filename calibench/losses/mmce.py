r"""MMCE: cross-entropy plus the maximum mean calibration error (Laplacian kernel)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calibench.losses.base import CalibrationLoss, check_param, float_logits
from calibench.registry import register_loss

__all__ = ["MMCELoss", "mmce_squared"]

#: Keeps the square root differentiable where the estimate is 0 (as in the paper's code).
SQRT_EPS = 1e-10


def mmce_squared(confidence: torch.Tensor, correct: torch.Tensor, width: float) -> torch.Tensor:
    r"""The unweighted estimate :math:`\frac{1}{N^2}\sum_{i,j}(c_i - r_i)(c_j - r_j)k(r_i, r_j)`.

    ``confidence`` r (N,), ``correct`` c (N,) in {0, 1}; :math:`k(r, r') = e^{-|r - r'|/width}`.
    """
    residual = correct - confidence
    kernel = torch.exp(-(confidence.unsqueeze(1) - confidence.unsqueeze(0)).abs() / width)
    return (residual.unsqueeze(1) * residual.unsqueeze(0) * kernel).mean()


@register_loss(
    "mmce",
    summary="CE + lambda * MMCE (Laplacian kernel of width 0.4)",
    reference=(
        "Kumar, Sarawagi & Jain 2018, 'Trainable Calibration Measures for Neural Networks "
        "from Kernel Mean Embeddings' (ICML)"
    ),
)
class MMCELoss(CalibrationLoss):
    r"""Cross-entropy plus the maximum mean calibration error.

    .. math:: L = \frac{1}{N}\sum_i -\log p_{iy_i} + \lambda\,\sqrt{\max(\mathrm{MMCE}_m^2, 0)
              + 10^{-10}},\quad
              \mathrm{MMCE}_m^2 = \frac{1}{N^2}\sum_{i,j}(c_i - r_i)(c_j - r_j)
              e^{-|r_i - r_j|/w}

    with confidence :math:`r_i = \max_k p_{ik}`, correctness :math:`c_i = \mathbb{1}[\arg\max_k
    p_{ik} = y_i]` (no gradient) and kernel width :math:`w`. This is the paper's unweighted
    batch estimator :math:`\mathrm{MMCE}_m`; the MMCE term couples the samples of a batch.
    Parameters: ``lam`` (lambda) >= 0, default 2; ``width`` > 0, default 0.4.
    Probabilities: ``softmax(z)``. Reference: Kumar, Sarawagi & Jain 2018 (ICML).
    """

    def __init__(self, lam: float = 2.0, width: float = 0.4) -> None:
        super().__init__()
        self.lam = check_param("lam", lam, low=0.0)
        self.width = check_param("width", width, low=0.0, strict=True)

    def compute(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z = float_logits(logits)
        confidence, predicted = torch.softmax(z, dim=1).max(dim=1)
        correct = (predicted == targets).to(z.dtype)
        mmce2 = mmce_squared(confidence, correct, self.width)
        return F.cross_entropy(z, targets) + self.lam * (mmce2.clamp_min(0.0) + SQRT_EPS).sqrt()

    def extra_repr(self) -> str:
        return f"lam={self.lam}, width={self.width}"
