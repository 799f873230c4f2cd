r"""MaxSup: max suppression (Zhou, Li, Cheng, Yan, Dong, Fritz & Keuper, NeurIPS 2025).

Wraps torch-uncertainty's ``CrossEntropyMaxSupLoss`` (no label smoothing, mean reduction, no class
weights), which computes ``F.cross_entropy(z, y) + max_sup * (z_top1 - mean_k z_k)`` and takes the
mean over the batch. Its ``reduction="none"`` and ``weight`` paths add a batch-mean cross-entropy to
per-sample penalties, so only ``"mean"`` without weights is used here.
"""

from __future__ import annotations

import torch

from calibench.losses.base import CalibrationLoss, check_param, float_logits
from calibench.registry import register_loss

__all__ = ["MaxSupLoss"]

REFERENCE = (
    "Zhou, Li, Cheng, Yan, Dong, Fritz & Keuper 2025, 'MaxSup: Overcoming Representation "
    "Collapse in Label Smoothing' (NeurIPS, arXiv:2502.15798); official code "
    "ZhouYuxuanYX/Maximum-Suppression-Regularization; computed by torch-uncertainty's "
    "CrossEntropyMaxSupLoss"
)


@register_loss(
    "maxsup",
    summary="CE + alpha * (max_k z_k - mean_k z_k) (max suppression, label smoothing's fix)",
    reference=REFERENCE,
)
class MaxSupLoss(CalibrationLoss):
    r"""Cross-entropy plus a penalty on the top-1 logit's excess over the mean logit.

    .. math:: \ell(z, y) = -\log p_y + \alpha\Big(\max_k z_k - \frac{1}{K}\sum_{k=1}^K z_k\Big)

    Label smoothing with rate :math:`\alpha` is :math:`-\log p_y + \alpha(z_y - \bar z)`; MaxSup
    puts the top-1 logit in place of the label's, so a wrong prediction is penalised too (the
    two coincide when the prediction is right). The batch mean is taken. Computed by
    torch-uncertainty 0.13's ``CrossEntropyMaxSupLoss(label_smoothing=0, max_sup=alpha)``.

    Parameters: ``alpha`` >= 0, default 0.1. The official training scripts raise the weight
    linearly over the epochs, ``alpha_e = 0.1 + 0.1 * e / (E - 1)``, from 0.1 to 0.2
    (``Conv/common_resnet/train.py``, ``OOD/src/model.py`` for CIFAR-10-C, ``Deit/engine.py``;
    ``Conv/ffcv`` divides by ``E``). Their CIFAR-10-LT loss (``LT/loss/MAXsupLoss.py``) has the
    same formula but nothing calls its ``set_epoch``, so it trains with a constant 0.1. The
    schedule is not implemented (the loss does not know the epoch or the run's length, nor does
    torch-uncertainty's); the default is its starting value, ``alpha=0.2`` its end value.
    Predictive logits: ``z``.
    Reference: Zhou et al. 2025 (NeurIPS), arXiv:2502.15798.
    """

    def __init__(self, alpha: float = 0.1) -> None:
        super().__init__()
        self.alpha = check_param("alpha", alpha, low=0.0)
        from torch_uncertainty.losses import CrossEntropyMaxSupLoss

        self._maxsup_ce = CrossEntropyMaxSupLoss(
            label_smoothing=0.0, max_sup=self.alpha, reduction="mean"
        )

    def compute(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self._maxsup_ce(float_logits(logits), targets)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"
