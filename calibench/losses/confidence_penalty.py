r"""Confidence penalty: cross-entropy minus a multiple of the predictive entropy.

Wraps torch-uncertainty's ``ConfidencePenaltyLoss``, which computes
``CE + beta * (log K + sum_k p_k log(p_k + 1e-6))``, i.e. ``CE + beta * KL(p || uniform)``:
the same gradient as the paper's ``CE - beta * H(p)`` (up to the 1e-6 that keeps ``p log p``
finite when ``p`` underflows) but a value shifted by the constant ``beta * log K``. The wrapper
subtracts that constant so the reported value is the paper's.
"""

from __future__ import annotations

import math

import torch

from calibench.losses.base import CalibrationLoss, check_param, float_logits
from calibench.registry import register_loss

__all__ = ["ConfidencePenaltyLoss"]


@register_loss(
    "confidence-penalty",
    summary="Confidence penalty: CE - beta * H(p)",
    reference=(
        "Pereyra et al. 2017, 'Regularizing Neural Networks by Penalizing Confident Output "
        "Distributions' (ICLR workshop)"
    ),
)
class ConfidencePenaltyLoss(CalibrationLoss):
    r"""Confidence penalty.

    .. math:: \ell(z, y) = -\log p_y - \beta H(p),\quad H(p) = -\sum_k p_k \log p_k,\quad
              p = \mathrm{softmax}(z)

    Computed by torch-uncertainty's ``ConfidencePenaltyLoss`` (``p log p`` as
    ``p log(p + 1e-6)``, a bias below ``beta * K * 1e-6``) minus its constant ``beta log K``.
    Parameters: ``beta`` >= 0, default 0.1. Predictive logits: ``z``.
    Reference: Pereyra et al. 2017 (ICLR workshop).
    """

    def __init__(self, beta: float = 0.1) -> None:
        super().__init__()
        self.beta = check_param("beta", beta, low=0.0)
        from torch_uncertainty.losses import ConfidencePenaltyLoss as _TUConfidencePenalty

        self._penalised_ce = _TUConfidencePenalty(reg_weight=self.beta, reduction="mean")

    def compute(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z = float_logits(logits)
        return self._penalised_ce(z, targets) - self.beta * math.log(z.shape[1])

    def extra_repr(self) -> str:
        return f"beta={self.beta}"
