r"""Focal-loss family: focal, FLSD-53 (sample-dependent gamma) and dual focal.

All three share one numerically safe modulating factor (:func:`focal_weight`): ``1 - p`` is
computed as ``-expm1(log p)`` (no cancellation when ``p`` is close to 1) and floored at the
smallest normal float, so the gradient is finite for every ``gamma >= 0``.

Why not torch-uncertainty's ``FocalLoss`` (0.13): its value is right, but it computes
``(1 - exp(log p_y)) ** gamma``, whose gradient is NaN for ``0 < gamma < 1`` as soon as ``p_y``
rounds to 1 (a logit margin above about 17 in float32): ``gamma * 0**(gamma-1) * 0 = inf * 0``.
It is kept as an oracle in the tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calibench.losses._numerics import focal_weight, one_minus_exp, target_log_probs
from calibench.losses.base import CalibrationLoss, check_param, float_logits
from calibench.registry import register_loss

__all__ = ["DualFocalLoss", "FLSD53Loss", "FocalLoss"]


@register_loss(
    "focal",
    summary="Focal loss -(1 - p_y)^gamma log p_y (gamma=0 is cross-entropy)",
    reference=(
        "Lin et al. 2017, 'Focal Loss for Dense Object Detection' (ICCV); for calibration, "
        "Mukhoti et al. 2020, 'Calibrating Deep Neural Networks using Focal Loss' (NeurIPS)"
    ),
)
class FocalLoss(CalibrationLoss):
    r"""Focal loss.

    .. math:: \ell(z, y) = -(1 - p_y)^\gamma \log p_y,\quad p = \mathrm{softmax}(z)

    Parameters: ``gamma`` >= 0, default 3 (Mukhoti et al. 2020's best fixed gamma on CIFAR);
    ``gamma = 0`` is cross-entropy. Predictive logits: ``z``.
    References: Lin et al. 2017 (ICCV); Mukhoti et al. 2020 (NeurIPS).
    """

    def __init__(self, gamma: float = 3.0) -> None:
        super().__init__()
        self.gamma = check_param("gamma", gamma, low=0.0)

    def compute(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p_y = target_log_probs(F.log_softmax(float_logits(logits), dim=1), targets)
        return -(focal_weight(one_minus_exp(log_p_y), self.gamma) * log_p_y).mean()

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}"


@register_loss(
    "flsd53",
    summary="Focal loss with sample-dependent gamma: 5 if p_y < 0.2, else 3 (FLSD-53)",
    reference="Mukhoti et al. 2020, 'Calibrating Deep Neural Networks using Focal Loss' (NeurIPS)",
)
class FLSD53Loss(CalibrationLoss):
    r"""Sample-dependent focal loss FLSD-53.

    .. math:: \ell(z, y) = -(1 - p_y)^{\gamma(p_y)} \log p_y,\quad
              \gamma(p_y) = 5 \text{ if } p_y < 0.2,\ 3 \text{ otherwise}

    :math:`\gamma` is piecewise constant in :math:`p_y` (no gradient flows through it).
    Parameters: none (the name fixes 5 and 3). Predictive logits: ``z``.
    Reference: Mukhoti et al. 2020 (NeurIPS), Section 5.
    """

    GAMMA_HARD = 5.0
    GAMMA_EASY = 3.0
    THRESHOLD = 0.2

    def compute(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p_y = target_log_probs(F.log_softmax(float_logits(logits), dim=1), targets)
        hard = log_p_y.detach().exp() < self.THRESHOLD
        gamma = torch.where(hard, self.GAMMA_HARD, self.GAMMA_EASY).to(log_p_y.dtype)
        return -(focal_weight(one_minus_exp(log_p_y), gamma) * log_p_y).mean()


@register_loss(
    "dual-focal",
    summary="Dual focal loss -(1 - p_y + p_j)^gamma log p_y, p_j the largest p below p_y",
    reference="Tao, Dong & Xu 2023, 'Dual Focal Loss for Calibration' (ICML)",
)
class DualFocalLoss(CalibrationLoss):
    r"""Dual focal loss.

    .. math:: \ell(z, y) = -(1 - p_y + p_j)^\gamma \log p_y,\quad
              p_j = \max\{p_k : p_k < p_y\}\ (0 \text{ if none})

    :math:`p_j` is the probability of the class ranked just after the ground truth, i.e. the
    largest non-target probability when the prediction is right (as in the paper and its
    official code); gradients flow through both :math:`p_y` and :math:`p_j`.
    Parameters: ``gamma`` >= 0, default 5 (the paper's CIFAR-10 setting).
    Predictive logits: ``z``. Reference: Tao, Dong & Xu 2023 (ICML).
    """

    def __init__(self, gamma: float = 5.0) -> None:
        super().__init__()
        self.gamma = check_param("gamma", gamma, low=0.0)

    def compute(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(float_logits(logits), dim=1)
        p = log_p.exp()
        log_p_y = target_log_probs(log_p, targets)
        p_y = log_p_y.exp()
        below = p < p_y.unsqueeze(1)
        p_j = torch.where(below, p, torch.zeros_like(p)).amax(dim=1)
        base = one_minus_exp(log_p_y) + p_j
        return -(focal_weight(base, self.gamma) * log_p_y).mean()

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}"
