r"""Label smoothing (cross-entropy against a smoothed one-hot target)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calibench.errors import UsageError
from calibench.losses.base import CalibrationLoss, check_param, float_logits
from calibench.registry import register_loss

__all__ = ["LabelSmoothingLoss"]


@register_loss(
    "ls",
    summary="Label smoothing: cross-entropy against (1 - s) onehot + s/K",
    reference="Müller, Kornblith & Hinton 2019, 'When Does Label Smoothing Help?' (NeurIPS)",
)
class LabelSmoothingLoss(CalibrationLoss):
    r"""Label smoothing.

    .. math:: \ell(z, y) = -\sum_k q_k \log p_k,\quad q = (1 - s)\,\mathrm{onehot}(y) + s/K,\quad
              p = \mathrm{softmax}(z)

    Computed by ``torch.nn.functional.cross_entropy(label_smoothing=s)``.
    Parameters: ``smoothing`` s in [0, 1), default 0.05 (Müller et al. 2019's CIFAR setting).
    Predictive logits: ``z``. Reference: Müller, Kornblith & Hinton 2019 (NeurIPS).
    """

    def __init__(self, smoothing: float = 0.05) -> None:
        super().__init__()
        self.smoothing = check_param("smoothing", smoothing, low=0.0)
        if self.smoothing >= 1.0:
            raise UsageError(f"parameter smoothing must be < 1, got {self.smoothing}")

    def compute(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(float_logits(logits), targets, label_smoothing=self.smoothing)

    def extra_repr(self) -> str:
        return f"smoothing={self.smoothing}"
