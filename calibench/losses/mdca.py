r"""MDCA: cross-entropy plus the multi-class difference in confidence and accuracy."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calibench.losses.base import CalibrationLoss, check_param, float_logits
from calibench.registry import register_loss

__all__ = ["MDCALoss"]


@register_loss(
    "mdca",
    summary="CE + beta * (1/K) sum_j |mean_i p_ij - frequency of class j in the batch|",
    reference=(
        "Hebbalaguppe et al. 2022, 'A Stitch in Time Saves Nine: A Train-Time Regularizing "
        "Loss for Improved Neural Network Calibration' (CVPR)"
    ),
)
class MDCALoss(CalibrationLoss):
    r"""Multi-class difference of confidence and accuracy (MDCA), added to cross-entropy.

    .. math:: L = \frac{1}{N}\sum_i -\log p_{iy_i}
              + \beta\,\frac{1}{K}\sum_{j=1}^K \Big|\frac{1}{N}\sum_i p_{ij}
              - \frac{1}{N}\sum_i \mathbb{1}[y_i = j]\Big|

    The MDCA term couples the samples of a batch (it is not a mean of per-sample losses).
    Parameters: ``beta`` >= 0, default 1 (the paper's NLL+MDCA setting).
    Predictive logits: ``z``. Reference: Hebbalaguppe et al. 2022 (CVPR).
    """

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = check_param("beta", beta, low=0.0)

    def compute(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z = float_logits(logits)
        p = torch.softmax(z, dim=1)
        frequency = F.one_hot(targets, p.shape[1]).to(p.dtype).mean(dim=0)
        mdca = (p.mean(dim=0) - frequency).abs().mean()
        return F.cross_entropy(z, targets) + self.beta * mdca

    def extra_repr(self) -> str:
        return f"beta={self.beta}"
