"""Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017).

One scalar ``T > 0`` divides the **predictive** logits ``s`` (``loss.predictive_logits(z)``, whose
softmax is the loss's predictive distribution). It is fitted on the **val** split by minimising
the exact NLL of the scaled distribution,

.. math:: T^* = \\arg\\min_{T \\in [T_{min}, T_{max}]} f(1/T), \\qquad
   f(\\beta) = -\\frac1N \\sum_i \\log\\operatorname{softmax}(\\beta s_i)_{y_i}
   = \\frac1N \\sum_i \\Bigl(\\log\\sum_k e^{\\beta s_{ik}} - \\beta s_{i,y_i}\\Bigr),

computed with ``log_softmax`` in float64 (no floor on the probabilities). ``f`` is convex in
``beta = 1/T`` (a log-sum-exp of linear functions minus a linear one), with derivative

.. math:: f'(\\beta) = \\frac1N \\sum_i \\bigl(\\mathbb{E}_{\\operatorname{softmax}(\\beta s_i)}[s_i]
   - s_{i,y_i}\\bigr),

non-decreasing in ``beta``. So ``T^*`` is the root of ``f'`` found by scipy's ``brentq`` (a
bracketing method: it cannot miss the one minimum), or the bound of ``[T_MIN, T_MAX]`` on the side
where ``f'`` keeps its sign. Because ``T`` divides the predictive logits, the prediction
``argmax softmax(s / T) = argmax s`` never changes. torch-uncertainty's ``TemperatureScaler`` is
not used because it fits by gradient descent through the model on a dataloader.
"""

from __future__ import annotations

import torch
from torch import Tensor

from calibench.errors import UsageError

__all__ = ["T_MAX", "T_MIN", "fit_temperature", "scaled_probabilities", "temperature_nll"]

T_MIN, T_MAX = 1e-2, 1e2
"""The fitted temperature is clamped to this range (a degenerate val split drives T to 0 or inf)."""


def scaled_probabilities(logits: Tensor, temperature: float) -> Tensor:
    """``softmax(logits / T)`` in float64, for predictive logits ``(N, K)``."""
    return torch.softmax(logits.detach().double() / temperature, dim=1)


def temperature_nll(logits: Tensor, labels: Tensor, temperature: float) -> float:
    """The exact NLL ``cross_entropy(logits / T, labels)`` in float64 (the objective of the fit)."""
    return float(
        torch.nn.functional.cross_entropy(
            logits.detach().double() / temperature, labels.detach().long()
        )
    )


def _slope(logits: Tensor, labels: Tensor, beta: float) -> float:
    """``f'(beta)``: mean over samples of ``E_softmax(beta s)[s] - s_y``; see the module doc."""
    probs = torch.softmax(beta * logits, dim=1)
    expected = (probs * logits).sum(dim=1)
    return float((expected - logits.gather(1, labels[:, None]).squeeze(1)).mean())


def fit_temperature(logits: Tensor, labels: Tensor, *, xtol: float = 1e-12) -> float:
    """Fit ``T`` on predictive logits ``(N, K)`` and labels ``(N,)``; see the module doc.

    Returns the minimiser of the exact NLL of ``softmax(logits / T)`` over
    ``[T_MIN, T_MAX]`` (``1.0`` when the NLL does not depend on ``T``, e.g. all logits tied).
    ``xtol`` is the absolute tolerance on ``1/T``. Raises :class:`UsageError` for malformed or
    non-finite input.
    """
    from scipy.optimize import brentq

    if (
        not isinstance(logits, Tensor)
        or not isinstance(labels, Tensor)
        or logits.dim() != 2
        or logits.shape[0] == 0
        or labels.shape != (logits.shape[0],)
    ):
        raise UsageError(
            f"temperature scaling needs logits (N, K) and labels (N,) with N > 0, got "
            f"{tuple(getattr(logits, 'shape', ()))} and {tuple(getattr(labels, 'shape', ()))}"
        )
    if not logits.is_floating_point() or labels.is_floating_point():
        raise UsageError(
            f"temperature scaling needs floating logits and integer labels, got "
            f"{logits.dtype} and {labels.dtype}"
        )
    logits = logits.detach().to("cpu", torch.float64)
    labels = labels.detach().to("cpu", torch.int64)
    if not bool(torch.isfinite(logits).all()):
        raise UsageError("cannot fit a temperature on non-finite logits; the model has diverged")
    k = logits.shape[1]
    if int(labels.min()) < 0 or int(labels.max()) >= k:
        raise UsageError(f"temperature scaling needs labels in [0, {k}) for K={k} classes")

    def slope(beta: float) -> float:
        return _slope(logits, labels, beta)

    beta_lo, beta_hi = 1.0 / T_MAX, 1.0 / T_MIN
    at_one = slope(1.0)
    if at_one == 0.0:
        return 1.0
    if at_one < 0.0:  # the minimum lies at beta > 1, i.e. T < 1
        if slope(beta_hi) <= 0.0:
            return T_MIN
        beta = brentq(slope, 1.0, beta_hi, xtol=xtol, rtol=4 * 2.0**-52)
    else:
        if slope(beta_lo) >= 0.0:
            return T_MAX
        beta = brentq(slope, beta_lo, 1.0, xtol=xtol, rtol=4 * 2.0**-52)
    return min(max(1.0 / float(beta), T_MIN), T_MAX)
