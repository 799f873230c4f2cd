"""Calibration metrics of a predictive distribution: accuracy, binned ECEs, smooth ECE, NLL, Brier.

Every metric is computed in float64 and returned as a fraction (not a percentage), either from
predictive logits ``s (N, K)`` (:func:`logit_metrics`, what the evaluator and the leaderboard use:
the distribution is ``softmax(s)`` and the NLL is exact, ``log_softmax``) or from probabilities
``(N, K)`` (:func:`calibration_metrics`); labels are int64 ``(N,)``. The binned errors come from torchmetrics /
torch-uncertainty; calibench only fixes their bin edges:

- torchmetrics bins with ``bucketize(c, edges, right=True) - 1`` on ``linspace(0, 1, M + 1)``, so
  a confidence of exactly 1.0 falls into an extra, (M+1)-th bin (torchmetrics issue #3510) and
  float32 edges are computed in float32. Here the edges are ``k / M`` in float64 and the last
  edge is nudged just above 1.0, so bin ``k`` is ``[k/M, (k+1)/M)`` and the last bin
  ``[(M-1)/M, 1]`` is closed. The extra bin stays empty and contributes nothing.
- Ties at an equal-mass bin boundary (``adaece``) are split by the order of a stable sort on
  confidence, i.e. by sample order.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import Tensor

from calibench.errors import UsageError

__all__ = [
    "CALIBRATION_KEYS",
    "SUM_TOLERANCE",
    "adaptive_ece",
    "bin_edges",
    "binned_ece",
    "calibration_metrics",
    "check_logits_labels",
    "check_probs_labels",
    "classwise_ece",
    "logit_metrics",
    "reliability_bins",
    "smooth_ece",
    "top_label",
]

CALIBRATION_KEYS: tuple[str, ...] = ("acc", "ece", "adaece", "cwece", "smece", "nll", "brier")
SUM_TOLERANCE = 1e-3


def check_n_bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise UsageError(f"n_bins must be a positive integer, got {n_bins!r}")
    return n_bins


def _check_rows_labels(x: Tensor, labels: Tensor, what: str) -> tuple[Tensor, Tensor]:
    """The checks ``probs`` and predictive logits share: ``x (N, K)`` finite floating point with
    ``N >= 1``, ``K >= 2``; ``labels (N,)`` integers in ``[0, K)``. Returns float64 / int64 on
    the CPU."""
    if not isinstance(x, Tensor) or not isinstance(labels, Tensor):
        raise UsageError(f"{what} and labels must be torch tensors")
    if x.dim() != 2 or x.shape[1] < 2:
        raise UsageError(f"{what} must have shape (N, K) with K >= 2, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise UsageError(f"{what} must be floating point, got {x.dtype}")
    n, k = x.shape
    if n == 0:
        raise UsageError(f"{what} is empty: metrics need at least one sample")
    if labels.shape != (n,):
        raise UsageError(f"labels must have shape (N,) = ({n},), got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise UsageError(f"labels must be integer class indices, got {labels.dtype}")
    x = x.detach().to("cpu", torch.float64)
    labels = labels.detach().to("cpu", torch.int64)
    if not bool(torch.isfinite(x).all()):
        raise UsageError(f"{what} contain NaN or inf; the model has diverged or the input is bad")
    lmin, lmax = int(labels.min()), int(labels.max())
    if lmin < 0 or lmax >= k:
        raise UsageError(f"labels must lie in [0, {k}) for K={k} classes, got [{lmin}, {lmax}]")
    return x, labels


def check_probs_labels(probs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Validate ``probs (N, K)`` and ``labels (N,)``; return them as float64 / int64 on the CPU.

    Raises :class:`UsageError` unless probs are finite, in ``[0, 1]``, rows sum to 1 within
    :data:`SUM_TOLERANCE`, and labels are integers in ``[0, K)``.
    """
    probs, labels = _check_rows_labels(probs, labels, "probs")
    lo, hi = float(probs.min()), float(probs.max())
    if lo < 0.0 or hi > 1.0:
        raise UsageError(
            f"probs must lie in [0, 1], got values in [{lo:g}, {hi:g}]; pass probabilities, "
            "not logits (or use logit_metrics on predictive logits)"
        )
    worst = float((probs.sum(dim=1) - 1.0).abs().max())
    if worst > SUM_TOLERANCE:
        raise UsageError(
            f"each row of probs must sum to 1 (tolerance {SUM_TOLERANCE}), worst row is off by "
            f"{worst:.3g}; pass probabilities, not logits"
        )
    return probs, labels


def check_logits_labels(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Validate predictive logits ``(N, K)`` and ``labels (N,)``; return float64 / int64 on the CPU.

    Raises :class:`UsageError` unless the logits are finite floating point with ``K >= 2`` and
    ``N >= 1``, and labels are integers in ``[0, K)``.
    """
    return _check_rows_labels(logits, labels, "logits")


def top_label(probs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Top-label confidence ``max_k p_k`` and correctness ``1[argmax_k p_k == y]`` (float64).

    On a tie for the maximum, the first maximal class is the prediction.
    """
    conf, pred = probs.max(dim=1)
    return conf, (pred == labels).to(conf.dtype)


def bin_edges(n_bins: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Equal-width edges ``k / M`` for ``k = 0..M``; the last edge is nudged just above 1.0.

    With torchmetrics' ``bucketize(..., right=True) - 1`` this puts ``c`` in bin
    ``[k/M, (k+1)/M)`` and a confidence of exactly 1.0 in the last bin.
    """
    edges = torch.arange(n_bins + 1, dtype=dtype) / n_bins
    edges[-1] = torch.nextafter(torch.tensor(1.0, dtype=dtype), torch.tensor(2.0, dtype=dtype))
    return edges


def reliability_bins(
    conf: Tensor, correct: Tensor, n_bins: int = 15
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-bin accuracy, mean confidence and fraction of samples, each ``(M,)``, equal-width bins.

    Empty bins have accuracy and confidence 0 and proportion 0.
    """
    from torchmetrics.functional.classification.calibration_error import _binning_bucketize

    acc_bin, conf_bin, prop_bin = _binning_bucketize(
        conf.double().contiguous(), correct.double().contiguous(), bin_edges(check_n_bins(n_bins))
    )
    return acc_bin[:n_bins], conf_bin[:n_bins], prop_bin[:n_bins]


def binned_ece(conf: Tensor, correct: Tensor, n_bins: int = 15) -> float:
    r"""Expected calibration error with ``M`` equal-width bins, L1 norm (Naeini et al., AAAI 2015).

    .. math:: \mathrm{ECE} = \sum_{m=1}^{M} \frac{|B_m|}{N}\,|\mathrm{acc}(B_m) - \mathrm{conf}(B_m)|

    Bins are ``[k/M, (k+1)/M)``, the last one closed (see :func:`bin_edges`). Computed by
    torchmetrics' ``_ce_compute`` with those edges, in float64. For binary one-vs-rest columns
    (classwise ECE), ``conf`` is the class probability and ``correct`` the indicator ``y == c``.
    """
    from torchmetrics.functional.classification.calibration_error import _ce_compute

    edges = bin_edges(check_n_bins(n_bins))
    conf, correct = conf.double().contiguous(), correct.double().contiguous()
    return float(_ce_compute(conf, correct, edges, norm="l1"))


def adaptive_ece(conf: Tensor, correct: Tensor, n_bins: int = 15) -> float:
    r"""Adaptive ECE with ``M`` equal-mass bins, L1 norm (Nixon et al., CVPR-W 2019).

    Samples sorted by confidence are split into ``M`` consecutive groups whose sizes differ by at
    most one (``torch.tensor_split``); then the ECE formula is applied to those groups. Computed by
    torch-uncertainty's ``_ace_compute`` in float64, on data pre-sorted by a stable sort.
    """
    from torch_uncertainty.metrics.classification.calibration.adaptive_calibration_error import (
        _ace_compute,
    )

    check_n_bins(n_bins)
    order = torch.sort(conf.double(), stable=True).indices
    # More bins than samples would leave empty bins, which torch-uncertainty turns into NaN;
    # N singleton bins give the same error.
    n_bins = min(n_bins, conf.numel())
    return float(_ace_compute(conf.double()[order], correct.double()[order], n_bins, norm="l1"))


def classwise_ece(probs: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    r"""Classwise ECE (Kull et al., NeurIPS 2019): the mean over classes of the one-vs-rest ECE.

    .. math:: \mathrm{cwECE} = \frac{1}{K}\sum_{c=1}^{K}\sum_{m=1}^{M}\frac{|B_{m,c}|}{N}
       \,\bigl|\overline{1[y=c]}_{B_{m,c}} - \overline{p_c}_{B_{m,c}}\bigr|

    with equal-width bins ``B_{m,c}`` on ``p_c``. Same computation as torch-uncertainty's
    ``ClasswiseCalibrationError(reduction="mean")`` but with the fixed edges of :func:`bin_edges`.
    """
    k = probs.shape[1]
    errors = [binned_ece(probs[:, c], (labels == c).double(), n_bins) for c in range(k)]
    return math.fsum(errors) / k


def smooth_ece(conf: Tensor, correct: Tensor) -> float:
    r"""Smooth ECE (Błasiok & Nakkiran, "Smooth ECE: Principled Reliability Diagrams via Kernel
    Smoothing", ICLR 2024), with the paper's defaults.

    .. math:: \mathrm{smECE}_\sigma = \int_0^1 \bigl|\hat r_\sigma(t)\bigr|\,\hat\delta_\sigma(t)\,dt,
       \qquad \hat r_\sigma(t) = \frac{\sum_i K_\sigma(t, f_i)(f_i - y_i)}{\sum_i K_\sigma(t, f_i)}

    where ``f_i`` is the top-label confidence, ``y_i`` the correctness, ``K_\sigma`` a Gaussian
    kernel reflected at 0 and 1, and ``\hat\delta_\sigma`` the kernel density of the ``f_i``. The
    bandwidth is the paper's default: the fixed point ``\sigma^* = \mathrm{smECE}_{\sigma^*}``,
    found by binary search (tolerance 1e-3). Computed by torch-uncertainty's
    ``SmoothCalibrationError(kernel_type="reflected", bandwidth="auto")`` (the reflected kernel is
    the one of the paper and of its reference package ``relplot``; torch-uncertainty's default is
    a logit-space kernel), fed the confidences as a binary problem so that no softmax is applied.

    The kernel smoothing is torch-uncertainty's, except that its convolution (a direct
    ``conv1d`` whose kernel spans the whole grid of ``~10 / sigma`` points, about 1 s per call
    on CPU for a well-calibrated model) is done by FFT in float64: same values up to float32
    rounding, in milliseconds.
    """
    metric = _smooth_ece_metric()
    conf32, correct32 = conf.float(), correct.float()
    return float(
        metric._compute_smooth_ece(conf32, correct32, metric._search_bandwidth(conf32, correct32))
    )


def _fft_reflected_convolve(values: Tensor, kernel: Tensor) -> Tensor:
    """torch-uncertainty's ``ReflectedGaussianKernel.convolve`` (reflect the grid at both ends,
    'valid' cross-correlation with the odd-length kernel, keep the central ``n`` points) by FFT."""
    n = values.numel()
    flipped = torch.flip(values, dims=[0])
    extended = torch.cat([flipped[:-1], values, flipped[1:]]).double()
    size = extended.numel() + n - 1
    spectrum = torch.fft.rfft(extended, size) * torch.fft.rfft(
        torch.flip(kernel.double(), [0]), size
    )
    full = torch.fft.irfft(spectrum, size)
    start = n - 1 + n // 2
    return full[start : start + n].to(values.dtype)


def _smooth_ece_metric() -> Any:
    return _fft_smooth_ece_class()(kernel_type="reflected", bandwidth="auto")


@functools.cache
def _fft_smooth_ece_class() -> type:
    from torch_uncertainty.metrics.classification.calibration.smooth_calibration_error import (
        SmoothCalibrationError,
    )
    from torch_uncertainty.metrics.classification.calibration.smooth_calibration_kernels import (
        ReflectedGaussianKernel,
    )

    class FFTReflectedGaussianKernel(ReflectedGaussianKernel):
        def convolve(self, values: Tensor, num_eval_points: int) -> Tensor:
            return _fft_reflected_convolve(values, self.kernel_ev(num_eval_points, values.device))

    class FFTSmoothCalibrationError(SmoothCalibrationError):
        """``SmoothCalibrationError(kernel_type="reflected")`` with the FFT convolution."""

        def _compute_smooth_ece(self, conf: Tensor, acc: Tensor, bandwidth: float) -> Tensor:
            t = torch.linspace(0, 1, max(int(10 / bandwidth), self.mesh_pts), device=conf.device)
            ys, dens = FFTReflectedGaussianKernel(bandwidth).smooth(conf, conf - acc, t)
            ys, dens = ys.float(), dens.float()
            rs = torch.where(dens > 1e-8, ys.abs(), torch.zeros_like(ys))
            return torch.sum(rs * dens) / (dens.sum() + 1e-8)

    return FFTSmoothCalibrationError


def calibration_metrics(probs: Tensor, labels: Tensor, n_bins: int = 15) -> dict[str, float]:
    r"""All calibration metrics of ``probs (N, K)`` against ``labels (N,)``, as fractions.

    Keys (see :data:`CALIBRATION_KEYS`):

    - ``acc``: top-1 accuracy (first maximal class on ties);
    - ``ece``: top-label ECE, ``n_bins`` equal-width bins, L1 (:func:`binned_ece`);
    - ``adaece``: top-label ECE, ``n_bins`` equal-mass bins, L1 (:func:`adaptive_ece`);
    - ``cwece``: classwise ECE, ``n_bins`` equal-width bins per class (:func:`classwise_ece`);
    - ``smece``: smooth ECE with the fixed-point bandwidth (:func:`smooth_ece`);
    - ``nll``: :math:`-\frac1N\sum_i \log p_{i,y_i}`, exact (no floor: ``inf`` when a true class
      has probability 0; from logits, :func:`logit_metrics` computes it without the round trip
      through probabilities);
    - ``brier``: :math:`\frac1N\sum_i\sum_k (p_{ik} - 1[y_i = k])^2` (multiclass Brier, Brier 1950),
      in ``[0, 2]``.

    Computed in float64. Raises :class:`UsageError` for malformed inputs (see
    :func:`check_probs_labels`) or a non-positive ``n_bins``.
    """
    check_n_bins(n_bins)
    probs, labels = check_probs_labels(probs, labels)
    p_true = probs.gather(1, labels[:, None]).squeeze(1)
    return _metrics(probs, labels, n_bins, float(-p_true.log().mean()))


def logit_metrics(logits: Tensor, labels: Tensor, n_bins: int = 15) -> dict[str, float]:
    r"""All calibration metrics of the predictive distribution ``softmax(logits)``, as fractions.

    ``logits (N, K)`` are **predictive** logits ``s`` (``loss.predictive_logits(z)``, whose softmax
    is the loss's predictive distribution; after temperature scaling ``s / T``). Same keys and
    definitions as :func:`calibration_metrics` on ``softmax(s)`` in float64, except that ``nll``
    is computed exactly from the logits, :math:`-\frac1N\sum_i \log\operatorname{softmax}(s_i)_{y_i}`
    (``torch.nn.functional.cross_entropy``, i.e. ``log_softmax``): finite for every finite ``s``,
    with no floor. Raises :class:`UsageError` for malformed inputs (see
    :func:`check_logits_labels`) or a non-positive ``n_bins``.
    """
    check_n_bins(n_bins)
    logits, labels = check_logits_labels(logits, labels)
    nll = float(torch.nn.functional.cross_entropy(logits, labels))
    return _metrics(torch.softmax(logits, dim=1), labels, n_bins, nll)


def _metrics(probs: Tensor, labels: Tensor, n_bins: int, nll: float) -> dict[str, float]:
    conf, correct = top_label(probs, labels)
    onehot = torch.nn.functional.one_hot(labels, probs.shape[1]).double()
    return {
        "acc": float(correct.mean()),
        "ece": binned_ece(conf, correct, n_bins),
        "adaece": adaptive_ece(conf, correct, n_bins),
        "cwece": classwise_ece(probs, labels, n_bins),
        "smece": smooth_ece(conf, correct),
        "nll": nll,
        "brier": float((probs - onehot).square().sum(dim=1).mean()),
    }
