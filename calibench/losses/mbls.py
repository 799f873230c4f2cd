r"""MbLS: margin-based label smoothing (Liu, Ben Ayed, Galdran & Dolz, CVPR 2022)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calibench.losses.base import CalibrationLoss, check_param, float_logits
from calibench.registry import register_loss

__all__ = ["MbLSLoss", "margin_penalty"]

REFERENCE = (
    "Liu, Ben Ayed, Galdran & Dolz 2022, 'The Devil is in the Margin: Margin-based Label "
    "Smoothing for Network Calibration' (CVPR); official code by-liu/MbLS, "
    "calibrate/losses/logit_margin_l1.py"
)


def margin_penalty(logits: torch.Tensor, margin: float) -> torch.Tensor:
    r""":math:`\frac{1}{NK}\sum_{n,k}\max(0, \max_j z_{nj} - z_{nk} - m)`."""
    distance = logits.max(dim=1, keepdim=True).values - logits
    return F.relu(distance - margin).mean()


@register_loss(
    "mbls",
    summary="CE + alpha * mean_{n,k} relu(max_j z_nj - z_nk - margin) (margin-based label smoothing)",
    reference=REFERENCE,
)
class MbLSLoss(CalibrationLoss):
    r"""Cross-entropy plus a linear penalty on logit distances larger than a margin.

    .. math:: L = \frac{1}{N}\sum_n -\log p_{ny_n}
              + \alpha\,\frac{1}{NK}\sum_{n=1}^N\sum_{k=1}^K
                \max\big(0,\ \max_j z_{nj} - z_{nk} - m\big)

    As ``LogitMarginL1.forward`` of the official code computes it: mean cross-entropy, the
    distances ``max_j z_nj - z_nk`` to the largest logit (the argmax itself included, where the
    distance is 0), ``relu(distance - margin)`` averaged over all ``N * K`` entries. Every term
    is a mean over samples, so the loss is a mean of per-sample losses.

    Parameters: ``margin`` (m) >= 0, default 10; ``alpha`` >= 0, default 0.1 (the paper's
    setting; the README's training command passes ``loss=logit_margin loss.margin=10.0
    loss.alpha=0.1``, and ``LogitMarginL1``'s signature defaults are ``margin=10``,
    ``alpha=0.1``). The official alpha schedules (``schedule="add" | "multiply" | "step"``) are
    off by default and unused in the paper, and are not implemented; ``ignore_index`` does not
    apply (targets are class indices in ``[0, K)``).
    Predictive logits: ``z``.
    Reference: Liu et al. 2022 (CVPR), by-liu/MbLS ``calibrate/losses/logit_margin_l1.py``.
    """

    def __init__(self, margin: float = 10.0, alpha: float = 0.1) -> None:
        super().__init__()
        self.margin = check_param("margin", margin, low=0.0)
        self.alpha = check_param("alpha", alpha, low=0.0)

    def compute(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z = float_logits(logits)
        return F.cross_entropy(z, targets) + self.alpha * margin_penalty(z, self.margin)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, alpha={self.alpha}"
