"""Figures (PNG): per run, a reliability diagram with a confidence histogram and OOD score
histograms; per leaderboard, ECE against the severity of distribution shift.

matplotlib (Agg backend) and torch-uncertainty's plotting are imported only when a figure is drawn.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from calibench.atomic import atomic_write, atomic_write_bytes

__all__ = [
    "calibration_accuracy_png",
    "ood_histogram",
    "reliability_diagram",
    "shift_severity_plot",
    "shift_severity_png",
]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _png_bytes(fig: Any, empty: tuple[Any, str] | None = None) -> bytes:
    """``fig`` laid out and encoded as PNG; ``empty = (axes, text)`` writes ``text`` in each of
    those axes first (a figure with nothing to show says so)."""
    if empty is not None:
        for ax in empty[0]:
            ax.text(0.5, 0.5, empty[1], ha="center", va="center")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _save(fig: Any, path: str | Path) -> Path:
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png", bbox_inches="tight"))


def reliability_diagram(
    probs: Tensor, labels: Tensor, path: str | Path, *, n_bins: int = 15, title: str = ""
) -> Path:
    """Write a reliability diagram over a confidence histogram to ``path`` (PNG); return the path.

    Top: per equal-width bin (the bins of ``ece``), the accuracy (black bar) and the gap to the
    bin's mean confidence (red, more opaque for fuller bins), with the diagonal of perfect
    calibration; drawn by torch-uncertainty's ``reliability_chart``. Bottom: the share of
    samples per bin (bar histogram on the same bins, log-scaled so that sparse bins stay visible),
    with the accuracy and the mean confidence as vertical lines.
    """
    from torch_uncertainty.metrics.classification.calibration.calibration_error import (
        reliability_chart,
    )

    from calibench.metrics.calibration import (
        binned_ece,
        check_probs_labels,
        reliability_bins,
        top_label,
    )

    plt = _pyplot()
    probs, labels = check_probs_labels(probs, labels)
    conf, correct = top_label(probs, labels)
    acc_bin, conf_bin, prop_bin = reliability_bins(conf, correct, n_bins)
    lowers = torch.arange(n_bins, dtype=torch.float64) / n_bins
    empty = prop_bin == 0  # NaN keeps matplotlib from drawing an accuracy bar at 0 for them
    acc_bin, conf_bin = (
        acc_bin.masked_fill(empty, float("nan")),
        conf_bin.masked_fill(empty, float("nan")),
    )
    with warnings.catch_warnings():  # its KDE panel is replaced below; silence its warnings
        warnings.simplefilter("ignore")
        fig, axes = reliability_chart(
            accuracies=correct.numpy(),
            confidences=conf.numpy(),
            bin_accuracies=acc_bin.numpy(),
            bin_confidences=conf_bin.numpy(),
            bin_sizes=prop_bin.numpy(),
            bins=lowers.numpy(),
            title=title or "Reliability diagram",
            dpi=110,
        )
    try:
        _confidence_histogram(axes[1], conf, correct, prop_bin, n_bins)
        axes[0].set_xlabel("")
        ece = binned_ece(conf, correct, n_bins)
        for text in axes[0].texts:
            text.set_text(f"ECE = {ece:.2%} ({n_bins} bins)   acc = {float(correct.mean()):.2%}")
        return _save(fig, path)
    finally:
        plt.close(fig)


def _confidence_histogram(
    ax: Any, conf: Tensor, correct: Tensor, prop_bin: Tensor, n_bins: int
) -> None:
    ax.clear()
    width = 100.0 / n_bins
    centers = (torch.arange(n_bins, dtype=torch.float64) + 0.5) * width
    ax.bar(centers.numpy(), prop_bin.numpy(), width=width, color="#4c72b0", edgecolor="white")
    ax.set_yscale("log")
    ax.set_ylim(max(float(prop_bin[prop_bin > 0].min()) / 2, 1e-5), 1.0)
    acc = ax.axvline(float(correct.mean()) * 100, ls="solid", lw=2, c="black", label="Accuracy")
    avg = ax.axvline(float(conf.mean()) * 100, ls="dotted", lw=2, c="#444", label="Avg. confidence")
    ax.set_xlim(0, 100)
    ax.set_xlabel("Top-class confidence (%)")
    ax.set_ylabel("Share of samples")
    ax.grid(True, alpha=0.3, linestyle="--", zorder=0)
    ax.legend(handles=[acc, avg], loc="upper left", fontsize="small")


def ood_histogram(
    id_scores: Mapping[str, Tensor],
    ood_scores: Mapping[str, Tensor],
    path: str | Path,
    *,
    ood_name: str = "OOD",
    id_name: str = "ID",
    metrics: Mapping[str, Mapping[str, float]] | None = None,
    bins: int = 60,
) -> Path:
    """Write histograms of each score, ID vs OOD, one panel per score, to ``path`` (PNG).

    ``id_scores`` and ``ood_scores`` map score names (``msp``, ``energy``, ``maxlogit``) to 1-D
    tensors; higher means "more in-distribution". ``metrics[score]`` (from ``ood_metrics``), if
    given, puts AUROC and FPR95 in each panel's title. Densities are normalised per set, so sets
    of different sizes compare. MSP is plotted as ``-log10(1 - msp)`` (confidences pile up near 1).
    """
    plt = _pyplot()
    names = [n for n in id_scores if n in ood_scores]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), dpi=110, squeeze=False)
    try:
        for ax, name in zip(axes[0], names, strict=True):
            a = id_scores[name].double().cpu()
            b = ood_scores[name].double().cpu()
            label = name
            if name == "msp":
                a, b = (-torch.log10((1 - x).clamp_min(1e-16)) for x in (a, b))
                label = "msp, as -log10(1 - msp)"
            lo, hi = float(torch.minimum(a.min(), b.min())), float(torch.maximum(a.max(), b.max()))
            edges = torch.linspace(lo, hi if hi > lo else lo + 1, bins + 1).numpy()
            ax.hist(a.numpy(), bins=edges, density=True, alpha=0.55, color="#4c72b0", label=id_name)
            ax.hist(
                b.numpy(), bins=edges, density=True, alpha=0.55, color="#dd8452", label=ood_name
            )
            title = name
            if metrics and name in metrics:
                m = metrics[name]
                title = f"{name}: AUROC {m['auroc']:.1%}, FPR95 {m['fpr95']:.1%}"
            ax.set_title(title, fontsize="medium")
            ax.set_xlabel(f"{label} (higher = more ID)")
            ax.set_ylabel("density")
            ax.grid(True, alpha=0.3, linestyle="--")
            ax.legend(fontsize="small")
        fig.suptitle(f"OOD scores: {id_name} vs {ood_name}")
        fig.tight_layout()
        return _save(fig, path)
    finally:
        plt.close(fig)


ShiftCurves = Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]]
"""``{section title: {loss: {"severities": [0, 1, ...], "ece": [...], "ece_ts": [...]}}}``, as
:func:`calibench.leaderboard.aggregate.shift_severity_curves` returns them (fractions)."""


SHIFT_LEGEND_INSIDE = 8
"""Up to this many losses per panel the legend sits inside each panel; beyond, one legend to
the right of each row."""


def shift_severity_png(curves: ShiftCurves) -> bytes:
    """ECE (left) and ECE after TS (right) against the shift severity, one line per loss, one row
    of panels per section, as a PNG; severity 0 is the clean test split (Ovadia et al. 2019's
    figures of calibration under growing corruption)."""
    plt = _pyplot()
    sections = list(curves)
    most = max((len(c) for c in curves.values()), default=0)
    outside = most > SHIFT_LEGEND_INSIDE
    width = 10 + (3.2 if most > 2 * SHIFT_LEGEND_INSIDE + 4 else 1.8) * outside
    fig, axes = plt.subplots(
        max(len(sections), 1),
        2,
        figsize=(width, (3.6 + 1.4 * outside) * max(len(sections), 1)),
        dpi=110,
        squeeze=False,
    )
    try:
        for row, section in zip(axes, sections, strict=False):
            for ax, key, label in zip(
                row, ("ece", "ece_ts"), ("ECE", "ECE after TS (clean-val T)"), strict=True
            ):
                for i, (loss, curve) in enumerate(curves[section].items()):
                    ys = [100.0 * v for v in curve[key]]
                    # 10 colours, then the next 10 dashed with squares, then dotted with triangles
                    ax.plot(curve["severities"], ys, lw=1.5, ms=4, label=loss, **_line_style(i))
                ax.set_title(f"{section}: {label}", fontsize="medium")
                ax.set_xlabel("corruption severity (0 = clean test split)")
                ax.set_ylabel(f"{label.split(' (')[0]} % (mean over corruptions)")
                ax.set_xticks(
                    sorted({x for c in curves[section].values() for x in c["severities"]})
                )
                ax.grid(True, alpha=0.3, linestyle="--")
                if not outside:
                    ax.legend(fontsize="small")
            if outside:
                row[1].legend(
                    fontsize="small",
                    loc="upper left",
                    bbox_to_anchor=(1.02, 1.0),
                    ncol=1 if most <= 2 * SHIFT_LEGEND_INSIDE + 4 else 2,
                    borderaxespad=0.0,
                )
        return _png_bytes(fig, None if sections else (axes[0], "no shift grid"))
    finally:
        plt.close(fig)


def shift_severity_plot(curves: ShiftCurves, path: str | Path) -> Path:
    """Write :func:`shift_severity_png` to ``path`` atomically; return the path."""
    return atomic_write_bytes(path, shift_severity_png(curves))


def _line_style(i: int) -> dict[str, Any]:
    """The i-th series: 10 colours, then dashed with squares, then dotted with triangles."""
    return {
        "color": f"C{i % 10}",
        "ls": ("-", "--", ":")[i // 10 % 3],
        "marker": "os^"[i // 10 % 3],
    }


CalibrationPoints = Mapping[str, Mapping[str, Mapping[str, tuple[float, float, float]]]]
"""section -> loss -> ``acc`` / ``ece`` / ``ece_ts`` -> (seed mean, CI low, CI high)."""


def calibration_accuracy_png(points: CalibrationPoints) -> bytes:
    """ECE (left) and ECE after TS (right) against test accuracy, one labelled point per loss
    with its 95 % intervals as error bars in both directions, one row of panels per section
    (:func:`calibench.leaderboard.aggregate.calibration_accuracy_points`), as a PNG."""
    plt = _pyplot()
    sections = list(points)
    fig, axes = plt.subplots(
        max(len(sections), 1), 2, figsize=(12, 5.2 * max(len(sections), 1)), dpi=110, squeeze=False
    )
    try:
        for row, section in zip(axes, sections, strict=False):
            for ax, key, label in zip(row, ("ece", "ece_ts"), ("ECE", "ECE after TS"), strict=True):
                for i, (loss, p) in enumerate(points[section].items()):
                    x, xlo, xhi = (100.0 * v for v in p["acc"])
                    y, ylo, yhi = (100.0 * v for v in p[key])
                    style = _line_style(i)
                    xerr = [[x - xlo], [xhi - x]] if math.isfinite(xlo + xhi) else None
                    yerr = [[y - ylo], [yhi - y]] if math.isfinite(ylo + yhi) else None
                    ax.errorbar(
                        x, y, xerr=xerr, yerr=yerr, color=style["color"], marker=style["marker"],
                        ms=4, lw=0.8, capsize=2, ls="none",
                    )  # fmt: skip
                    ax.annotate(
                        loss, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=6.5,
                        color=style["color"],
                    )  # fmt: skip
                ax.set_title(f"{section}: {label} against accuracy", fontsize="medium")
                ax.set_xlabel("test accuracy % (seed mean, 95 % CI)")
                ax.set_ylabel(f"{label} % (seed mean, 95 % CI; lower is better)")
                ax.grid(True, alpha=0.3, linestyle="--")
        return _png_bytes(fig, None if sections else (axes[0], "no completed runs"))
    finally:
        plt.close(fig)
