"""Turn a trained model into the numbers of a run record: calibration, post-TS and OOD metrics.

:func:`evaluate` runs the model once over the val and test splits and each OOD set (eval mode,
``torch.inference_mode``, the :class:`~calibench.data.pipeline.DeviceLoader` in eval mode),
gathers logits in float32 on the CPU, and computes every metric from
``loss.probabilities(logits.double())`` in float64.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from calibench.errors import CalibenchError, UsageError
from calibench.metrics import (
    FPR95_CONVENTION,
    SCORES,
    calibration_metrics,
    fit_temperature,
    ood_metrics,
    scaled_probabilities,
)
from calibench.metrics import ood_scores as compute_ood_scores

__all__ = ["CONVENTIONS", "Evaluation", "NonFiniteLogitsError", "evaluate", "predict_logits"]

#: Largest inference batch on CPU (see :func:`predict_logits`).
CPU_EVAL_BATCH = 128

CONVENTIONS: dict[str, Any] = {
    "norm": "l1",
    "binning": "equal-width bins [k/M, (k+1)/M), last bin [(M-1)/M, 1] closed; adaece: M "
    "equal-mass bins of the confidence-sorted samples (stable sort); cwece: equal-width bins "
    "per class, mean over classes",
    "confidence": "top-label: max_k p_k, prediction argmax_k p_k (first class on ties)",
    "probabilities": "loss.probabilities(logits) in float64",
    "smece": "Blasiok & Nakkiran 2024, reflected Gaussian kernel, fixed-point bandwidth",
    "nll_floor": 1e-12,
    "fpr95": FPR95_CONVENTION,
    "aupr": "average precision (step-wise, sklearn average_precision_score)",
    "ood_scores_dtype": "float64",
    "ts_fit_split": "val",
    "ts": "T = argmin NLL of loss.probabilities(val_logits / T), LBFGS on log T from T=1; "
    "test_ts = metrics of loss.probabilities(test_logits / T)",
}
"""Every convention behind the numbers; ``Evaluation.conventions`` adds ``n_bins``."""


class NonFiniteLogitsError(CalibenchError):
    """The model produced NaN or inf logits: it diverged, so there is nothing to evaluate."""


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
    - ``test_logits``: float32 ``(N_test, K)`` CPU tensor, in test-split order.
    - ``test_labels``: int64 ``(N_test,)`` CPU tensor.
    - ``conventions``: JSON-able dict, :data:`CONVENTIONS` plus ``n_bins`` and ``ood_scores``
      (the score names) and ``ts_fit_split`` (``None`` when no temperature was fitted).
    - ``plots``: ``{"reliability": path, "ood_<name>": path, ...}`` as strings; ``{}`` without
      ``plots_dir``.
    """

    metrics: dict[str, Any]
    test_logits: Tensor
    test_labels: Tensor
    conventions: dict[str, Any]
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


def _probabilities(loss: nn.Module, logits: Tensor) -> Tensor:
    """``loss.probabilities(logits.double())``, float64 throughout (the loss contract keeps it)."""
    return loss.probabilities(logits.double()).double()


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
) -> Evaluation:
    """Evaluate ``model`` with ``loss``'s predictive distribution; see :class:`Evaluation`.

    ``dataset`` is an :class:`~calibench.data.datasets.ImageDataset` (``.val``, ``.test``,
    ``.mean``, ``.std``, ``.name``); ``ood_sets`` an iterable of
    :class:`~calibench.data.ood.OODSet` (or a mapping name -> set). Temperature scaling is
    fitted on val (:func:`calibench.metrics.fit_temperature`). With ``plots_dir``, writes
    ``reliability.png`` (test), ``reliability_ts.png`` (test after TS) and ``ood_<name>.png``.
    Raises :class:`NonFiniteLogitsError` if the model outputs NaN/inf.
    """
    score_names = list(ood_scores)
    unknown = [s for s in score_names if s not in SCORES]
    if unknown:
        raise UsageError(
            f"unknown OOD score(s) {', '.join(unknown)}; available: {', '.join(SCORES)}"
        )
    sets = list(ood_sets.values()) if isinstance(ood_sets, Mapping) else list(ood_sets)
    mean, std = dataset.mean, dataset.std

    def logits_of(name: str, x: Tensor) -> Tensor:
        logits = predict_logits(model, x, mean, std, device=device, batch_size=batch_size)
        _check_finite(name, logits)
        return logits

    test_logits = logits_of("the test split", dataset.test.x)
    test_labels = dataset.test.y.detach().cpu().to(torch.int64)
    test_probs = _probabilities(loss, test_logits)
    metrics: dict[str, Any] = {}
    temperature = None
    if len(dataset.val.y) > 0:
        val_logits = logits_of("the val split", dataset.val.x)
        val_labels = dataset.val.y.detach().cpu().to(torch.int64)
        metrics["val"] = calibration_metrics(_probabilities(loss, val_logits), val_labels, n_bins)
        temperature = fit_temperature(val_logits, val_labels, lambda z: _probabilities(loss, z))
    metrics["test"] = calibration_metrics(test_probs, test_labels, n_bins)
    ts_probs = None
    if temperature is not None:
        ts_probs = scaled_probabilities(test_logits, temperature, lambda z: _probabilities(loss, z))
        metrics["test_ts"] = {
            "temperature": temperature,
            **calibration_metrics(ts_probs, test_labels, n_bins),
        }
    else:
        metrics["test_ts"] = None

    id_scores = compute_ood_scores(test_logits, test_probs, score_names)
    metrics["ood"] = {}
    ood_raw: dict[str, dict[str, Tensor]] = {}
    for ood in sets:
        logits = logits_of(f"OOD set {ood.name}", ood.x)
        scores = compute_ood_scores(logits, _probabilities(loss, logits), score_names)
        ood_raw[ood.name] = scores
        metrics["ood"][ood.name] = {s: ood_metrics(id_scores[s], scores[s]) for s in score_names}

    plots: dict[str, str] = {}
    if plots_dir is not None:
        plots = _draw(
            Path(plots_dir),
            dataset.name,
            test_probs,
            ts_probs,
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
    }
    return Evaluation(metrics, test_logits, test_labels, conventions, plots)


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
