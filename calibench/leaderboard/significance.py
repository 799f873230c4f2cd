"""Bootstrap confidence intervals per leaderboard row and the adjacent-rank significance test.

**What is resampled.** The test set, with :func:`calibench.metrics.bootstrap_distribution`
(percentile bootstrap, Efron & Tibshirani 1993, ch. 13): its resample indices depend only on
``(seed, N, n_boot)``, so every run on the same test set sees the *same* resamples. For a row (a
group of seeds) the metric is computed per seed on each resample and averaged over the seeds;
the 2.5 / 97.5 percentiles of those ``n_boot`` means are the row's 95 % CI. It measures
test-set sampling noise; the seed-to-seed spread is the ``± std`` column.

**Adjacent ranks.** For two adjacent ranks ``A`` (better) and ``B`` of one section, the
difference of their seed-means is taken on each shared resample (a paired bootstrap); if its
95 % percentile interval contains 0 they are *not significantly different* and ``B`` is marked
``≈``. Rows whose predictions are missing, or saved on a different test set, get no CI and no
mark.

**Predictions.** Each run's saved float16 test logits go through the run's own loss
``probabilities()`` (built from the registry with the spec's parameters) in float64, exactly as
the evaluator does; ``ece_ts`` uses ``probabilities(logits / T)`` with the record's ``T``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BOOTSTRAP_METRICS",
    "RunDistribution",
    "group_means",
    "percentile_ci",
    "run_distribution",
    "significantly_different",
]

BOOTSTRAP_METRICS = ("acc", "ece", "adaece", "nll", "ece_ts")


@dataclass(frozen=True)
class RunDistribution:
    """One run's metrics on each bootstrap resample, and which test set they were drawn from."""

    labels_key: str
    metrics: dict[str, np.ndarray]


def run_distribution(
    logits: np.ndarray,
    labels: np.ndarray,
    *,
    loss: str,
    loss_params: Mapping[str, object],
    temperature: float | None,
    n_boot: int,
    seed: int = 0,
    n_bins: int = 15,
) -> RunDistribution:
    """``acc``, ``ece``, ``adaece``, ``nll`` (and ``ece_ts`` given ``T``) on ``n_boot`` resamples."""
    import torch

    from calibench.metrics import bootstrap_distribution, scaled_probabilities
    from calibench.registry import create_loss

    prob_fn = create_loss(loss, **dict(loss_params)).probabilities
    z = torch.from_numpy(np.asarray(logits, dtype=np.float64))
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    with torch.no_grad():
        probs = prob_fn(z).double()
        dist = bootstrap_distribution(
            probs, y, ["acc", "ece", "adaece", "nll"], n_boot=n_boot, seed=seed, n_bins=n_bins
        )
        if temperature is not None and temperature > 0:
            ts = scaled_probabilities(z, float(temperature), prob_fn)
            dist["ece_ts"] = bootstrap_distribution(
                ts, y, "ece", n_boot=n_boot, seed=seed, n_bins=n_bins
            )["ece"]
    key = hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int64).tobytes()).hexdigest()
    return RunDistribution(key, {k: v.numpy() for k, v in dist.items()})


def group_means(runs: Sequence[RunDistribution]) -> dict[str, np.ndarray]:
    """Per resample, the mean over a row's seeds of each metric every seed has."""
    if not runs:
        return {}
    names = [m for m in BOOTSTRAP_METRICS if all(m in r.metrics for r in runs)]
    return {m: np.mean([r.metrics[m] for r in runs], axis=0) for m in names}


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap ``samples``."""
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(samples, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def significantly_different(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> bool:
    """Paired test: does the ``level`` percentile interval of ``a - b`` exclude 0?"""
    lo, hi = percentile_ci(np.asarray(a) - np.asarray(b), level)
    return lo > 0.0 or hi < 0.0
