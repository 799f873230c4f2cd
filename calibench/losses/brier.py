r"""Brier score used as a training loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calibench.losses.base import CalibrationLoss, float_logits
from calibench.registry import register_loss

__all__ = ["BrierLoss"]


@register_loss(
    "brier",
    summary="Brier score sum_k (p_k - onehot_k)^2",
    reference=(
        "Brier 1950, 'Verification of Forecasts Expressed in Terms of Probability'; as a "
        "calibration training loss, Mukhoti et al. 2020 (NeurIPS)"
    ),
)
class BrierLoss(CalibrationLoss):
    r"""Brier score.

    .. math:: \ell(z, y) = \sum_k \big(p_k - \mathbb{1}[k = y]\big)^2,\quad p = \mathrm{softmax}(z)

    Parameters: none. Predictive logits: ``z``.
    References: Brier 1950 (Monthly Weather Review); Mukhoti et al. 2020 (NeurIPS) as a loss.
    """

    def compute(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(float_logits(logits), dim=1)
        onehot = F.one_hot(targets, p.shape[1]).to(p.dtype)
        return (p - onehot).square().sum(dim=1).mean()
