r"""The IQ losses as the poster's public code (``Losses/iq.py``) computes them: ``iq-ref-*``.

They differ from the poster's formulas (``iq-*``, see :mod:`calibench.losses.iq`) and are
registered separately so the benchmark can show whether the difference matters. They were
written from the formulas below, not from that code.

Predictive logits: the vector whose log-partition the loss computes, ``s = r`` (``r = z`` for
``iq-ref-chi`` and ``iq-ref-klfix``, ``r`` as below for the others): the loss's gradient in
``r_k`` (k != y) is ``softmax(r)_k``, the IQ gradient at ``alpha = 1``. So ``iq-ref-chi`` and
``iq-ref-klfix`` predict ``softmax(z)`` and ``iq-ref-hellinger`` and ``iq-ref-js`` predict
``softmax(m(z))`` (the ``+1e-5`` shift cancels in the softmax), the distribution of the
Table 1 losses at ``alpha = 1``. Before issue 10 calibench scored ``softmax(z)`` for all four;
``m`` is increasing, so the predicted class is the same, but calibration and OOD scores are not.
Scoring the implied distribution makes ``iq-ref-*`` vs ``iq-*`` a comparison of training alone.

* ``iq-ref-chi``: ``-z_y + logsumexp(z) + (alpha/4) * mean over all N*K logits of z^2`` (a
  penalty on every logit, not ``phi`` of the target energy).
* ``iq-ref-hellinger``, ``iq-ref-js``: ``r = m(z) + 1e-5``, ``-(w * r_y) + logsumexp(r)`` with
  the detached weight ``w = phi'(r_y)``: the gradient is the IQ gradient at ``alpha = 1``
  (``-phi'(r_y) + softmax(r)_y``), the value is not ``phi``.
* ``iq-ref-klfix``: ``r = z``, ``w = exp(-z_y)`` detached, and the batch mean ``L`` replaced by
  ``log(L + 1)``.

They reproduce that behaviour without the guards of ``iq-*``: ``iq-ref-klfix`` overflows
(``w = inf``) for ``z_y < -88`` in float32, as the reference would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calibench.losses.base import CalibrationLoss, check_param, float_logits
from calibench.losses.iq import LOG_2, LOG_E_MINUS_1
from calibench.registry import register_loss

__all__ = ["RefChiLoss", "RefHellingerLoss", "RefJensenShannonLoss", "RefKLFixLoss"]

REFERENCE_CODE = "IQ-loss poster's public code, Losses/iq.py (reference behaviour)"
#: The constant the reference code adds to the energies of its Hellinger and JS variants.
REF_SHIFT = 1e-5


def _target(z: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return z.gather(1, targets.unsqueeze(1)).squeeze(1)


@register_loss(
    "iq-ref-chi",
    summary="IQ chi^2 as the poster's code: CE + (alpha/4) * mean of all squared logits",
    reference=REFERENCE_CODE,
)
class RefChiLoss(CalibrationLoss):
    r"""The poster code's chi^2 IQ loss.

    .. math:: L = \frac{1}{N}\sum_i \big(-z_{iy_i} + \mathrm{logsumexp}(z_i)\big)
                  + \frac{\alpha}{4}\,\frac{1}{NK}\sum_{i,k} z_{ik}^2

    i.e. cross-entropy plus an L2 penalty on every logit (``iq-chi2`` penalises only the target
    logit, by :math:`z_y^2/4`). Predictive logits: ``z``.
    Parameters: ``alpha`` > 0, default 1. Reference: the poster's code, ``Losses/iq.py``.
    """

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = check_param("alpha", alpha, low=0.0, strict=True)

    def compute(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z = float_logits(logits)
        return F.cross_entropy(z, targets) + self.alpha / 4.0 * z.square().mean()


class _DetachedWeightLoss(CalibrationLoss):
    """``mean(-(w * r_y) + logsumexp(r))`` with ``r = m(z) + 1e-5`` and ``w = phi'(r_y)`` detached."""

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predictive_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """``r``: the energies whose ``logsumexp`` is the loss's log-partition."""
        return self.energy(float_logits(logits))

    def detached_weight(self, z_y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def compute(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z = float_logits(logits)
        r = self.energy(z)
        z_y = _target(z, targets)
        w = self.detached_weight(z_y.detach())
        return (torch.logsumexp(r, dim=1) - w * _target(r, targets)).mean()


@register_loss(
    "iq-ref-hellinger",
    summary="Hellinger IQ as the poster's code: -(w r_y) + logsumexp(r), w = phi'(r_y) detached",
    reference=REFERENCE_CODE,
)
class RefHellingerLoss(_DetachedWeightLoss):
    r"""The poster code's squared-Hellinger IQ loss.

    .. math:: r = \mathrm{softplus}(z + \log(e-1)) - 1 + 10^{-5},\quad
              w = \mathrm{sg}\big[(1 + r_y)^{-2}\big],\quad
              \ell = -w\,r_y + \mathrm{logsumexp}(r)

    (:math:`\mathrm{sg}`: no gradient; :math:`\phi'(x) = (1+x)^{-2}`). Predictive logits:
    ``r`` (so ``softmax(m(z))``). Parameters: none. Reference: the poster's code, ``Losses/iq.py``.
    """

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        return F.softplus(z + LOG_E_MINUS_1) - 1.0 + REF_SHIFT

    def detached_weight(self, z_y: torch.Tensor) -> torch.Tensor:
        one_plus_r = F.softplus(z_y + LOG_E_MINUS_1) + REF_SHIFT
        return one_plus_r.pow(-2)


@register_loss(
    "iq-ref-js",
    summary="Jensen-Shannon IQ as the poster's code: -(w r_y) + logsumexp(r), w = phi'(r_y) detached",
    reference=REFERENCE_CODE,
)
class RefJensenShannonLoss(_DetachedWeightLoss):
    r"""The poster code's Jensen-Shannon IQ loss.

    .. math:: r = \mathrm{softplus}(z) - \log 2 + 10^{-5},\quad
              w = \mathrm{sg}\Big[\frac{e^{-r_y}}{2 - e^{-r_y}}\Big]
                = \mathrm{sg}\big[1 / \mathrm{expm1}(\mathrm{softplus}(z_y) + 10^{-5})\big],\quad
              \ell = -w\,r_y + \mathrm{logsumexp}(r)

    Predictive logits: ``r`` (so ``softmax(m(z))``). Parameters: none.
    Reference: the poster's code, ``Losses/iq.py``.
    """

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        return F.softplus(z) - LOG_2 + REF_SHIFT

    def detached_weight(self, z_y: torch.Tensor) -> torch.Tensor:
        # 2 e^r - 1 = e^(r + log 2) - 1, and r + log 2 = softplus(z) + 1e-5
        return torch.expm1(F.softplus(z_y) + REF_SHIFT).reciprocal()


@register_loss(
    "iq-ref-klfix",
    summary="'Reverse KL' IQ as the poster's code: log(1 + mean(-(w z_y) + logsumexp(z))), w = exp(-z_y) detached",
    reference=REFERENCE_CODE,
)
class RefKLFixLoss(_DetachedWeightLoss):
    r"""The poster code's "KL fix" IQ loss.

    .. math:: w = \mathrm{sg}\big[e^{-z_y}\big],\quad
              L = \frac{1}{N}\sum_i \big(-w_i z_{iy_i} + \mathrm{logsumexp}(z_i)\big),\quad
              \text{loss} = \log(L + 1)

    :math:`L \ge 0` always (:math:`x(1 - e^{-x}) \ge 0`), so the log is defined. Not guarded:
    ``w`` overflows for :math:`z_y < -88` in float32, as in the reference. Predictive logits:
    ``z``. Parameters: none. Reference: the poster's code, ``Losses/iq.py``.
    """

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def detached_weight(self, z_y: torch.Tensor) -> torch.Tensor:
        return torch.exp(-z_y)

    def compute(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.log1p(super().compute(logits, targets))
