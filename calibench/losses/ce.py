"""Cross-entropy, the baseline every calibration loss is compared with."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calibench.losses.base import CalibrationLoss, float_logits
from calibench.registry import register_loss


@register_loss(
    "ce",
    summary="Cross-entropy (negative log-likelihood of the softmax)",
    reference="Standard; the baseline of Guo et al. 2017, 'On Calibration of Modern Neural Networks'",
)
class CrossEntropyLoss(CalibrationLoss):
    r"""Cross-entropy.

    .. math:: \ell(z, y) = -\log p_y = -z_y + \log \sum_k e^{z_k}, \quad p = \mathrm{softmax}(z)

    Parameters: none. Returns the batch mean (float64 logits give a float64 value).
    Predictive logits: ``z`` (probabilities ``softmax(z)``).
    Reference: the standard maximum-likelihood loss; see Guo et al. 2017 (ICML) for its
    overconfidence in modern networks.
    """

    def compute(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(float_logits(logits), targets)
