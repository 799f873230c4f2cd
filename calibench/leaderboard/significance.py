"""Each run's values and bootstrap replicates from its saved files; row intervals; adjacent ranks.

**From files only.** A run's metric values and replicates come from ``test_predictions.npz``
(the test split's predictive logits ``s``, float32, and labels), ``ood_scores.npz`` (per-image
OOD scores) and two numbers of the record: the fitted temperature ``T`` and ``n_bins``. The
metrics are :func:`calibench.metrics.logit_metrics` of ``s`` and of ``s / T`` (``ece_ts``) and
:func:`calibench.metrics.ood_metrics` of :func:`calibench.metrics.ood_scores` of ``s`` against
the saved OOD scores, exactly as the evaluator computed them, so the values equal the record's.
No loss is imported or created: a run whose loss plugin is gone loses nothing.

**Intervals** (:data:`calibench.metrics.bootstrap.INTERVAL_CONVENTION`): the test set is
resampled with indices that depend only on ``(seed, N, n_boot)``, so every seed of a row sees
the same resamples; an OOD set is resampled independently with its own indices
(:func:`calibench.metrics.bootstrap.stream_seed`). A row's replicates are the seed means,
resample by resample; the interval covers the seed mean of the population values (binned
errors: the triangle-inequality interval of :mod:`calibench.metrics.intervals`; the rest:
percentile). It measures test-set sampling; the spread between seeds is the ``± std`` column.

**Adjacent ranks** (:data:`calibench.metrics.bootstrap.SIGNIFICANCE_CONVENTION`): seeds are the
unit of replication, so two adjacent rows are compared by Welch's t-test on the per-seed values
of the sort metric (each value carries its own test-set noise, so the seed-to-seed variance
includes it). Two-sided at 5 %; with fewer than 2 seeds on either side the rows are never
called different.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from calibench.metrics.intervals import (
    SIGNIFICANCE_CONVENTION,
    BinnedReplicates,
    PercentileReplicates,
)

__all__ = [
    "ALPHA",
    "BASE_KEYS",
    "SIGNIFICANCE_CONVENTION",
    "Comparison",
    "RunEvidence",
    "compare_adjacent",
    "row_intervals",
    "run_evidence",
]

BASE_KEYS = ("acc", "ece", "adaece", "nll", "ece_ts")
"""Column keys computed from ``test_predictions.npz`` (``ece_ts`` also needs ``T``)."""
ALPHA = 0.05
Replicates = BinnedReplicates | PercentileReplicates


@dataclass(frozen=True)
class RunEvidence:
    """One run's values (``points``: column key -> value) and replicates, from its saved files.

    ``streams`` names, per column key, the resampled data its replicates depend on (the test
    set's labels hash, and the OOD set and its size): seeds are averaged resample by resample
    only when they agree.
    """

    points: dict[str, float]
    replicates: dict[str, Replicates] = field(default_factory=dict)
    streams: dict[str, tuple[object, ...]] = field(default_factory=dict)


def _labels_key(labels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int64).tobytes()).hexdigest()


def run_evidence(
    logits: np.ndarray,
    labels: np.ndarray,
    *,
    temperature: float | None,
    n_bins: int,
    ood: Mapping[str, np.ndarray] | None = None,
    score: str = "msp",
    n_boot: int = 0,
    seed: int = 0,
) -> RunEvidence:
    """Values and replicates of ``BASE_KEYS`` and ``<ood>_auroc`` / ``<ood>_fpr95``.

    ``logits (N, K)`` are the saved predictive logits, ``labels (N,)``; ``ood`` maps an OOD set
    to its saved ``score`` array; ``temperature`` ``None`` (or not positive) leaves out
    ``ece_ts``. ``n_boot = 0``: values only.
    """
    # Here, not at the top: a leaderboard read from its caches (calibench.leaderboard.cache)
    # never computes, and starts without torch.
    import torch

    from calibench.metrics import logit_metrics, ood_metrics, ood_scores
    from calibench.metrics.bootstrap import (
        ood_replicates,
        replicates,
        resample_indices,
        stream_seed,
    )
    from calibench.metrics.calibration import top_label

    s32 = torch.from_numpy(np.asarray(logits, dtype=np.float32))
    s = s32.double()
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    test_key = _labels_key(labels)
    metrics = logit_metrics(s, y, n_bins)
    points = {k: metrics[k] for k in ("acc", "ece", "adaece", "nll")}
    scaled = None
    if temperature is not None and temperature > 0:
        scaled = s / float(temperature)
        points["ece_ts"] = logit_metrics(scaled, y, n_bins)["ece"]
    id_score = ood_scores(s32, [score])[score] if ood else None
    for name, values in (ood or {}).items():
        m = ood_metrics(id_score, torch.from_numpy(np.asarray(values, dtype=np.float64)))
        points[f"{name}_auroc"], points[f"{name}_fpr95"] = m["auroc"], m["fpr95"]
    if n_boot <= 0:
        return RunEvidence(points)

    idx = resample_indices(len(y), n_boot, seed)
    conf, correct = top_label(torch.softmax(s, dim=1), y)
    binned = {"ece": (conf, correct, n_bins, False), "adaece": (conf, correct, n_bins, True)}
    if scaled is not None:
        conf_ts, correct_ts = top_label(torch.softmax(scaled, dim=1), y)
        binned["ece_ts"] = (conf_ts, correct_ts, n_bins, False)
    nll_terms = -torch.log_softmax(s, dim=1).gather(1, y[:, None]).squeeze(1)
    reps: dict[str, Replicates] = dict(
        replicates(idx, binned=binned, means={"acc": correct, "nll": nll_terms})
    )
    # Points are logit_metrics' values; the replicates' own plug-in values equal them.
    reps = {k: _with_point(r, points[k]) for k, r in reps.items()}
    streams: dict[str, tuple[object, ...]] = {k: (test_key, n_boot, seed) for k in reps}
    for name, values in (ood or {}).items():
        score_ood = torch.from_numpy(np.asarray(values, dtype=np.float64))
        idx_ood = resample_indices(len(score_ood), n_boot, stream_seed(seed, name))
        dist = ood_replicates(id_score, score_ood, idx, idx_ood)
        for metric in ("auroc", "fpr95"):
            key = f"{name}_{metric}"
            reps[key] = PercentileReplicates(points[key], dist[metric])
            streams[key] = (test_key, name, len(score_ood), n_boot, seed)
    return RunEvidence(points, reps, streams)


def _with_point(rep: Replicates, point: float) -> Replicates:
    if isinstance(rep, BinnedReplicates):
        return BinnedReplicates(point, rep.deviation, rep.linear, rep.plugin)
    return PercentileReplicates(point, rep.values)


def row_intervals(
    runs: Sequence[RunEvidence], keys: Sequence[str], level: float = 0.95
) -> tuple[dict[str, tuple[float, float]], list[str]]:
    """The interval of each column in ``keys`` for a row of seeds, and why some are missing.

    A column gets an interval only if every seed has replicates for it on the same resampled
    data (:attr:`RunEvidence.streams`).
    """
    out: dict[str, tuple[float, float]] = {}
    problems: list[str] = []
    for key in keys:
        reps = [r.replicates.get(key) for r in runs]
        if not runs or any(r is None for r in reps):
            continue
        if len({r.streams.get(key) for r in runs}) != 1:
            problems.append(f"{key}: its seeds were evaluated on different test or OOD sets")
            continue
        kind = type(reps[0])
        if any(type(r) is not kind for r in reps):
            continue
        out[key] = kind.seed_mean(reps).interval(level)  # type: ignore[arg-type]
    return out, problems


@dataclass(frozen=True)
class Comparison:
    """Welch's t-test of two adjacent rows: ``different`` at level ``ALPHA``; ``p`` or ``None``."""

    different: bool
    p: float | None
    reason: str


def compare_adjacent(above: Sequence[float], below: Sequence[float]) -> Comparison:
    """Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``) on two rows' per-seed values.

    Rows with fewer than 2 finite seed values on either side are never called different. If
    both rows have zero spread, they differ exactly when their values do.
    """
    from scipy import stats

    a = np.asarray([v for v in above if math.isfinite(v)], dtype=np.float64)
    b = np.asarray([v for v in below if math.isfinite(v)], dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        return Comparison(False, None, "fewer than 2 seeds")
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        differ = bool(a[0] != b[0])
        return Comparison(differ, 0.0 if differ else 1.0, "no seed-to-seed spread")
    p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return Comparison(p < ALPHA, p, "Welch")
