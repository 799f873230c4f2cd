"""OOD detection metrics from per-sample scores where a higher score means "more in-distribution".

Every metric follows OpenOOD v1.5 (Zhang et al. 2023, ``openood/evaluators/metrics.py``,
``auc_and_fpr_recall``): the counts behind its ROC and precision-recall curves come from
torchmetrics' ``_binary_clf_curve`` (sklearn's algorithm), and the rates, areas (trapezoidal) and
FPR95 are taken from them in float64. torchmetrics treats inputs outside ``[0, 1]`` as logits and
applies a sigmoid, which in float32 saturates large scores (energy, max-logit) into ties. Scores are therefore replaced by their dense ranks scaled to
``[0, 1]`` in float64 first: every metric here depends only on the order of the scores, ties
included, so this changes nothing but the saturation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from calibench.errors import UsageError

__all__ = ["AUPR_CONVENTION", "FPR95_CONVENTION", "OOD_KEYS", "dense_ranks", "ood_metrics"]

OOD_KEYS: tuple[str, ...] = ("auroc", "aupr_in", "aupr_out", "fpr95")

FPR95_CONVENTION = (
    "OpenOOD v1.5: OOD is the positive class and -score the detector output; FPR95 is the "
    "fraction of ID samples flagged as OOD at the first threshold, over distinct score values "
    "(tied scores never split), whose TPR (fraction of OOD samples flagged) is >= 0.95"
)
"""How ``fpr95`` is defined; records store this string beside the metric."""

AUPR_CONVENTION = (
    "OpenOOD v1.5: trapezoidal area under the precision-recall curve (sklearn "
    "precision_recall_curve + auc), one point per distinct score value plus (recall 0, "
    "precision 1); aupr_in: ID positive, score as detector output; aupr_out: OOD positive, "
    "-score as detector output"
)
"""How ``aupr_in`` / ``aupr_out`` are defined; records store this string beside the metrics."""


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


def _counts(detector: Tensor, positive: Tensor) -> tuple[Tensor, Tensor]:
    """False and true positives (float64) when flagging ``detector >= v``, for each distinct value
    ``v`` in decreasing order: torchmetrics' ``_binary_clf_curve``, sklearn's algorithm.

    ``detector`` lies in ``[0, 1]`` (dense ranks), so torchmetrics applies no sigmoid; unit
    float64 weights make it count in float64 (its default counts in float32).
    """
    from torchmetrics.functional.classification.precision_recall_curve import _binary_clf_curve

    weights = torch.ones(detector.numel(), dtype=torch.float64)
    fps, tps, _ = _binary_clf_curve(detector, positive, sample_weights=weights)
    return fps.double(), tps.double()


def _roc(detector: Tensor, positive: Tensor) -> tuple[Tensor, Tensor]:
    """``(fpr, tpr)`` in float64 from (0, 0), one point per distinct value: sklearn's
    ``roc_curve`` with ``drop_intermediate=False``."""
    fps, tps = _counts(detector, positive)
    zero = torch.zeros(1, dtype=torch.float64)
    return torch.cat([zero, fps / fps[-1]]), torch.cat([zero, tps / tps[-1]])


def _aupr(detector: Tensor, positive: Tensor) -> float:
    """Trapezoidal area under the precision-recall curve, as sklearn's ``auc(recall, precision)``
    of ``precision_recall_curve``: recall decreasing from 1, ending at (recall 0, precision 1)."""
    fps, tps = _counts(detector, positive)
    one, zero = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    precision = torch.cat([(tps / (tps + fps)).flip(0), one])
    recall = torch.cat([(tps / tps[-1]).flip(0), zero])
    return float(-torch.trapezoid(precision, recall))


def ood_metrics(score_id: Tensor, score_ood: Tensor) -> dict[str, float]:
    r"""OOD detection metrics for ID scores ``(N_id,)`` and OOD scores ``(N_ood,)``.

    A higher score means "more in-distribution". Keys (see :data:`OOD_KEYS`), each a fraction,
    each as OpenOOD v1.5's ``auc_and_fpr_recall`` computes it:

    - ``auroc``: trapezoidal area under the ROC curve (OOD positive, ``-score`` as detector
      output), which is :math:`P(s_{id} > s_{ood}) + \tfrac12 P(s_{id} = s_{ood})` (symmetric
      in which class is positive);
    - ``aupr_in``: :data:`AUPR_CONVENTION` with ID as the positive class and the score as detector
      output: the trapezoidal area :math:`\sum_n \tfrac12 (R_n - R_{n+1})(P_n + P_{n+1})` under
      the precision-recall points :math:`(R_n, P_n)` taken at each distinct score value, with the
      end point :math:`(0, 1)` (sklearn's ``auc(recall, precision)`` of
      ``precision_recall_curve``; this is not average precision, the step-wise sum);
    - ``aupr_out``: the same with OOD as the positive class and ``-score`` as detector output;
    - ``fpr95``: :data:`FPR95_CONVENTION`: OOD positive, the FPR of the first ROC point with
      TPR >= 0.95, i.e. the fraction of ID samples scored at or below that threshold (OpenOOD's
      ``fpr_list[np.argmax(tpr_list >= 0.95)]``; Hendrycks & Gimpel 2017 define it with ID
      positive, which differs).

    Thresholds are taken only between distinct score values, so tied scores are never split.
    References: Yang et al., "OpenOOD: Benchmarking Generalized OOD Detection", NeurIPS 2022 and
    Zhang et al., "OpenOOD v1.5", 2023 (``openood/evaluators/metrics.py``).
    """
    score_id = _check_scores("score_id", score_id)
    score_ood = _check_scores("score_ood", score_ood)
    ranks = dense_ranks(torch.cat([score_id, score_ood]))
    is_ood = torch.cat(
        [
            torch.zeros(score_id.numel(), dtype=torch.long),
            torch.ones(score_ood.numel(), dtype=torch.long),
        ]
    )
    fpr, tpr = _roc(1.0 - ranks, is_ood)
    first = int(torch.nonzero(tpr >= 0.95)[0, 0])  # tpr ends at 1, so there is one
    return {
        "auroc": float(torch.trapezoid(tpr, fpr)),
        "aupr_in": _aupr(ranks, 1 - is_ood),
        "aupr_out": _aupr(1.0 - ranks, is_ood),
        "fpr95": float(fpr[first]),
    }
