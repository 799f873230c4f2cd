r"""ACLS: adaptive and conditional label smoothing (Park, Noh, Oh, Baek & Ham, ICCV 2023)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calibench.losses.base import CalibrationLoss, check_param, float_logits
from calibench.registry import register_loss

__all__ = ["ACLSLoss", "acls_regulariser"]

REFERENCE = (
    "Park, Noh, Oh, Baek & Ham 2023, 'ACLS: Adaptive and Conditional Label Smoothing for "
    "Network Calibration' (ICCV); official code cvlab-yonsei/ACLS, calibrate/losses/acls.py"
)


def acls_regulariser(
    logits: torch.Tensor, margin: float, pos_lambda: float, neg_lambda: float
) -> torch.Tensor:
    r"""The ACLS regulariser of a batch, as ``ACLS.get_reg`` computes it.

    With :math:`M_n = \max_j z_{nj}` and :math:`W_n = \{k : z_{nk} = M_n\}` (the winners):

    .. math:: R = \frac{\lambda_+}{N} \sum_n |W_n|\,\max(0, M_n - m)^2
              + \frac{\lambda_-}{N(K-1)} \sum_n \sum_{k \notin W_n}
                \max(0, \mathrm{sg}(M_n) - z_{nk} - m)^2

    ``sg`` stops the gradient. The positive term penalises the largest logit itself beyond the
    margin (not a distance) and its gradient reaches the logit ``torch.max`` picks.
    """
    top, _ = logits.max(dim=1)
    top_const = top.detach()
    winners = logits.detach() == top_const.unsqueeze(1)
    n, k = logits.shape
    pos = winners.sum(dim=1).to(logits.dtype) * F.relu(top - margin).square()
    gaps = F.relu(top_const.unsqueeze(1) - logits - margin).square()
    neg = torch.where(winners, torch.zeros_like(gaps), gaps)
    return pos_lambda * pos.sum() / n + neg_lambda * neg.sum() / (n * (k - 1))


@register_loss(
    "acls",
    summary=(
        "CE + alpha * (pos_lambda * relu(max_j z_j - margin)^2 "
        "+ neg_lambda * mean_{k not argmax} relu(max_j z_j - z_k - margin)^2)"
    ),
    reference=REFERENCE,
)
class ACLSLoss(CalibrationLoss):
    r"""Cross-entropy plus ACLS's squared-hinge penalties on the top logit and the logit gaps.

    .. math:: L = \frac{1}{N}\sum_n -\log p_{ny_n} + \alpha R,\qquad
              R = \frac{\lambda_+}{N} \sum_n \max(0, M_n - m)^2
              + \frac{\lambda_-}{N(K-1)} \sum_n \sum_{k \ne \arg\max}
                \max(0, \mathrm{sg}(M_n) - z_{nk} - m)^2

    with :math:`M_n = \max_j z_{nj}` and ``sg`` a stop-gradient (see :func:`acls_regulariser`
    for ties). As ``ACLS.forward`` of the official code computes it: mean cross-entropy plus
    ``alpha`` times ``get_reg``, where the winner's term is ``relu(max_values - margin) ** 2``
    summed and divided by ``N``, the others' ``relu(max_values.detach() - inputs - margin) ** 2``
    summed and divided by ``N (K - 1)``. The targets do not enter the regulariser: it is
    conditioned on the predicted class, not the label. The gradient of the gap term reaches only
    the non-winning logits (the maximum is detached there), so it pulls every logit more than
    ``margin`` below the top one up, with a force that grows with the gap (the "adaptive" part).

    Parameters: ``pos_lambda`` >= 0, default 1.0; ``neg_lambda`` >= 0, default 0.1; ``alpha``
    >= 0, default 0.1; ``margin`` >= 0, default 10.0. These are the official
    ``configs/loss/acls.yaml`` (lines 2-5) and the signature defaults of ``ACLS.__init__``
    (``calibrate/losses/acls.py`` lines 9-12). The repository ships no CIFAR-10 config (only
    Tiny-ImageNet and ImageNet runs); ``num_classes`` (200 there) and ``ignore_index`` are stored
    but never used by the loss and are not parameters here. Predictive logits: ``z``.
    Reference: Park et al. 2023 (ICCV), cvlab-yonsei/ACLS ``calibrate/losses/acls.py``.
    """

    def __init__(
        self,
        pos_lambda: float = 1.0,
        neg_lambda: float = 0.1,
        alpha: float = 0.1,
        margin: float = 10.0,
    ) -> None:
        super().__init__()
        self.pos_lambda = check_param("pos_lambda", pos_lambda, low=0.0)
        self.neg_lambda = check_param("neg_lambda", neg_lambda, low=0.0)
        self.alpha = check_param("alpha", alpha, low=0.0)
        self.margin = check_param("margin", margin, low=0.0)

    def compute(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z = float_logits(logits)
        reg = acls_regulariser(z, self.margin, self.pos_lambda, self.neg_lambda)
        return F.cross_entropy(z, targets) + self.alpha * reg

    def extra_repr(self) -> str:
        return (
            f"pos_lambda={self.pos_lambda}, neg_lambda={self.neg_lambda}, "
            f"alpha={self.alpha}, margin={self.margin}"
        )
