"""OOD detection metrics from per-sample scores where a higher score means "more in-distribution".

AUROC and AUPR come from torchmetrics, FPR95 from torch-uncertainty. Both libraries treat inputs
outside ``[0, 1]`` as logits and apply a sigmoid, which in float32 saturates large scores (energy,
max-logit) into ties. Scores are therefore replaced by their dense ranks scaled to ``[0, 1]`` in
float64 first: every metric here depends only on the order of the scores, ties included, so this
changes nothing but the saturation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from calibench.errors import UsageError

__all__ = ["FPR95_CONVENTION", "OOD_KEYS", "ood_metrics"]

OOD_KEYS: tuple[str, ...] = ("auroc", "aupr_in", "aupr_out", "fpr95")

FPR95_CONVENTION = (
    "OpenOOD v1.5: OOD is the positive class and -score the detector output; FPR95 is the "
    "fraction of ID samples flagged as OOD at the first threshold, over distinct score values "
    "(tied scores never split), whose TPR (fraction of OOD samples flagged) is >= 0.95"
)
"""How ``fpr95`` is defined; records store this string beside the metric."""


def _check_scores(name: str, scores: Tensor) -> Tensor:
    if not isinstance(scores, Tensor):
        raise UsageError(f"{name} must be a torch tensor, got {type(scores).__name__}")
    if scores.dim() != 1 or scores.numel() == 0:
        raise UsageError(f"{name} must be a non-empty 1-D tensor, got shape {tuple(scores.shape)}")
    if not scores.is_floating_point():
        scores = scores.double()
    scores = scores.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(scores).all()):
        raise UsageError(f"{name} contains NaN or inf; the model has diverged or the input is bad")
    return scores


def dense_ranks(scores: Tensor) -> Tensor:
    """Scores mapped to ``rank / (n_distinct - 1)`` in float64: same order, same ties, in [0, 1]."""
    values, inverse = torch.unique(scores, sorted=True, return_inverse=True)
    return inverse.double() / max(values.numel() - 1, 1)


def ood_metrics(score_id: Tensor, score_ood: Tensor) -> dict[str, float]:
    r"""OOD detection metrics for ID scores ``(N_id,)`` and OOD scores ``(N_ood,)``.

    A higher score means "more in-distribution". Keys (see :data:`OOD_KEYS`), each a fraction:

    - ``auroc``: area under the ROC curve, :math:`P(s_{id} > s_{ood}) + \tfrac12 P(s_{id} = s_{ood})`
      (symmetric in which class is positive);
    - ``aupr_in``: average precision :math:`\sum_n (R_n - R_{n-1}) P_n` with ID as the positive
      class and the score as detector output (sklearn's ``average_precision_score``; OpenOOD uses
      trapezoidal AUPR instead, which differs slightly);
    - ``aupr_out``: the same with OOD as the positive class and ``-score`` as detector output;
    - ``fpr95``: OpenOOD v1.5's convention, :data:`FPR95_CONVENTION`: OOD positive, the first
      ROC point with TPR >= 0.95, reporting the fraction of ID samples scored at or below
      the threshold (Hendrycks & Gimpel 2017 define it with ID positive, which differs).

    Thresholds are taken only between distinct score values, so tied scores are never split.
    References: Yang et al., "OpenOOD v1.5", 2023 (``openood/evaluators/metrics.py``).
    """
    from torch_uncertainty.metrics.classification.fpr import _fprx_compute
    from torchmetrics.functional.classification import binary_auroc, binary_average_precision

    score_id = _check_scores("score_id", score_id)
    score_ood = _check_scores("score_ood", score_ood)
    ranks = dense_ranks(torch.cat([score_id, score_ood]))
    is_id = torch.cat(
        [
            torch.ones(score_id.numel(), dtype=torch.long),
            torch.zeros(score_ood.numel(), dtype=torch.long),
        ]
    )
    is_ood = 1 - is_id
    return {
        "auroc": float(binary_auroc(ranks, is_id)),
        "aupr_in": float(binary_average_precision(ranks, is_id)),
        "aupr_out": float(binary_average_precision(1.0 - ranks, is_ood)),
        "fpr95": float(_fprx_compute(1.0 - ranks, is_ood, recall_level=0.95, pos_label=1)),
    }
