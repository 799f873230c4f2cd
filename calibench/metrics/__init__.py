"""Calibration and OOD metrics, OOD scores, temperature scaling and bootstrap intervals.

Pure functions on tensors; see each module for formulas, defaults and references. Everything that
describes a model's predictive distribution takes **predictive logits** ``s``
(``loss.predictive_logits(z)``, see :func:`calibench.losses.base.predictive_logits_of`):
:func:`logit_metrics`, :func:`fit_temperature` (``softmax(s / T)``) and :func:`ood_scores`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from calibench.metrics.bootstrap import FAST_METRICS, bootstrap_ci, bootstrap_distribution
    from calibench.metrics.calibration import (
        CALIBRATION_KEYS,
        calibration_metrics,
        check_logits_labels,
        check_probs_labels,
        logit_metrics,
        reliability_bins,
        top_label,
    )
    from calibench.metrics.ood import AUPR_CONVENTION, FPR95_CONVENTION, OOD_KEYS, ood_metrics
    from calibench.metrics.scores import SCORES, ood_scores
    from calibench.metrics.temperature import (
        fit_temperature,
        scaled_probabilities,
        temperature_nll,
    )

__all__ = [
    "AUPR_CONVENTION",
    "CALIBRATION_KEYS",
    "FAST_METRICS",
    "FPR95_CONVENTION",
    "OOD_KEYS",
    "SCORES",
    "bootstrap_ci",
    "bootstrap_distribution",
    "calibration_metrics",
    "check_logits_labels",
    "check_probs_labels",
    "fit_temperature",
    "logit_metrics",
    "ood_metrics",
    "ood_scores",
    "reliability_bins",
    "scaled_probabilities",
    "temperature_nll",
    "top_label",
]

_ON_FIRST_USE = {
    **dict.fromkeys(("FAST_METRICS", "bootstrap_ci", "bootstrap_distribution"), "bootstrap"),
    **dict.fromkeys(
        (
            "CALIBRATION_KEYS",
            "calibration_metrics",
            "check_logits_labels",
            "check_probs_labels",
            "logit_metrics",
            "reliability_bins",
            "top_label",
        ),
        "calibration",
    ),
    **dict.fromkeys(("AUPR_CONVENTION", "FPR95_CONVENTION", "OOD_KEYS", "ood_metrics"), "ood"),
    **dict.fromkeys(("SCORES", "ood_scores"), "scores"),
    **dict.fromkeys(("fit_temperature", "scaled_probabilities", "temperature_nll"), "temperature"),
}
"""Where each name lives; imported on first use, so that importing the torch-free
:mod:`calibench.metrics.intervals` (the leaderboard, reading its caches) does not load torch."""


_SUBMODULES = frozenset(("bootstrap", "calibration", "intervals", "ood", "scores", "temperature"))


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:  # ``calibench.metrics.ood`` without importing it first
        return importlib.import_module(f"{__name__}.{name}")
    if name not in _ON_FIRST_USE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_ON_FIRST_USE[name]}"), name)
    globals()[name] = value
    return value
