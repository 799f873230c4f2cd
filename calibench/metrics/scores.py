"""OOD scores from logits and probabilities, in float64; a higher score means "more in-distribution".

Float64 matters: float32 softmax saturates at 1.0 for confident predictions, and the resulting
ties bias AUROC towards 0.5.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor

from calibench.errors import UnknownNameError, UsageError

__all__ = ["SCORES", "energy", "maxlogit", "msp", "ood_scores"]


def msp(logits: Tensor, probs: Tensor) -> Tensor:
    r"""Maximum softmax probability (Hendrycks & Gimpel, ICLR 2017): :math:`\max_k p_k`.

    ``probs`` is the loss's predictive distribution, ``loss.probabilities(logits.double())``, so
    for losses whose probabilities are not ``softmax(logits)`` this is their max probability.
    """
    return probs.double().amax(dim=1)


def energy(logits: Tensor, probs: Tensor) -> Tensor:
    r"""Negative free energy at temperature 1 (Liu et al., NeurIPS 2020): :math:`\log\sum_k e^{z_k}`."""
    return torch.logsumexp(logits.double(), dim=1)


def maxlogit(logits: Tensor, probs: Tensor) -> Tensor:
    r"""Maximum logit (Hendrycks et al., ICML 2022): :math:`\max_k z_k`."""
    return logits.double().amax(dim=1)


SCORES: Mapping[str, Callable[[Tensor, Tensor], Tensor]] = {
    "msp": msp,
    "energy": energy,
    "maxlogit": maxlogit,
}
"""Score name -> ``fn(logits, probs) -> (N,) float64``."""


def ood_scores(
    logits: Tensor, probs: Tensor, names: Iterable[str] = tuple(SCORES)
) -> dict[str, Tensor]:
    """Each score in ``names`` for ``logits (N, K)`` and ``probs (N, K)``, as float64 ``(N,)`` tensors."""
    if logits.dim() != 2 or probs.shape != logits.shape:
        raise UsageError(
            f"logits and probs must both have shape (N, K), got {tuple(logits.shape)} "
            f"and {tuple(probs.shape)}"
        )
    names = list(names)
    unknown = [n for n in names if n not in SCORES]
    if unknown:
        raise UnknownNameError(
            f"unknown OOD score(s) {', '.join(unknown)}; available: {', '.join(SCORES)}"
        )
    return {name: SCORES[name](logits, probs) for name in names}
