"""Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017).

One scalar ``T > 0`` is fitted on the **val** split by minimising the NLL of the loss's own
predictive distribution at scaled logits,

.. math:: T^* = \\arg\\min_T -\\frac1N \\sum_i \\log p_{y_i}(z_i / T),
   \\qquad p(z) = \\texttt{loss.probabilities}(z),

with LBFGS (strong-Wolfe line search) on ``log T`` from ``T = 1``, in float64. For softmax losses
``p(z / T) = softmax(z / T)``, the usual definition. For a loss whose probabilities are not
``softmax(logits)`` (e.g. IQ loss: ``softmax(m(z) / alpha)``), scaling the logits the loss sees is
the honest generalisation: the post-hoc map stays one scalar on the model's output, and the loss's
own link function is kept. torch-uncertainty's ``TemperatureScaler`` is not used because it
hard-codes ``softmax`` and fits on a dataloader through the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from calibench.errors import UsageError

__all__ = ["T_MAX", "T_MIN", "fit_temperature", "scaled_probabilities"]

T_MIN, T_MAX = 1e-2, 1e2
"""The fitted temperature is clamped to this range (a degenerate val split drives T to 0 or inf)."""

ProbabilityFn = Callable[[Tensor], Tensor]


def _softmax(logits: Tensor) -> Tensor:
    return torch.softmax(logits, dim=1)


def scaled_probabilities(
    logits: Tensor, temperature: float, probabilities: ProbabilityFn | None = None
) -> Tensor:
    """``probabilities(logits / T)`` in float64 (``softmax`` when ``probabilities`` is None)."""
    fn = probabilities or _softmax
    return fn(logits.double() / temperature).double()


def _nll(probabilities: ProbabilityFn, logits: Tensor, labels: Tensor, log_t: Tensor) -> Tensor:
    if probabilities is _softmax:
        return torch.nn.functional.cross_entropy(logits / log_t.exp(), labels)
    probs = probabilities(logits / log_t.exp()).double()
    return -probs.gather(1, labels[:, None]).clamp_min(1e-12).log().mean()


def fit_temperature(
    logits: Tensor,
    labels: Tensor,
    probabilities: ProbabilityFn | None = None,
    *,
    max_iter: int = 100,
) -> float:
    """Fit ``T`` on ``logits (N, K)`` / ``labels (N,)`` by LBFGS on the NLL; see the module doc.

    ``probabilities`` maps logits to the predictive distribution (a loss's ``probabilities``
    method); ``None`` means ``softmax``. Returns ``T`` clamped to ``[T_MIN, T_MAX]``.
    """
    if logits.dim() != 2 or logits.shape[0] == 0 or labels.shape != (logits.shape[0],):
        raise UsageError(
            f"temperature scaling needs logits (N, K) and labels (N,) with N > 0, got "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    logits = logits.detach().to("cpu", torch.float64)
    labels = labels.detach().to("cpu", torch.int64)
    if not bool(torch.isfinite(logits).all()):
        raise UsageError("cannot fit a temperature on non-finite logits; the model has diverged")
    fn = probabilities or _softmax
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe", tolerance_grad=1e-10
    )

    def closure() -> Tensor:
        opt.zero_grad()
        value = _nll(fn, logits, labels, log_t)
        value.backward()
        return value

    with torch.enable_grad():
        opt.step(closure)
    t = math.exp(float(log_t.detach()))
    if not math.isfinite(t):
        t = _grid_search(fn, logits, labels)
    return min(max(t, T_MIN), T_MAX)


def _grid_search(probabilities: ProbabilityFn, logits: Tensor, labels: Tensor) -> float:
    grid = torch.linspace(math.log(T_MIN), math.log(T_MAX), 401, dtype=torch.float64)
    with torch.no_grad():
        values = torch.stack([_nll(probabilities, logits, labels, g) for g in grid])
    values = torch.nan_to_num(values, nan=math.inf)
    return math.exp(float(grid[int(values.argmin())]))
