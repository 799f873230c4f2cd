"""Confidence intervals from bootstrap replicates: what each one covers and how.

Two constructions, both over test-set sampling with the trained model(s) fixed; ``level`` is
the two-sided coverage (0.95 by default), each side missing at most ``(1 - level) / 2``.

**Binned calibration errors** (ECE, AdaECE, ECE after TS). With residuals ``d = correct - conf``
and ``M`` bins, the per-bin *residual mass* is ``mu_b = E[d 1{bin b}]`` on the test distribution
and ``muhat_b = (1/N) sum_{i in b} d_i`` on the test set. The recorded error is the plug-in
``T = sum_b |muhat_b|``; the interval covers the *population value of the same binned error*,
``theta = sum_b |mu_b|`` (for equal-mass bins, bins at the population quantiles of ``conf``).

- ``lower = max(0, T - q)``: by the triangle inequality ``theta >= T - sum_b |muhat_b - mu_b|``;
  ``q`` is the ``(1 + level) / 2`` bootstrap quantile of ``sum_b |mu*_b - muhat_b|``.
- ``upper = T + z sd``: ``T >= sum_b sign(mu_b) muhat_b``, an unbiased linear estimate of
  ``theta``, so ``theta <= T + z sd`` with ``sd`` the bootstrap standard deviation of
  ``sum_b sign(muhat_b) mu*_b`` and ``z`` the ``(1 + level) / 2`` normal quantile.

``lower <= T <= upper`` always. The bounds are one-sided 97.5 % statements each, so the
interval is conservative where the noise of empty-ish bins dominates (coverage 96-100 % in the
simulations of ``tests/metrics/test_interval_coverage.py``: calibrated and over-confident
synthetic models, N = 1,000 and 10,000, a row of 3 seeds, 200 repetitions each).

Why not the percentile, basic or BCa bootstrap (``scipy.stats.bootstrap``): their bounds are
quantiles of the resampled plug-in error, which is biased upward by about ``sum_b |noise_b|``.
For a calibrated model ``theta = 0`` while every resampled ECE is ``> 0``, so no such interval
can hold 0 once a few bins are populated. Measured on a calibrated synthetic model (15 bins):
at N = 10,000 a point ECE of 0.53 % got the percentile interval [0.61, 1.62] % and the BCa
interval [0.36, 0.49] % (BCa excluded the point in 2 of 3 draws); at N = 1,000 the lower bounds
were 2.2-2.8 % (percentile) and 1.4-2.0 % (BCa). The percentile interval covered the population
value 0 in 0 of 200 repetitions at both sizes. A debiased estimator (Kumar et al. 2019,
Roelofs et al. 2022) would change the reported number; this interval keeps the recorded
plug-in error as its point and bounds the population error around it.

**Everything else** (accuracy, NLL, OOD AUROC / FPR95): the percentile interval, the
``(1 -+ level) / 2`` quantiles of the replicates (Efron & Tibshirani 1993, ch. 13).

**A row of seeds** covers the seed mean of the same population quantities (each trained model
fixed): the replicates of every seed are computed on the *same* resamples of the shared test
set and averaged resample by resample (:meth:`BinnedReplicates.seed_mean`,
:meth:`PercentileReplicates.seed_mean`); ``T`` becomes the seed mean of the ``T_s``. The spread
between seeds is a different quantity: the ``± std`` column, and the significance test.

**Over seeds** (the leaderboard's "under shift" columns, :data:`SEED_T_CONVENTION`): a value
computed on a fixed image set (the shift grid: the same corrupted images in every run) has no
test-set resampling here; its interval is the Student-t interval of the seed values,
``mean +- t_{(1 + level) / 2, n - 1} s / sqrt(n)`` (:func:`seed_t_interval`), which covers the
expected value over training seeds when the per-seed values are normal (exactly, by the t
distribution of the studentised mean; simulated in ``tests/metrics/test_seed_interval.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from calibench.errors import UsageError

__all__ = [
    "INTERVAL_CONVENTION",
    "SEED_T_CONVENTION",
    "SIGNIFICANCE_CONVENTION",
    "BinnedReplicates",
    "PercentileReplicates",
    "binned_error_interval",
    "percentile_interval",
    "seed_t_interval",
]

INTERVAL_CONVENTION = (
    "95% intervals over test-set sampling, the trained models fixed; a row covers the mean over "
    "its seeds. ECE, AdaECE, ECE after TS: the population value of the same binned error, "
    "[max(0, T - q), T + 1.96 sd] with T the plug-in error, q the 97.5% bootstrap quantile of "
    "sum_b |mu*_b - muhat_b| and sd the bootstrap sd of sum_b sign(muhat_b) mu*_b (mu_b the "
    "bin's mean residual correct - conf, triangle-inequality bounds; a percentile interval "
    "cannot hold a population error of 0). Accuracy, NLL, OOD AUROC and FPR95: percentile "
    "bootstrap. Seeds share the test-set resamples; OOD sets are resampled independently."
)
"""What every interval covers and how it is computed; records and captions carry it."""

SIGNIFICANCE_CONVENTION = (
    "adjacent ranks: Welch's t-test (scipy.stats.ttest_ind, equal_var=False) on the per-seed "
    "values of the sort metric, two-sided, 5%; seeds are the unit of replication; a row with "
    "fewer than 2 seeds is never marked different"
)
"""The test behind the leaderboard's mark of adjacent ranks that do not differ significantly."""

SEED_T_CONVENTION = (
    "under shift: each run's value is the mean over every (corruption, severity) cell of its "
    "shift grid (the record's metrics.shift.grid); a row's 95% interval is the Student-t "
    "interval over its seeds, mean +- t(0.975, n - 1) s / sqrt(n) (scipy.stats.t, s the sample "
    "std): it covers seed-to-seed variation of the grid mean, the images fixed (the same cells "
    "and image subset in every run), not the sampling of the images; blank for one seed"
)
"""What the interval of a shift column covers (leaderboard captions and JSON)."""


def _check_level(level: float) -> float:
    if not 0.0 < float(level) < 1.0:
        raise UsageError(f"level must lie in (0, 1), got {level!r}")
    return float(level)


def binned_error_interval(
    point: np.ndarray | float,
    deviation: np.ndarray,
    linear: np.ndarray,
    level: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """``(lower, upper)`` of a binned calibration error; see the module doc.

    ``point`` is ``T`` (shape ``(...)``), ``deviation`` the replicates of
    ``sum_b |mu*_b - muhat_b|`` and ``linear`` those of ``sum_b sign(muhat_b) mu*_b``, both
    ``(..., B)`` with the resamples on the last axis. Leading axes are independent problems.
    """
    upper_q = (1.0 + _check_level(level)) / 2.0
    point = np.asarray(point, dtype=np.float64)
    q = np.quantile(np.asarray(deviation, dtype=np.float64), upper_q, axis=-1)
    sd = np.std(np.asarray(linear, dtype=np.float64), axis=-1, ddof=1)
    return np.maximum(0.0, point - q), point + stats.norm.ppf(upper_q) * sd


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """The central ``level`` percentile interval of replicates ``(..., B)`` (last axis)."""
    alpha = (1.0 - _check_level(level)) / 2.0
    lo, hi = np.quantile(np.asarray(values, dtype=np.float64), [alpha, 1.0 - alpha], axis=-1)
    return lo, hi


def seed_t_interval(values: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """The Student-t interval of the mean of seed values ``(..., n)`` (last axis: seeds).

    ``mean +- t_{(1 + level) / 2, n - 1} s / sqrt(n)``, ``s`` the sample standard deviation
    (``ddof=1``); NaN bounds where ``n < 2``. Leading axes are independent rows.
    """
    upper_q = (1.0 + _check_level(level)) / 2.0
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[-1]
    if n < 2:
        nan = np.full(values.shape[:-1], np.nan)
        return nan, nan.copy()
    mean = values.mean(axis=-1)
    half = stats.t.ppf(upper_q, n - 1) * values.std(axis=-1, ddof=1) / np.sqrt(n)
    return mean - half, mean + half


def _mean(points: Sequence[float | np.ndarray]) -> float | np.ndarray:
    mean = np.mean(points, axis=0)
    return float(mean) if np.ndim(mean) == 0 else mean


def _same_resamples(arrays: Sequence[np.ndarray]) -> None:
    if len({a.shape for a in arrays}) != 1:
        raise UsageError("seed replicates must come from the same number of shared resamples")


@dataclass(frozen=True)
class BinnedReplicates:
    """A binned error's plug-in value ``T`` and its replicates ``(B,)`` (or ``(..., B)`` with a
    point per leading index, in simulations; :meth:`interval` needs one problem).

    ``deviation`` and ``linear`` build the interval; ``plugin`` is the plug-in error of each
    resample (biased upward: a diagnostic, never an interval).
    """

    point: float | np.ndarray
    deviation: np.ndarray
    linear: np.ndarray
    plugin: np.ndarray

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        lo, hi = binned_error_interval(self.point, self.deviation, self.linear, level)
        return float(lo), float(hi)

    @classmethod
    def seed_mean(cls, runs: Sequence[BinnedReplicates]) -> BinnedReplicates:
        """The row of seeds: means of ``T`` and, resample by resample, of the replicates."""
        if not runs:
            raise UsageError("no replicates to average")
        _same_resamples([r.deviation for r in runs])
        return cls(
            _mean([r.point for r in runs]),
            np.mean([r.deviation for r in runs], axis=0),
            np.mean([r.linear for r in runs], axis=0),
            np.mean([r.plugin for r in runs], axis=0),
        )


@dataclass(frozen=True)
class PercentileReplicates:
    """A metric's value on the full test set and on each resample ``(B,)``."""

    point: float | np.ndarray
    values: np.ndarray

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        lo, hi = percentile_interval(self.values, level)
        return float(lo), float(hi)

    @classmethod
    def seed_mean(cls, runs: Sequence[PercentileReplicates]) -> PercentileReplicates:
        """The row of seeds: the mean over seeds on the full set and on each shared resample."""
        if not runs:
            raise UsageError("no replicates to average")
        _same_resamples([r.values for r in runs])
        return cls(
            float(np.mean([r.point for r in runs])), np.mean([r.values for r in runs], axis=0)
        )
