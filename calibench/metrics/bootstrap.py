"""Bootstrap replicates of test-set metrics, vectorised over resamples (Efron & Tibshirani 1993).

Each of ``n_boot`` resamples draws ``N`` test samples with replacement. Resample indices come
from a ``torch.Generator`` seeded with ``seed`` and depend only on ``(seed, N, n_boot)``: every
run on the same test set gets the *same* resamples, so a row of seeds can be averaged resample
by resample. An OOD set is resampled independently of the test set, with its own indices
(:func:`stream_seed`). A chunk of resamples becomes one count matrix ``(B, N)`` (how often each
sample is drawn); every metric is then a few matrix operations on it:

- means of per-sample terms (accuracy, NLL, Brier): ``counts @ terms / N``;
- binned calibration errors: the per-bin residual masses ``mu*_b`` of each resample
  (:func:`bin_masses`; equal-mass bins are recomputed on each resample, compared bin index by
  bin index), from which :mod:`calibench.metrics.intervals` builds the interval;
- OOD AUROC and FPR95: weighted counts per distinct score after one sort
  (:func:`ood_replicates`).

What each interval covers and how it is built is :data:`INTERVAL_CONVENTION` (details and the
reason binned errors do not use a percentile / BCa interval: :mod:`calibench.metrics.intervals`).
:func:`bootstrap_ci` applies it to probabilities; the leaderboard applies it to saved
predictive logits (:mod:`calibench.leaderboard.significance`).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from calibench.errors import UsageError
from calibench.metrics.calibration import (
    bin_edges,
    check_n_bins,
    check_probs_labels,
    top_label,
)
from calibench.metrics.intervals import (
    INTERVAL_CONVENTION,
    SIGNIFICANCE_CONVENTION,
    BinnedReplicates,
    PercentileReplicates,
    binned_error_interval,
    percentile_interval,
)

__all__ = [
    "BINNED_METRICS",
    "FAST_METRICS",
    "INTERVAL_CONVENTION",
    "SIGNIFICANCE_CONVENTION",
    "bin_masses",
    "bootstrap_ci",
    "bootstrap_distribution",
    "count_chunks",
    "ood_replicates",
    "replicates",
    "resample_indices",
    "stream_seed",
]

MetricFn = Callable[[Tensor, Tensor], "float | dict[str, float]"]
FAST_METRICS: tuple[str, ...] = ("acc", "ece", "adaece", "nll", "brier")
BINNED_METRICS: tuple[str, ...] = ("ece", "adaece")
"""Metrics of :data:`FAST_METRICS` that are binned errors (their interval is not a percentile)."""

CHUNK_ELEMENTS = 2**21
"""Entries per count matrix (16 MB in float64): ``CHUNK_ELEMENTS // N`` resamples at a time."""


def resample_indices(n: int, n_boot: int, seed: int = 0) -> Tensor:
    """``(n_boot, n)`` int64 indices drawn uniformly with replacement, reproducible from ``seed``."""
    if n < 1:
        raise UsageError("bootstrap needs at least one sample")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 2:
        raise UsageError(f"n_boot must be an integer >= 2, got {n_boot!r}")
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(n, (n_boot, n), generator=gen)


def stream_seed(seed: int, name: str) -> int:
    """A seed for a named, independent resampling stream (an OOD set): ``seed`` mixed with CRC32."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode("utf-8"))) % 2**63


def _count_dtype(n: int) -> torch.dtype:
    # Counts and their running sums are integers <= n: exact in float32 below 2**24, which
    # halves the memory traffic of the gathers and sums over them.
    return torch.float32 if n < 2**24 else torch.float64


def _counts(idx: Tensor, n: int) -> Tensor:
    dtype = _count_dtype(n)
    counts = torch.zeros(idx.shape[0], n, dtype=dtype)
    return counts.scatter_add_(1, idx, torch.ones_like(idx, dtype=dtype))


def count_chunks(idx: Tensor, n: int, chunk: int | None = None) -> Iterator[Tensor]:
    """The count matrices ``(<= chunk, n)`` of consecutive chunks of resamples ``idx (B, n)``
    (default chunk: ``CHUNK_ELEMENTS // n`` resamples, at least 16)."""
    for part in idx.split(chunk or max(16, CHUNK_ELEMENTS // n)):
        yield _counts(part, n)


def _equal_width_masses(
    conf: Tensor, residual: Tensor, counts: Tensor | None, n_bins: int
) -> Tensor:
    n = conf.shape[-1]
    bins = torch.bucketize(conf.contiguous(), bin_edges(n_bins), right=True) - 1
    if counts is None:
        # Bin M is torchmetrics' extra bin for conf > 1 - never reached by probabilities.
        masses = torch.zeros(*bins.shape[:-1], n_bins + 1, dtype=torch.float64)
        return masses.scatter_add_(-1, bins, residual)[..., :n_bins] / n
    weights = counts.double()
    flat_bins, flat_res = bins.reshape(-1, n), residual.reshape(-1, n)
    out = torch.stack(
        [  # one (B, N) x (N, M) product per problem
            weights @ (torch.nn.functional.one_hot(b, n_bins + 1)[:, :n_bins] * r[:, None])
            for b, r in zip(flat_bins, flat_res, strict=True)
        ]
    )
    return out.reshape(*bins.shape[:-1], counts.shape[0], n_bins) / n


def _equal_mass_masses(
    conf: Tensor, residual: Tensor, counts: Tensor | None, n_bins: int
) -> Tensor:
    """One problem ``(N,)``. Sorted by confidence, resample ``b`` holds ``counts[b, j]`` copies of
    sample ``j``; bin ``m`` covers copies ``[s_m, s_{m+1})`` with the sizes of ``torch.tensor_split``.
    A bin's sum is a difference of prefix sums at its bounds, interpolated inside the run of copies
    of one sample."""
    n = conf.numel()
    n_bins = min(n_bins, n)
    order = torch.sort(conf, stable=True).indices
    residual = residual[order]
    sizes = torch.tensor(
        [len(t) for t in torch.arange(n).tensor_split(n_bins)], dtype=torch.float64
    )
    bounds = torch.cat([torch.zeros(1, dtype=torch.float64), sizes.cumsum(0)])
    if counts is None:
        prefix = torch.cat([torch.zeros(1, dtype=torch.float64), residual.cumsum(0)])
        at = prefix[bounds.long()]
        return (at[1:] - at[:-1]) / n
    c = counts.index_select(1, order)
    cum = c.cumsum(dim=1)
    prefix = (c.double() * residual).cumsum(dim=1)
    bounds = bounds.to(c.dtype).expand(c.shape[0], -1).contiguous()
    pos = torch.searchsorted(cum, bounds).clamp_max(n - 1)
    at = prefix.gather(1, pos) - (cum.gather(1, pos) - bounds) * residual[pos]
    return (at[:, 1:] - at[:, :-1]) / n


def bin_masses(
    conf: Tensor,
    correct: Tensor,
    n_bins: int = 15,
    *,
    adaptive: bool = False,
    counts: Tensor | None = None,
) -> Tensor:
    r"""Per-bin residual masses :math:`\hat\mu_b = \frac1N\sum_{i\in b} w_i(\mathrm{correct}_i - \mathrm{conf}_i)`.

    ``conf`` and ``correct`` are ``(..., N)`` float64 (leading axes: independent problems);
    ``counts`` ``(B, N)`` are resample counts ``w`` (:func:`count_chunks`) (``None``: the sample itself, ``w = 1``).
    Returns ``(..., B, M)``, or ``(..., M)`` without ``counts``. ``sum_b |mu_b|`` is the L1 ECE
    with ``M`` equal-width bins (:func:`~calibench.metrics.calibration.binned_ece`) or, with
    ``adaptive``, equal-mass bins recomputed on each resample
    (:func:`~calibench.metrics.calibration.adaptive_ece`; ``M = min(n_bins, N)``).
    """
    residual = correct - conf
    if not adaptive:
        return _equal_width_masses(conf, residual, counts, n_bins)
    if conf.dim() == 1:
        return _equal_mass_masses(conf, residual, counts, n_bins)
    flat_c, flat_r = conf.reshape(-1, conf.shape[-1]), residual.reshape(-1, conf.shape[-1])
    out = torch.stack(
        [_equal_mass_masses(c, r, counts, n_bins) for c, r in zip(flat_c, flat_r, strict=True)]
    )
    return out.reshape(*conf.shape[:-1], *out.shape[1:])


Resamples = Tensor | Sequence[Tensor]
"""Resample indices ``(B, N)``, or their count matrices already built (:func:`count_chunks`)."""


def _chunks(resamples: Resamples, n: int, chunk: int | None = None) -> Iterable[Tensor]:
    if isinstance(resamples, Tensor):
        if resamples.dim() != 2 or resamples.shape[1] != n:
            raise UsageError(f"resample indices must be (B, {n}), got {tuple(resamples.shape)}")
        return count_chunks(resamples, n, chunk)
    return resamples


def replicates(
    resamples: Resamples,
    *,
    binned: Mapping[str, tuple[Tensor, Tensor, int, bool]] | None = None,
    means: Mapping[str, Tensor] | None = None,
) -> dict[str, BinnedReplicates | PercentileReplicates]:
    """Point values and replicates on the resamples of one test set, in one pass over them.

    ``resamples``: indices ``(B, N)`` (:func:`resample_indices`) or their count matrices
    (:func:`count_chunks`, built once when many data sets share the resamples). ``binned``:
    ``{name: (conf, correct, n_bins, adaptive)}``, each a binned error
    (:class:`~calibench.metrics.intervals.BinnedReplicates`); ``means``: ``{name: terms}``, each
    the mean of per-sample ``terms`` (:class:`~calibench.metrics.intervals.PercentileReplicates`).
    Arrays are ``(..., N)``; leading axes give leading axes of the results (for simulations).
    """
    binned, means = dict(binned or {}), dict(means or {})
    arrays = [v[0] for v in binned.values()] + list(means.values())
    if not arrays:
        return {}
    n = arrays[0].shape[-1]
    hat = {k: bin_masses(c, y, m, adaptive=a) for k, (c, y, m, a) in binned.items()}
    dev: dict[str, list[Tensor]] = {k: [] for k in binned}
    lin: dict[str, list[Tensor]] = {k: [] for k in binned}
    plug: dict[str, list[Tensor]] = {k: [] for k in binned}
    vals: dict[str, list[Tensor]] = {k: [] for k in means}
    for counts in _chunks(resamples, n):
        for k, (c, y, m, a) in binned.items():
            star = bin_masses(c, y, m, adaptive=a, counts=counts)
            muhat = hat[k].unsqueeze(-2)
            dev[k].append((star - muhat).abs().sum(dim=-1))
            lin[k].append((star * muhat.sign()).sum(dim=-1))
            plug[k].append(star.abs().sum(dim=-1))
        for k, terms in means.items():
            vals[k].append(_resample_means(counts, terms))
    out: dict[str, BinnedReplicates | PercentileReplicates] = {}
    for k in binned:
        out[k] = BinnedReplicates(
            _np(hat[k].abs().sum(dim=-1)),
            _np(torch.cat(dev[k], -1)),
            _np(torch.cat(lin[k], -1)),
            _np(torch.cat(plug[k], -1)),
        )
    for k, terms in means.items():
        out[k] = PercentileReplicates(_np(terms.mean(dim=-1)), _np(torch.cat(vals[k], -1)))
    return out


def _resample_means(counts: Tensor, terms: Tensor) -> Tensor:
    """``counts (B, N)`` x ``terms (..., N)`` -> ``(..., B)`` means; ``+inf`` terms stay ``+inf``
    (an exact NLL with a zero probability) where drawn, instead of ``0 * inf = nan`` where not."""
    n = terms.shape[-1]
    finite = torch.isfinite(terms)
    weights = counts.double()
    means = (weights @ torch.where(finite, terms, 0.0).unsqueeze(-1)).squeeze(-1) / n
    if bool(finite.all()):
        return means
    drawn = (weights @ (~finite).double().unsqueeze(-1)).squeeze(-1)
    return torch.where(drawn > 0, torch.inf, means)


def _np(x: Tensor) -> np.ndarray | float:
    arr = x.detach().cpu().numpy()
    return float(arr) if arr.ndim == 0 else arr


def ood_replicates(
    score_id: Tensor,
    score_ood: Tensor,
    resamples_id: Resamples,
    resamples_ood: Resamples,
    *,
    recall_level: float = 0.95,
) -> dict[str, np.ndarray]:
    r"""AUROC and FPR95 of ``(score_id, score_ood)`` on each resample: ``{"auroc", "fpr95"}`` ``(B,)``.

    Resample ``b`` draws ID samples by ``resamples_id`` and OOD samples by ``resamples_ood``
    (independent streams; indices or count matrices as in :func:`replicates`). Both metrics
    have the definitions of :func:`calibench.metrics.ood_metrics` (a higher score means
    in-distribution): AUROC :math:`P(s_{id} > s_{ood}) + \frac12 P(s_{id} = s_{ood})`; FPR95 the
    fraction of ID samples scored at or below the first distinct score value at which at
    least ``recall_level`` of the OOD samples are (OpenOOD v1.5). After one sort of the OOD
    scores, a resample's count of OOD samples below each ID score is a prefix sum of its
    sorted OOD counts.
    """
    score_id, score_ood = score_id.double().contiguous(), score_ood.double()
    n, m = score_id.numel(), score_ood.numel()
    sorted_ood, order = torch.sort(score_ood, stable=True)
    below = torch.searchsorted(sorted_ood, score_id, right=False)
    at_or_below = torch.searchsorted(sorted_ood, score_id, right=True)
    ties = bool((below != at_or_below).any())
    # The TPR is prefix / m when flagging the OOD samples up to a sorted position: the fewest
    # flagged OOD samples whose TPR (as ood_metrics divides) reaches the level.
    needed = max(0, math.ceil(recall_level * m) - 1)
    while needed / m < recall_level:
        needed += 1
    gather = torch.cat([order[:1], order])  # column 0 is zeroed: the prefix sums start at 0
    auroc, fpr = [], []
    chunk = max(16, CHUNK_ELEMENTS // max(n, m))
    pairs = zip(_chunks(resamples_id, n, chunk), _chunks(resamples_ood, m, chunk), strict=True)
    for c_id, c_ood in pairs:
        if c_id.shape[0] != c_ood.shape[0]:
            raise UsageError("ID and OOD count matrices must come in chunks of equal size")
        prefix = c_ood.index_select(1, gather)
        prefix[:, 0] = 0.0
        prefix = prefix.cumsum(dim=1)
        ood_below = prefix.index_select(1, below)
        if ties:
            ood_below = 0.5 * (ood_below + prefix.index_select(1, at_or_below))
        # Integer counts times integer (or half-integer) prefix sums: exact, summed in float64.
        auroc.append((c_id * ood_below).sum(dim=1, dtype=torch.float64) / (n * m))
        target = torch.full((c_id.shape[0], 1), float(needed), dtype=prefix.dtype)
        first = torch.searchsorted(prefix, target).squeeze(1)  # first position reaching it
        threshold = sorted_ood[first - 1]  # flag every score at or below this OOD score
        flagged = torch.where(score_id <= threshold[:, None], c_id, 0.0)
        fpr.append(flagged.sum(dim=1, dtype=torch.float64) / n)
    return {"auroc": torch.cat(auroc).numpy(), "fpr95": torch.cat(fpr).numpy()}


# -- probabilities in: the fast metrics of calibration_metrics ----------------------------------
def _fast_metrics(
    names: Sequence[str], probs: Tensor, labels: Tensor, idx: Tensor, n_bins: int
) -> dict[str, BinnedReplicates | PercentileReplicates]:
    conf, correct = top_label(probs, labels)
    linear: dict[str, Tensor] = {}
    if "acc" in names:
        linear["acc"] = correct
    if "nll" in names:
        linear["nll"] = -probs.gather(1, labels[:, None]).squeeze(1).log()
    if "brier" in names:
        onehot = torch.nn.functional.one_hot(labels, probs.shape[1]).double()
        linear["brier"] = (probs - onehot).square().sum(dim=1)
    binned = {m: (conf, correct, n_bins, m == "adaece") for m in BINNED_METRICS if m in names}
    return replicates(idx, binned=binned, means=linear)


def _check_inputs(
    logits_or_probs: Tensor, labels: Tensor, metric_fn: str | Sequence[str] | MetricFn
) -> list[str] | None:
    if not isinstance(logits_or_probs, Tensor) or not isinstance(labels, Tensor):
        raise UsageError("bootstrap inputs must be torch tensors")
    n = labels.shape[0] if labels.dim() == 1 else -1
    if n < 1 or logits_or_probs.shape[0] != n:
        raise UsageError(
            f"bootstrap needs labels (N,) with N > 0 and predictions with N rows, got "
            f"{tuple(labels.shape)} and {tuple(logits_or_probs.shape)}"
        )
    if callable(metric_fn):
        return None
    names = [metric_fn] if isinstance(metric_fn, str) else list(metric_fn)
    unknown = [m for m in names if m not in FAST_METRICS]
    if unknown:
        raise UsageError(
            f"no vectorised bootstrap for {', '.join(unknown)}; use one of "
            f"{', '.join(FAST_METRICS)} or pass a callable metric_fn(x, labels)"
        )
    return names


def _callable_distribution(
    x: Tensor, labels: Tensor, fn: MetricFn, idx: Tensor
) -> dict[str, Tensor]:
    rows = [fn(x[i], labels[i]) for i in idx]
    if isinstance(rows[0], dict):
        return {k: torch.tensor([float(r[k]) for r in rows], dtype=torch.float64) for k in rows[0]}
    return {"value": torch.tensor([float(r) for r in rows], dtype=torch.float64)}


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
    probabilities ``(N, K)``; the values equal :func:`~calibench.metrics.calibration_metrics` on
    each resample), or a callable on ``(x[idx], labels[idx])`` returning a float (reported as
    ``"value"``) or a dict of floats. The plug-in values of a binned error are biased upward:
    do not take their quantiles as an interval (see :func:`bootstrap_ci`).
    """
    names = _check_inputs(logits_or_probs, labels, metric_fn)
    idx = resample_indices(labels.shape[0], n_boot, seed)
    if names is None:
        return _callable_distribution(logits_or_probs, labels, metric_fn, idx)  # type: ignore[arg-type]
    check_n_bins(n_bins)
    probs, labels = check_probs_labels(logits_or_probs, labels)
    reps = _fast_metrics(names, probs, labels, idx, n_bins)
    return {
        m: torch.from_numpy(np.asarray(r.plugin if isinstance(r, BinnedReplicates) else r.values))
        for m, r in ((m, reps[m]) for m in names)
    }


def bootstrap_ci(
    logits_or_probs: Tensor,
    labels: Tensor,
    metric_fn: str | Sequence[str] | MetricFn,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    *,
    n_bins: int = 15,
) -> dict[str, dict[str, float | str]]:
    """Intervals by :data:`INTERVAL_CONVENTION`: ``{name: {"point", "low", "high", "method", ...}}``.

    ``metric_fn`` as in :func:`bootstrap_distribution`. ``ece`` and ``adaece`` get the interval
    for the population binned error (``method`` ``"binned"``); every other metric the percentile
    interval (``method`` ``"percentile"``). ``std`` is the standard deviation of the replicates
    (of the plug-in error for binned errors), ``point`` the value on the full data (``None`` for
    a callable).
    """
    if not 0.0 < float(level) < 1.0:
        raise UsageError(f"level must lie in (0, 1), got {level!r}")
    names = _check_inputs(logits_or_probs, labels, metric_fn)
    idx = resample_indices(labels.shape[0], n_boot, seed)
    out: dict[str, dict[str, float | str]] = {}
    common = {"level": float(level), "n_boot": int(n_boot)}
    if names is None:
        dist = _callable_distribution(logits_or_probs, labels, metric_fn, idx)  # type: ignore[arg-type]
        for name, values in dist.items():
            lo, hi = percentile_interval(values.numpy(), level)
            out[name] = {
                "point": None,  # type: ignore[dict-item]
                "low": float(lo),
                "high": float(hi),
                "std": float(values.std()),
                "method": "percentile",
                **common,
            }
        return out
    check_n_bins(n_bins)
    probs, labels = check_probs_labels(logits_or_probs, labels)
    for name, rep in _fast_metrics(names, probs, labels, idx, n_bins).items():
        if isinstance(rep, BinnedReplicates):
            lo, hi = binned_error_interval(rep.point, rep.deviation, rep.linear, level)
            method, values = "binned", rep.plugin
        else:
            lo, hi = percentile_interval(rep.values, level)
            method, values = "percentile", rep.values
        out[name] = {
            "point": float(rep.point),
            "low": float(lo),
            "high": float(hi),
            "std": float(np.std(values, ddof=1)),
            "method": method,
            **common,
        }
    return {m: out[m] for m in names}
