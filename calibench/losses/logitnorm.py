r"""LogitNorm: cross-entropy on L2-normalised logits scaled by 1/tau."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calibench.losses.base import CalibrationLoss, check_param, float_logits
from calibench.registry import register_loss

__all__ = ["LogitNormLoss"]

#: Added to the norm, as in the paper's code, so all-zero logits stay finite.
NORM_EPS = 1e-7


@register_loss(
    "logitnorm",
    summary="LogitNorm: CE on z / (tau * ||z||)",
    reference=(
        "Wei et al. 2022, 'Mitigating Neural Network Overconfidence with Logit Normalization' "
        "(ICML)"
    ),
)
class LogitNormLoss(CalibrationLoss):
    r"""Logit normalisation.

    .. math:: \ell(z, y) = \mathrm{CE}\Big(\frac{z}{\tau\,(\lVert z \rVert_2 + 10^{-7})}, y\Big)

    Parameters: ``tau`` > 0, default 0.04 (the paper's CIFAR-10 setting).
    Probabilities: ``softmax(z)`` on the raw logits: the paper normalises only during training.
    Reference: Wei et al. 2022 (ICML).
    """

    def __init__(self, tau: float = 0.04) -> None:
        super().__init__()
        self.tau = check_param("tau", tau, low=0.0, strict=True)

    def compute(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z = float_logits(logits)
        norms = torch.linalg.vector_norm(z, dim=1, keepdim=True) + NORM_EPS
        return F.cross_entropy(z / (norms * self.tau), targets)

    def extra_repr(self) -> str:
        return f"tau={self.tau}"
