"""Percentile bootstrap confidence intervals from saved test predictions (Efron & Tibshirani 1993).

Each of ``n_boot`` resamples draws ``N`` test samples with replacement; the interval is the
``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the metric over the resamples (linear
interpolation, ``torch.quantile``). Resample indices come from a ``torch.Generator`` seeded with
``seed`` and depend only on ``(seed, N, n_boot)``: two runs on the same test set get the *same*
resamples, so their per-resample differences (:func:`bootstrap_distribution`) give a paired test.

The named metrics in :data:`FAST_METRICS` (``acc``, ``ece``, ``adaece``, ``nll``, ``brier``, from
probabilities) are computed for all resamples at once from a resample-count matrix, with the same
definitions as :func:`calibench.metrics.calibration_metrics`. Any other metric is a callable
``metric_fn(x[idx], labels[idx]) -> float | dict[str, float]`` evaluated once per resample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from calibench.errors import UsageError
from calibench.metrics.calibration import (
    NLL_FLOOR,
    bin_edges,
    check_n_bins,
    check_probs_labels,
    top_label,
)

__all__ = ["FAST_METRICS", "bootstrap_ci", "bootstrap_distribution", "resample_indices"]

MetricFn = Callable[[Tensor, Tensor], "float | dict[str, float]"]
FAST_METRICS: tuple[str, ...] = ("acc", "ece", "adaece", "nll", "brier")
_CHUNK = 128


def resample_indices(n: int, n_boot: int, seed: int = 0) -> Tensor:
    """``(n_boot, n)`` int64 indices drawn uniformly with replacement, reproducible from ``seed``."""
    if n < 1:
        raise UsageError("bootstrap needs at least one sample")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 2:
        raise UsageError(f"n_boot must be an integer >= 2, got {n_boot!r}")
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(n, (n_boot, n), generator=gen)


def _counts(idx: Tensor, n: int) -> Tensor:
    counts = torch.zeros(idx.shape[0], n, dtype=torch.float64)
    return counts.scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float64))


def _equal_width_terms(conf: Tensor, correct: Tensor, n_bins: int) -> Tensor:
    """``(N, M + 1)``: sample ``j``'s residual ``correct - conf`` in the column of its bin."""
    bins = torch.bucketize(conf.contiguous(), bin_edges(n_bins), right=True) - 1
    onehot = torch.nn.functional.one_hot(bins, n_bins + 1).double()
    return onehot * (correct - conf)[:, None]


def _fast_equal_width(terms: Tensor, counts: Tensor) -> Tensor:
    """Equal-width L1 ECE of every resample; ``counts (B, N)`` says how often each sample is drawn."""
    return (counts @ terms).abs().sum(dim=1) / terms.shape[0]


def _fast_equal_mass(conf: Tensor, correct: Tensor, counts: Tensor, n_bins: int) -> Tensor:
    """Equal-mass L1 ECE of every resample, split like ``torch.tensor_split`` of the sorted resample.

    Sorted by confidence, resample ``b`` holds ``counts[b, j]`` copies of sample ``j``; bin ``m``
    covers copies ``[s_m, s_{m+1})``. A bin's sums are differences of the prefix sums at its
    bounds, interpolated inside the run of copies of one sample.
    """
    n = conf.numel()
    n_bins = min(n_bins, n)
    order = torch.sort(conf, stable=True).indices
    c, residual = counts[:, order], (correct - conf)[order]
    cum = c.cumsum(dim=1)
    prefix = (c * residual).cumsum(dim=1)
    sizes = torch.tensor(
        [len(t) for t in torch.arange(n).tensor_split(n_bins)], dtype=torch.float64
    )
    bounds = torch.cat([torch.zeros(1, dtype=torch.float64), sizes.cumsum(0)])
    bounds = bounds.expand(c.shape[0], -1).contiguous()
    pos = torch.searchsorted(cum, bounds).clamp_max(n - 1)
    at = prefix.gather(1, pos) - (cum.gather(1, pos) - bounds) * residual[pos]
    return (at[:, 1:] - at[:, :-1]).abs().sum(dim=1) / n


def _fast_metrics(
    names: Sequence[str], probs: Tensor, labels: Tensor, idx: Tensor, n_bins: int
) -> dict[str, Tensor]:
    """Each named metric on every resample; one resample-count matrix per chunk serves them all."""
    conf, correct = top_label(probs, labels)
    n = conf.numel()
    # Per-sample terms whose count-weighted sum (divided by N) is the metric of a resample.
    linear: dict[str, Tensor] = {}
    if "acc" in names:
        linear["acc"] = correct
    if "nll" in names:
        linear["nll"] = -probs.gather(1, labels[:, None]).squeeze(1).clamp_min(NLL_FLOOR).log()
    if "brier" in names:
        onehot = torch.nn.functional.one_hot(labels, probs.shape[1]).double()
        linear["brier"] = (probs - onehot).square().sum(dim=1)
    terms = _equal_width_terms(conf, correct, n_bins) if "ece" in names else None
    values: dict[str, list[Tensor]] = {m: [] for m in names}
    for chunk in idx.split(_CHUNK):
        counts = _counts(chunk, n)
        for m, per_sample in linear.items():
            values[m].append(counts @ per_sample / n)
        if terms is not None:
            values["ece"].append(_fast_equal_width(terms, counts))
        if "adaece" in names:
            values["adaece"].append(_fast_equal_mass(conf, correct, counts, n_bins))
    return {m: torch.cat(values[m]) for m in names}


def bootstrap_distribution(
    logits_or_probs: Tensor,
    labels: Tensor,
    metric_fn: str | Sequence[str] | MetricFn,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    n_bins: int = 15,
) -> dict[str, Tensor]:
    """The metric on each of ``n_boot`` resamples: ``{name: (n_boot,) float64}``.

    ``metric_fn`` is a name or names from :data:`FAST_METRICS` (then ``logits_or_probs`` must be
    probabilities ``(N, K)``), or a callable on ``(x[idx], labels[idx])`` returning a float
    (reported as ``"value"``) or a dict of floats.
    """
    if not isinstance(logits_or_probs, Tensor) or not isinstance(labels, Tensor):
        raise UsageError("bootstrap inputs must be torch tensors")
    n = labels.shape[0] if labels.dim() == 1 else -1
    if n < 1 or logits_or_probs.shape[0] != n:
        raise UsageError(
            f"bootstrap needs labels (N,) with N > 0 and predictions with N rows, got "
            f"{tuple(labels.shape)} and {tuple(logits_or_probs.shape)}"
        )
    idx = resample_indices(n, n_boot, seed)
    if callable(metric_fn):
        rows = [metric_fn(logits_or_probs[i], labels[i]) for i in idx]
        if isinstance(rows[0], dict):
            return {
                k: torch.tensor([float(r[k]) for r in rows], dtype=torch.float64) for k in rows[0]
            }
        return {"value": torch.tensor([float(r) for r in rows], dtype=torch.float64)}
    names = [metric_fn] if isinstance(metric_fn, str) else list(metric_fn)
    unknown = [m for m in names if m not in FAST_METRICS]
    if unknown:
        raise UsageError(
            f"no vectorised bootstrap for {', '.join(unknown)}; use one of "
            f"{', '.join(FAST_METRICS)} or pass a callable metric_fn(x, labels)"
        )
    check_n_bins(n_bins)
    probs, labels = check_probs_labels(logits_or_probs, labels)
    return _fast_metrics(names, probs, labels, idx, n_bins)


def bootstrap_ci(
    logits_or_probs: Tensor,
    labels: Tensor,
    metric_fn: str | Sequence[str] | MetricFn,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    *,
    n_bins: int = 15,
) -> dict[str, dict[str, float]]:
    """Percentile bootstrap intervals: ``{name: {"low", "high", "std", "level", "n_boot"}}``.

    ``metric_fn`` as in :func:`bootstrap_distribution`. ``low``/``high`` are the
    ``(1 -+ level) / 2`` quantiles of the resampled metric, ``std`` its standard deviation.
    The point estimate is not included: it is the metric on the full data, which the caller has.
    """
    if not 0.0 < float(level) < 1.0:
        raise UsageError(f"level must lie in (0, 1), got {level!r}")
    dist = bootstrap_distribution(
        logits_or_probs, labels, metric_fn, n_boot=n_boot, seed=seed, n_bins=n_bins
    )
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    out = {}
    for name, values in dist.items():
        low, high = torch.quantile(values, q).tolist()
        out[name] = {
            "low": low,
            "high": high,
            "std": float(values.std()),
            "level": float(level),
            "n_boot": int(n_boot),
        }
    return out
