r"""IQ losses: the six f-divergences of the IQ-loss poster's Table 1.

The poster ("Improving Image Classifiers with IQ Loss functions: Non-adversarial f-Divergence
Minimization") treats the classifier as an energy-based model with one energy per class,
:math:`\epsilon = m(z)` applied elementwise to the logits :math:`z`, and maximises
:math:`E_{data}[\phi(\epsilon_y)] - \alpha \log Z` with :math:`Z = \sum_k e^{\epsilon_k/\alpha}`.
As a loss, per sample,

.. math::
    \ell(z, y) = -\phi(\epsilon_y) + \alpha\, \mathrm{logsumexp}(\epsilon / \alpha),
    \qquad p = \mathrm{softmax}(\epsilon / \alpha),

averaged over the batch. ``m`` maps the real line into the domain of :math:`\phi` (identity
where :math:`\phi` needs nothing). Then :math:`\partial\ell/\partial\epsilon_y = -\phi'(\epsilon_y)
+ p_y` and :math:`\partial\ell/\partial\epsilon_k = p_k` for :math:`k \ne y`.

Predictive logits. The model's distribution is :math:`p = \mathrm{softmax}(s)` with
:math:`s = m(z)/\alpha` (``predictive_logits``), and its free energy is
:math:`\alpha \log Z = \alpha\,\mathrm{logsumexp}(s)`. Temperature scaling and the OOD scores
act on ``s``: ``softmax(s / T)`` sharpens monotonically as ``T`` falls and keeps the argmax.
``softmax(m(z / T) / alpha)`` does neither for a nonlinear ``m`` (``iq-fkl``, ``iq-hellinger``,
``iq-js``): as ``T -> 0`` the energies of negative logits collapse onto ``m``'s lower bound, so
the distribution flattens instead, and once they round to that bound the tie goes to class 0
(``z = [-9, -8, -10]``, ``T = 0.01``: predicted class 0 instead of 1). Likewise the raw
``logsumexp(z)`` can rank two inputs opposite to the free energy when ``alpha != 1``.

Domain safety. :math:`\phi(m(z))` is evaluated in closed form from :math:`z`, never as
:math:`\phi` of a rounded :math:`m(z)`, so the energy never has to be represented next to the
domain boundary (where ``softplus`` underflows or ``softplus - 1`` cancels to ``-1``):

* ``iq-fkl``: :math:`\phi(m(z)) = 1 + \log\mathrm{softplus}(z)`, and ``log softplus`` is taken
  as :math:`z` below :math:`z = -40` (exact to float64 precision): finite, slope <= 1, no floor.
* ``iq-js``: :math:`\phi(m(z)) = \log 2 + \log\sigma(z)`: exact everywhere, no floor.
* ``iq-rkl`` and ``iq-hellinger`` grow like :math:`e^{-z}` as :math:`z_y \to -\infty` (that is
  the divergence, not rounding): :math:`-\phi(m(z)) = e^{-v}` with :math:`v = z` (rkl) or
  :math:`v = \log(1 + \epsilon_y) = \log\mathrm{softplus}(z + \log(e-1))` (Hellinger).
  **Floor**: for :math:`v < -40` the exponential is continued along its tangent at
  :math:`v = -40` (value and slope match, so the loss stays convex, C^1 and strictly decreasing
  in :math:`z_y`); i.e. the energy is floored at :math:`\epsilon_y = -40` (rkl) and
  :math:`1 + \epsilon_y = e^{-40} \approx 4.2 \times 10^{-18}` (Hellinger). Per-sample values
  and slopes stay below about :math:`2.4 \times 10^{17}`: finite in float32.
* ``iq-chi2``: :math:`z - z^2/4` is finite for :math:`|z| < 3.6 \times 10^{19}`.

The energies inside the log-partition :math:`\log Z` need no floor (``logsumexp`` accepts any
finite value). Everything is computed in float32 (float64 inputs stay float64), also under
bf16 autocast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from calibench.losses._numerics import exp_neg_floored, log_softplus
from calibench.losses.base import CalibrationLoss, check_param, float_logits
from calibench.registry import register_loss

__all__ = [
    "IQChi2Loss",
    "IQForwardKLLoss",
    "IQHellingerLoss",
    "IQJensenShannonLoss",
    "IQLoss",
    "IQReverseKLLoss",
    "IQTotalVariationLoss",
]

POSTER = (
    "IQ-loss poster, 'Improving Image Classifiers with IQ Loss functions: Non-adversarial "
    "f-Divergence Minimization', Table 1"
)
#: ``softplus(z + LOG_E_MINUS_1) = 1`` at ``z = 0``, so the Hellinger map has ``m(0) = 0``.
LOG_E_MINUS_1 = math.log(math.e - 1.0)
LOG_2 = math.log(2.0)


class IQLoss(CalibrationLoss):
    r"""Base of the IQ family: ``-phi(m(z_y)) + alpha * logsumexp(m(z) / alpha)``, batch mean.

    Subclasses define :meth:`energy` (:math:`m`, elementwise) and :meth:`phi_of_energy`
    (:math:`\phi(m(z))` in a closed form that is finite for every finite ``z``).

    Parameters: ``alpha`` (> 0, default 1): the temperature of the log-partition.
    """

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = check_param("alpha", alpha, low=0.0, strict=True)

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        """The energies ``m(z)``; the identity unless ``phi`` needs a restricted domain."""
        return z

    def phi_of_energy(self, z: torch.Tensor) -> torch.Tensor:
        """``phi(m(z))`` elementwise."""
        raise NotImplementedError

    def compute(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z = float_logits(logits)
        z_y = z.gather(1, targets.unsqueeze(1)).squeeze(1)
        log_partition = self.alpha * torch.logsumexp(self.energy(z) / self.alpha, dim=1)
        return (log_partition - self.phi_of_energy(z_y)).mean()

    def predictive_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """``m(z) / alpha``: its softmax is the Gibbs distribution of the energies."""
        return self.energy(float_logits(logits)) / self.alpha

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


@register_loss(
    "iq-tv",
    summary="IQ loss, total variation: phi(x) = x (equals cross-entropy at alpha=1)",
    reference=POSTER,
)
class IQTotalVariationLoss(IQLoss):
    r"""IQ loss with the total-variation divergence.

    .. math:: \phi(x) = x,\quad m(z) = z,\quad
              \ell = -z_y + \alpha\,\mathrm{logsumexp}(z/\alpha),\quad p = \mathrm{softmax}(z/\alpha)

    With ``alpha = 1`` this is exactly cross-entropy.
    Predictive logits: ``m(z) / alpha``.
    Parameters: ``alpha`` > 0, default 1. Reference: the IQ-loss poster, Table 1.
    """

    def phi_of_energy(self, z: torch.Tensor) -> torch.Tensor:
        return z


@register_loss(
    "iq-chi2",
    summary="IQ loss, Pearson chi^2: phi(x) = x - x^2/4",
    reference=POSTER,
)
class IQChi2Loss(IQLoss):
    r"""IQ loss with the Pearson :math:`\chi^2` divergence.

    .. math:: \phi(x) = x - x^2/4,\quad m(z) = z,\quad
              \ell = -z_y + z_y^2/4 + \alpha\,\mathrm{logsumexp}(z/\alpha)

    Only the target logit is penalised quadratically (compare ``iq-ref-chi``). Finite for
    :math:`|z| < 3.6 \times 10^{19}`.
    Predictive logits: ``m(z) / alpha``.
    Parameters: ``alpha`` > 0, default 1. Reference: the IQ-loss poster, Table 1.
    """

    def phi_of_energy(self, z: torch.Tensor) -> torch.Tensor:
        return z - z.square() / 4.0


@register_loss(
    "iq-rkl",
    summary="IQ loss, 'reverse KL' (poster's naming): phi(x) = -exp(-x)",
    reference=POSTER,
)
class IQReverseKLLoss(IQLoss):
    r"""IQ loss with the poster's "reverse KL" divergence.

    .. math:: \phi(x) = -e^{-x},\quad m(z) = z,\quad
              \ell = e^{-z_y} + \alpha\,\mathrm{logsumexp}(z/\alpha)

    Floor: for :math:`z_y < -40`, :math:`e^{-z_y}` is continued along its tangent at -40
    (see the module docstring), so value and gradient stay finite.
    Predictive logits: ``m(z) / alpha``.
    Parameters: ``alpha`` > 0, default 1. Reference: the IQ-loss poster, Table 1.
    """

    def phi_of_energy(self, z: torch.Tensor) -> torch.Tensor:
        return -exp_neg_floored(z)


@register_loss(
    "iq-fkl",
    summary="IQ loss, 'forward KL' (poster's naming): phi(x) = 1 + log x, m = softplus",
    reference=POSTER,
)
class IQForwardKLLoss(IQLoss):
    r"""IQ loss with the poster's "forward KL" divergence.

    .. math:: \phi(x) = 1 + \log x\ (x > 0),\quad m(z) = \mathrm{softplus}(z),\quad
              \ell = -1 - \log\mathrm{softplus}(z_y)
                     + \alpha\,\mathrm{logsumexp}(\mathrm{softplus}(z)/\alpha)

    :math:`\log\mathrm{softplus}(z)` is evaluated stably (it tends to :math:`z`), so no floor
    is needed: value and gradient are finite for every finite logit.
    Predictive logits: ``m(z) / alpha``.
    Parameters: ``alpha`` > 0, default 1. Reference: the IQ-loss poster, Table 1.
    """

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        return F.softplus(z)

    def phi_of_energy(self, z: torch.Tensor) -> torch.Tensor:
        return 1.0 + log_softplus(z)


@register_loss(
    "iq-hellinger",
    summary="IQ loss, squared Hellinger: phi(x) = x/(1+x), m = softplus(z + log(e-1)) - 1",
    reference=POSTER,
)
class IQHellingerLoss(IQLoss):
    r"""IQ loss with the squared Hellinger divergence.

    .. math:: \phi(x) = \frac{x}{1 + x}\ (x > -1),\quad
              m(z) = \mathrm{softplus}(z + \log(e - 1)) - 1\ (m(0) = 0),\quad
              \ell = \frac{1}{\mathrm{softplus}(z_y + \log(e-1))} - 1
                     + \alpha\,\mathrm{logsumexp}(m(z)/\alpha)

    Floor: :math:`1 + \epsilon_y` is floored at :math:`e^{-40}` with a tangent continuation
    (see the module docstring), so value and gradient stay finite.
    Predictive logits: ``m(z) / alpha``.
    Parameters: ``alpha`` > 0, default 1. Reference: the IQ-loss poster, Table 1.
    """

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        return F.softplus(z + LOG_E_MINUS_1) - 1.0

    def phi_of_energy(self, z: torch.Tensor) -> torch.Tensor:
        # phi = 1 - 1/(1 + eps) and 1 + eps = softplus(z + log(e-1)) = exp(v)
        return 1.0 - exp_neg_floored(log_softplus(z + LOG_E_MINUS_1))


@register_loss(
    "iq-js",
    summary="IQ loss, Jensen-Shannon: phi(x) = log(2 - exp(-x)), m = softplus(z) - log 2",
    reference=POSTER,
)
class IQJensenShannonLoss(IQLoss):
    r"""IQ loss with the Jensen-Shannon divergence.

    .. math:: \phi(x) = \log(2 - e^{-x})\ (x > -\log 2),\quad
              m(z) = \mathrm{softplus}(z) - \log 2\ (m(0) = 0),\quad
              \ell = -\log 2 - \log\sigma(z_y) + \alpha\,\mathrm{logsumexp}(m(z)/\alpha)

    since :math:`2 - e^{-m(z)} = 2\sigma(z)`: exact for every finite logit, no floor needed.
    Predictive logits: ``m(z) / alpha``.
    Parameters: ``alpha`` > 0, default 1. Reference: the IQ-loss poster, Table 1.
    """

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        return F.softplus(z) - LOG_2

    def phi_of_energy(self, z: torch.Tensor) -> torch.Tensor:
        return LOG_2 + F.logsigmoid(z)
