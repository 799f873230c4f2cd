"""OOD scores from predictive logits, in float64; a higher score means "more in-distribution".

Every score is a function of the **predictive** logits ``s`` (``loss.predictive_logits(z)``, whose
softmax is the loss's predictive distribution), never of the raw network outputs: for a loss
whose distribution is not ``softmax(z)`` (IQ family: ``s = m(z) / alpha``; logit normalisation)
the three scores then describe the same distribution that the calibration metrics do.

Float64 matters: float32 softmax saturates at 1.0 for confident predictions, and the resulting
ties bias AUROC towards 0.5.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor

from calibench.errors import UnknownNameError, UsageError

__all__ = ["SCORES", "energy", "maxlogit", "msp", "ood_scores"]


def msp(logits: Tensor) -> Tensor:
    r"""Maximum softmax probability (Hendrycks & Gimpel, ICLR 2017): :math:`\max_k \operatorname{softmax}(s)_k`."""
    return torch.softmax(logits.double(), dim=1).amax(dim=1)


def energy(logits: Tensor) -> Tensor:
    r"""Negative free energy at temperature 1 (Liu et al., NeurIPS 2020): :math:`\log\sum_k e^{s_k}`."""
    return torch.logsumexp(logits.double(), dim=1)


def maxlogit(logits: Tensor) -> Tensor:
    r"""Maximum logit (Hendrycks et al., ICML 2022): :math:`\max_k s_k`."""
    return logits.double().amax(dim=1)


SCORES: Mapping[str, Callable[[Tensor], Tensor]] = {
    "msp": msp,
    "energy": energy,
    "maxlogit": maxlogit,
}
"""Score name -> ``fn(predictive_logits (N, K)) -> (N,) float64``."""


def ood_scores(logits: Tensor, names: Iterable[str] = tuple(SCORES)) -> dict[str, Tensor]:
    """Each score in ``names`` of predictive ``logits (N, K)``, as float64 ``(N,)`` CPU tensors."""
    if not isinstance(logits, Tensor) or logits.dim() != 2 or not logits.is_floating_point():
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise UsageError(f"OOD scores need floating predictive logits of shape (N, K), got {shape}")
    names = list(names)
    unknown = [n for n in names if n not in SCORES]
    if unknown:
        raise UnknownNameError(
            f"unknown OOD score(s) {', '.join(unknown)}; available: {', '.join(SCORES)}"
        )
    logits = logits.detach().to("cpu", torch.float64)
    return {name: SCORES[name](logits) for name in names}
