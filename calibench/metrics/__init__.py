"""Calibration and OOD metrics, OOD scores, temperature scaling and bootstrap intervals.

Pure functions on tensors; see each module for formulas, defaults and references.
"""

from __future__ import annotations

from calibench.metrics.bootstrap import FAST_METRICS, bootstrap_ci, bootstrap_distribution
from calibench.metrics.calibration import (
    CALIBRATION_KEYS,
    calibration_metrics,
    check_probs_labels,
    reliability_bins,
    top_label,
)
from calibench.metrics.ood import FPR95_CONVENTION, OOD_KEYS, ood_metrics
from calibench.metrics.scores import SCORES, ood_scores
from calibench.metrics.temperature import fit_temperature, scaled_probabilities

__all__ = [
    "CALIBRATION_KEYS",
    "FAST_METRICS",
    "FPR95_CONVENTION",
    "OOD_KEYS",
    "SCORES",
    "bootstrap_ci",
    "bootstrap_distribution",
    "calibration_metrics",
    "check_probs_labels",
    "fit_temperature",
    "ood_metrics",
    "ood_scores",
    "reliability_bins",
    "scaled_probabilities",
    "top_label",
]
