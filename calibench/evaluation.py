"""Turn a trained model into the numbers of a run record: calibration, post-TS and OOD metrics.

:func:`evaluate` runs the model once over the val and test splits and each OOD set (eval mode,
``torch.inference_mode``, the :class:`~calibench.data.pipeline.DeviceLoader` in eval mode) and
gathers its logits ``z`` in float32 on the CPU. Every number then comes from the loss's
**predictive logits** ``s = loss.predictive_logits(z)``
(:func:`calibench.losses.base.predictive_logits_of`, computed in float64 and rounded to float32,
exactly what ``test_predictions.npz`` stores), whose softmax is the loss's predictive
distribution: the calibration metrics (:func:`calibench.metrics.logit_metrics`), temperature
scaling ``softmax(s / T)`` (:func:`calibench.metrics.fit_temperature`) and the OOD scores
(:func:`calibench.metrics.ood_scores`), all in float64. So the leaderboard, which reads only the
saved files, recomputes the record's test metrics bit for bit.

With a shift suite (:mod:`calibench.data.shift`), :func:`evaluate_shift` adds the grid of
accuracy, ECE, AdaECE and NLL per (corruption, severity), before and after temperature scaling
with the clean val split's T (:data:`SHIFT_CONVENTION`); it is kept only in the record.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from calibench.errors import NonFiniteLogitsError, NonFinitePredictiveLogitsError, UsageError
from calibench.metrics import (
    AUPR_CONVENTION,
    FPR95_CONVENTION,
    SCORES,
    fit_temperature,
    logit_metrics,
    ood_metrics,
    scaled_probabilities,
)
from calibench.metrics import ood_scores as compute_ood_scores
from calibench.metrics.bootstrap import INTERVAL_CONVENTION, SIGNIFICANCE_CONVENTION
from calibench.metrics.calibration import (
    adaptive_ece,
    binned_ece,
    check_logits_labels,
    check_n_bins,
    top_label,
)

if TYPE_CHECKING:
    from calibench.data.shift import ShiftSuite

__all__ = [
    "CONVENTIONS",
    "SHIFT_CONVENTION",
    "SHIFT_KEYS",
    "Evaluation",
    "NonFiniteLogitsError",
    "NonFinitePredictiveLogitsError",
    "evaluate",
    "evaluate_shift",
    "predict_logits",
    "predictive_logits",
    "shift_cell_metrics",
]

#: Largest inference batch on CPU (see :func:`predict_logits`).
CPU_EVAL_BATCH = 128
#: Images of a shift suite sent to :func:`predict_logits` at once (cells concatenated): 150 MB
#: of uint8 on the device, so the full CIFAR-10-C grid (750,000 images) takes 15 calls.
SHIFT_CHUNK_IMAGES = 50_000
#: The metrics of each (corruption, severity) cell; ``<key>_ts`` after temperature scaling.
SHIFT_KEYS: tuple[str, ...] = ("acc", "ece", "adaece", "nll")

SHIFT_CONVENTION = (
    "distribution shift (Hendrycks & Dietterich 2019 corruptions x severities 1-5 of the test "
    "split; Ovadia et al. 2019's protocol): per (corruption, severity) cell, acc, ece, adaece "
    "and nll of the predictive logits s, as for the test split, and acc_ts, ece_ts, adaece_ts, "
    "nll_ts of s / T with T the temperature fitted on the clean val split (null without one); "
    "every run of a protocol sees the same images: the same class-stratified subset of the test "
    "split in every cell (max_images per cell, null = all) and, for a generated suite, the same "
    "generator seed (a fixed protocol-level value, not the run seed). source.kind 'official' = "
    "the published .npy files (with their hashes); 'generated' = made by calibench from the "
    "test split, NOT the official files, so not comparable with numbers on the official files. "
    "summary.by_severity: the mean over corruptions of each cell metric; summary.mean: the mean "
    "over every cell"
)
"""What the record's ``metrics.shift`` holds; added to the conventions of a run evaluated on a
shift suite."""

CONVENTIONS: dict[str, Any] = {
    "predictive_logits": "s = loss.predictive_logits(z) (calibench.losses.base."
    "predictive_logits_of; log(loss.probabilities(z)) for a loss that defines only "
    "probabilities), computed in float64 from the model's float32 logits z and rounded to "
    "float32 as saved in test_predictions.npz; softmax(s) is the predictive distribution, and "
    "every metric, the temperature and every OOD score is computed from s in float64",
    "probabilities": "softmax(s) in float64",
    "norm": "l1",
    "binning": "equal-width bins [k/M, (k+1)/M), last bin [(M-1)/M, 1] closed; adaece: M "
    "equal-mass bins of the confidence-sorted samples (stable sort); cwece: equal-width bins "
    "per class, mean over classes",
    "confidence": "top-label: max_k softmax(s)_k, prediction argmax_k s_k (first class on ties)",
    "smece": "Blasiok & Nakkiran 2024, reflected Gaussian kernel, fixed-point bandwidth",
    "nll": "exact: mean of -log_softmax(s)_y in float64 (torch cross_entropy), no floor",
    "ts": "Guo et al. 2017 on the predictive logits: T = argmin over [0.01, 100] of the exact "
    "NLL of softmax(s_val / T) (log_softmax, float64), convex in 1/T, found as the root of its "
    "derivative in 1/T (scipy brentq); test_ts = metrics of softmax(s_test / T); argmax "
    "unchanged",
    "ts_fit_split": "val",
    "ood_score_definitions": "from the predictive logits s in float64, higher = more "
    "in-distribution: msp = max_k softmax(s)_k, energy = logsumexp_k s_k, maxlogit = max_k s_k",
    "ood_scores_dtype": "float64",
    "fpr95": FPR95_CONVENTION,
    "aupr": AUPR_CONVENTION,
    "interval": INTERVAL_CONVENTION,
    "significance": SIGNIFICANCE_CONVENTION,
}
"""Every convention behind the numbers; ``Evaluation.conventions`` adds ``n_bins``,
``ood_scores`` (the score names) and ``ts_fit_split``."""


@dataclass
class Evaluation:
    """What :func:`evaluate` returns.

    - ``metrics``: plain JSON-able dict::

        {
          "val":     {acc, ece, adaece, cwece, smece, nll, brier},  # absent if val is empty
          "test":    {acc, ece, adaece, cwece, smece, nll, brier},
          "test_ts": {"temperature": T, acc, ece, adaece, cwece, smece, nll, brier},
                     # None if val is empty (no split to fit T on)
          "ood":     {ood_name: {score_name: {auroc, aupr_in, aupr_out, fpr95}}},
        }

      every value a Python float (fractions, not %); ``ood`` is ``{}`` without OOD sets.
    - ``test_predictive_logits``: float32 ``(N_test, K)`` CPU tensor, the test split's
      predictive logits ``s`` (not the raw logits), in test-split order; ``metrics["test"]`` is
      ``logit_metrics(test_predictive_logits, test_labels, n_bins)``.
    - ``test_labels``: int64 ``(N_test,)`` CPU tensor.
    - ``conventions``: JSON-able dict, :data:`CONVENTIONS` plus ``n_bins`` and ``ood_scores``
      (the score names) and ``ts_fit_split`` (``None`` when no temperature was fitted).
    - ``ood_scores``: ``{ood_name: {score_name: (N_ood,) float64 CPU tensor}}``, the per-image
      scores of each OOD set (the ID scores are ``ood_scores(test_predictive_logits)``).
    - ``plots``: ``{"reliability": path, "ood_<name>": path, ...}`` as strings; ``{}`` without
      ``plots_dir``.

    With a shift suite, ``metrics["shift"]`` is :func:`evaluate_shift`'s dict and
    ``conventions["shift"]`` is :data:`SHIFT_CONVENTION`.
    """

    metrics: dict[str, Any]
    test_predictive_logits: Tensor
    test_labels: Tensor
    conventions: dict[str, Any]
    ood_scores: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    plots: dict[str, str] = field(default_factory=dict)


def predict_logits(
    model: nn.Module,
    x: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    device: torch.device | str,
    batch_size: int = 1000,
) -> Tensor:
    """Logits ``(N, K)`` float32 on the CPU for uint8 NHWC images ``x``, model in eval mode.

    Normalisation and batching are the :class:`DeviceLoader`'s eval mode. The model's training
    flag is restored afterwards.
    """
    from calibench.data.datasets import Split
    from calibench.data.pipeline import DeviceLoader

    if torch.device(device).type == "cpu":
        # CPU inference is ~3x faster at small batches (activations stay in cache), and in eval
        # mode the batch size does not change the logits.
        batch_size = min(batch_size, CPU_EVAL_BATCH)
    labels = torch.zeros(x.shape[0], dtype=torch.int64)
    loader = DeviceLoader(Split(x, labels), batch_size, device, mean, std, train=False)
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode():
            for xb, _ in loader:
                out.append(model(xb).float())
    finally:
        model.train(was_training)
    if not out:
        raise UsageError("cannot evaluate on an empty set of images")
    return torch.cat(out).cpu()  # one device-to-host copy for the whole set


def predictive_logits(loss: nn.Module, logits: Tensor, name: str = "the logits") -> Tensor:
    """``loss``'s predictive logits of raw ``logits (N, K)``: computed in float64, returned float32.

    The float32 rounding is what ``test_predictions.npz`` stores, so every metric computed here
    from the result can be recomputed from the saved file exactly. Raises
    :class:`NonFinitePredictiveLogitsError` if they are not finite (``name`` says where).
    """
    from calibench.losses.base import predictive_logits_of

    with torch.no_grad():
        s = predictive_logits_of(loss, logits.detach().to("cpu", torch.float64))
    s = s.detach().to("cpu", torch.float32)
    if s.shape != logits.shape:
        raise UsageError(
            f"{type(loss).__name__}.predictive_logits returned shape {tuple(s.shape)} for logits "
            f"of shape {tuple(logits.shape)}"
        )
    if not bool(torch.isfinite(s).all()):
        raise NonFinitePredictiveLogitsError(
            f"the model's logits on {name} are finite but {type(loss).__name__}'s predictive "
            "logits are not (NaN, inf, or beyond float32); a loss whose probabilities can be "
            "exactly 0 must define predictive_logits"
        )
    return s


def _check_finite(name: str, logits: Tensor) -> None:
    if not bool(torch.isfinite(logits).all()):
        raise NonFiniteLogitsError(
            f"the model produced NaN or inf logits on {name}; the run diverged, record it as such"
        )


def evaluate(
    model: nn.Module,
    loss: nn.Module,
    dataset: Any,
    ood_sets: Iterable[Any] | Mapping[str, Any] = (),
    *,
    device: torch.device | str,
    n_bins: int = 15,
    batch_size: int = 1000,
    ood_scores: Sequence[str] = ("msp", "energy", "maxlogit"),
    plots_dir: str | Path | None = None,
    shift: ShiftSuite | None = None,
) -> Evaluation:
    """Evaluate ``model`` with ``loss``'s predictive logits; see :class:`Evaluation`.

    ``dataset`` is an :class:`~calibench.data.datasets.ImageDataset` (``.val``, ``.test``,
    ``.mean``, ``.std``, ``.name``); ``ood_sets`` an iterable of
    :class:`~calibench.data.ood.OODSet` (or a mapping name -> set). Temperature scaling divides
    the predictive logits and is fitted on val (:func:`calibench.metrics.fit_temperature`).
    With ``plots_dir``, writes ``reliability.png`` (test), ``reliability_ts.png`` (test after
    TS) and ``ood_<name>.png``. ``shift``: a :class:`~calibench.data.shift.ShiftSuite`
    evaluated cell by cell with the val temperature (:func:`evaluate_shift`). Raises
    :class:`NonFiniteLogitsError` if the model outputs NaN/inf.
    """
    score_names = list(ood_scores)
    unknown = [s for s in score_names if s not in SCORES]
    if unknown:
        raise UsageError(
            f"unknown OOD score(s) {', '.join(unknown)}; available: {', '.join(SCORES)}"
        )
    sets = list(ood_sets.values()) if isinstance(ood_sets, Mapping) else list(ood_sets)
    mean, std = dataset.mean, dataset.std

    def predictive_logits_on(name: str, x: Tensor) -> Tensor:
        logits = predict_logits(model, x, mean, std, device=device, batch_size=batch_size)
        _check_finite(name, logits)
        return predictive_logits(loss, logits, name)

    test_s = predictive_logits_on("the test split", dataset.test.x)
    test_labels = dataset.test.y.detach().cpu().to(torch.int64)
    metrics: dict[str, Any] = {}
    temperature = None
    if len(dataset.val.y) > 0:
        val_s = predictive_logits_on("the val split", dataset.val.x)
        val_labels = dataset.val.y.detach().cpu().to(torch.int64)
        metrics["val"] = logit_metrics(val_s, val_labels, n_bins)
        temperature = fit_temperature(val_s, val_labels)
    metrics["test"] = logit_metrics(test_s, test_labels, n_bins)
    if temperature is not None:
        metrics["test_ts"] = {
            "temperature": temperature,
            **logit_metrics(test_s.double() / temperature, test_labels, n_bins),
        }
    else:
        metrics["test_ts"] = None

    if shift is not None:
        metrics["shift"] = evaluate_shift(
            model,
            loss,
            shift,
            mean=mean,
            std=std,
            device=device,
            temperature=temperature,
            n_bins=n_bins,
            batch_size=batch_size,
        )

    id_scores = compute_ood_scores(test_s, score_names)
    metrics["ood"] = {}
    ood_raw: dict[str, dict[str, Tensor]] = {}
    for ood in sets:
        scores = compute_ood_scores(predictive_logits_on(f"OOD set {ood.name}", ood.x), score_names)
        ood_raw[ood.name] = scores
        metrics["ood"][ood.name] = {s: ood_metrics(id_scores[s], scores[s]) for s in score_names}

    plots: dict[str, str] = {}
    if plots_dir is not None:
        plots = _draw(
            Path(plots_dir),
            dataset.name,
            scaled_probabilities(test_s, 1.0),
            None if temperature is None else scaled_probabilities(test_s, temperature),
            test_labels,
            temperature,
            id_scores,
            ood_raw,
            metrics["ood"],
            n_bins,
        )
    conventions = {
        **CONVENTIONS,
        "n_bins": n_bins,
        "ood_scores": score_names,
        "ts_fit_split": "val" if temperature is not None else None,
        **({"shift": SHIFT_CONVENTION} if shift is not None else {}),
    }
    return Evaluation(metrics, test_s, test_labels, conventions, ood_raw, plots)


def shift_cell_metrics(logits: Tensor, labels: Tensor, n_bins: int = 15) -> dict[str, float]:
    """``acc``, ``ece``, ``adaece``, ``nll`` of predictive ``logits``: the values
    :func:`~calibench.metrics.logit_metrics` gives for these keys, by the same functions, without
    the metrics a shift cell does not record (cwECE, smECE, Brier)."""
    check_n_bins(n_bins)
    s, y = check_logits_labels(logits, labels)
    nll = float(torch.nn.functional.cross_entropy(s, y))
    conf, correct = top_label(torch.softmax(s, dim=1), y)
    return {
        "acc": float(correct.mean()),
        "ece": binned_ece(conf, correct, n_bins),
        "adaece": adaptive_ece(conf, correct, n_bins),
        "nll": nll,
    }


def _mean(values: list[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return math.fsum(values) / len(values)  # type: ignore[arg-type]


def _summary(grid: dict[str, dict[str, dict[str, float | None]]]) -> dict[str, Any]:
    cells = [cell for per in grid.values() for cell in per.values()]
    keys = list(cells[0]) if cells else []
    severities = sorted({s for per in grid.values() for s in per}, key=int)
    return {
        "by_severity": {
            s: {k: _mean([per[s][k] for per in grid.values() if s in per]) for k in keys}
            for s in severities
        },
        "mean": {k: _mean([cell[k] for cell in cells]) for k in keys},
    }


def evaluate_shift(
    model: nn.Module,
    loss: nn.Module,
    suite: ShiftSuite,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str,
    temperature: float | None,
    n_bins: int = 15,
    batch_size: int = 1000,
    chunk_images: int = SHIFT_CHUNK_IMAGES,
) -> dict[str, Any]:
    """The shift grid of ``suite``: per cell, :data:`SHIFT_KEYS` before and after TS.

    Cells are concatenated into chunks of at least ``chunk_images`` images (a cell is never
    split), each chunk goes through :func:`predict_logits` at once, and each cell's predictive
    logits ``s`` give :func:`shift_cell_metrics` of ``s`` and of ``s / temperature`` (the
    ``_ts`` keys; ``None`` when ``temperature`` is ``None``). Returns (JSON-able)::

        {"suite": name, "source": suite.source, "max_images": suite.max_images,
         "n_images": images per cell, "corruptions": [...], "severities": [...],
         "grid": {corruption: {"<severity>": {acc, ece, adaece, nll, acc_ts, ...}}},
         "summary": {"by_severity": {"<severity>": {mean over corruptions}},
                     "mean": {mean over every cell}}}
    """
    grid: dict[str, dict[str, dict[str, float | None]]] = {}
    pending: list[Any] = []
    sizes: set[int] = set()

    def flush() -> None:
        if not pending:
            return
        x = torch.cat([cell.x for cell in pending]) if len(pending) > 1 else pending[0].x
        name = f"shift suite {suite.name}"
        logits = predict_logits(model, x, mean, std, device=device, batch_size=batch_size)
        _check_finite(name, logits)
        s_all = predictive_logits(loss, logits, name)
        start = 0
        for cell in pending:
            n = int(cell.x.shape[0])
            s, y = s_all[start : start + n], cell.y.detach().cpu().to(torch.int64)
            start += n
            values: dict[str, float | None] = dict(shift_cell_metrics(s, y, n_bins))
            if temperature is not None:
                scaled = shift_cell_metrics(s.double() / temperature, y, n_bins)
            else:
                scaled = dict.fromkeys(SHIFT_KEYS)
            values.update({f"{k}_ts": scaled[k] for k in SHIFT_KEYS})
            grid.setdefault(cell.corruption, {})[str(cell.severity)] = values
        pending.clear()

    queued = 0
    for cell in suite.cells():
        if cell.x.shape[0] != cell.y.shape[0]:
            raise UsageError(
                f"shift suite {suite.name}: cell {cell.corruption} severity {cell.severity} has "
                f"{cell.x.shape[0]} images and {cell.y.shape[0]} labels"
            )
        sizes.add(int(cell.x.shape[0]))
        pending.append(cell)
        queued += int(cell.x.shape[0])
        if queued >= chunk_images:
            flush()
            queued = 0
    flush()
    if not grid:
        raise UsageError(f"shift suite {suite.name} has no cells")
    return {
        "suite": suite.name,
        "source": dict(suite.source),
        "max_images": suite.max_images,
        "n_images": sizes.pop() if len(sizes) == 1 else None,
        "corruptions": list(suite.corruptions),
        "severities": [int(s) for s in suite.severities],
        "grid": grid,
        "summary": _summary(grid),
    }


def _draw(
    plots_dir: Path,
    dataset_name: str,
    test_probs: Tensor,
    ts_probs: Tensor | None,
    labels: Tensor,
    temperature: float | None,
    id_scores: dict[str, Tensor],
    ood_raw: dict[str, dict[str, Tensor]],
    ood_metrics_: dict[str, Any],
    n_bins: int,
) -> dict[str, str]:
    from calibench.plots import ood_histogram, reliability_diagram

    plots = {
        "reliability": str(
            reliability_diagram(
                test_probs,
                labels,
                plots_dir / "reliability.png",
                n_bins=n_bins,
                title=f"{dataset_name} test",
            )
        )
    }
    if ts_probs is not None:
        plots["reliability_ts"] = str(
            reliability_diagram(
                ts_probs,
                labels,
                plots_dir / "reliability_ts.png",
                n_bins=n_bins,
                title=f"{dataset_name} test, after TS (T = {temperature:.3f})",
            )
        )
    for name, scores in ood_raw.items():
        plots[f"ood_{name}"] = str(
            ood_histogram(
                id_scores,
                scores,
                plots_dir / f"ood_{name}.png",
                ood_name=name,
                id_name=dataset_name,
                metrics=ood_metrics_[name],
            )
        )
    return plots
