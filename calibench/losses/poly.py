r"""Poly-1: cross-entropy plus the first polynomial term of its Taylor expansion."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calibench.losses._numerics import one_minus_exp
from calibench.losses.base import CalibrationLoss, check_param, float_logits
from calibench.registry import register_loss

__all__ = ["Poly1Loss"]


@register_loss(
    "poly1",
    summary="Poly-1: CE + epsilon (1 - p_y)",
    reference=(
        "Leng et al. 2022, 'PolyLoss: A Polynomial Expansion Perspective of Classification "
        "Loss Functions' (ICLR)"
    ),
)
class Poly1Loss(CalibrationLoss):
    r"""Poly-1 loss.

    .. math:: \ell(z, y) = -\log p_y + \epsilon\,(1 - p_y),\quad p = \mathrm{softmax}(z)

    Parameters: ``epsilon`` >= -1, default 1 (below -1 the loss would increase with
    :math:`p_y`). Predictive logits: ``z``. Reference: Leng et al. 2022 (ICLR).
    """

    def __init__(self, epsilon: float = 1.0) -> None:
        super().__init__()
        self.epsilon = check_param("epsilon", epsilon, low=-1.0)

    def compute(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(float_logits(logits), targets, reduction="none")
        return (ce + self.epsilon * one_minus_exp(-ce)).mean()

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}"
