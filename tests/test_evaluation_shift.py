"""The shift grid of the evaluator: every cell against a direct computation on a tiny model, the
summaries, chunking, the val temperature, and what evaluate() records."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from calibench.data.datasets import ImageDataset, Split
from calibench.errors import UsageError
from calibench.evaluation import (
    SHIFT_CONVENTION,
    SHIFT_KEYS,
    evaluate,
    evaluate_shift,
    predict_logits,
    predictive_logits,
    shift_cell_metrics,
)
from calibench.losses.base import CalibrationLoss
from calibench.metrics import fit_temperature, logit_metrics

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def toy_split(n: int, seed: int) -> Split:
    """Class c: images of brightness about 60 c + 40, 15 % of the labels redrawn at random."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = (torch.randint(0, 80, (n, 32, 32, 3), generator=g) + 60 * y[:, None, None, None]).byte()
    redraw = torch.rand(n, generator=g) < 0.15
    return Split(x, torch.where(redraw, torch.randint(0, 3, (n,), generator=g), y))


class MeanPixel(nn.Module):
    """Class c scores -30 (mean normalised pixel - centre_c)^2: learnable from the mean pixel."""

    def __init__(self) -> None:
        super().__init__()
        self.centres = nn.Parameter(torch.tensor([-1.4, -0.45, 0.5]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -30 * (x.mean(dim=(1, 2, 3))[:, None] - self.centres) ** 2


class HalfTemperatureLoss(CalibrationLoss):
    """Predictive logits 2 z: the grid must come from them, not from the raw logits."""

    def compute(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(2 * logits, targets)

    def predictive_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return 2 * logits


@pytest.fixture
def fast_smece(monkeypatch: pytest.MonkeyPatch) -> None:
    """smECE's bandwidth search costs about a second per call (the clean test metrics)."""
    import calibench.metrics.calibration as calibration

    monkeypatch.setattr(calibration, "smooth_ece", lambda conf, correct: 0.125)


@pytest.fixture
def toy() -> ImageDataset:
    return ImageDataset(
        "toy", ("a", "b", "c"), MEAN, STD, toy_split(8, 0), toy_split(200, 1), toy_split(300, 2)
    )


CELL_KEYS = {*SHIFT_KEYS, *(f"{k}_ts" for k in SHIFT_KEYS)}


@dataclass(frozen=True)
class Cell:
    corruption: str
    severity: int
    x: torch.Tensor
    y: torch.Tensor


@dataclass(frozen=True)
class ToySuite:
    """A suite in the shape of :class:`calibench.data.shift.ShiftSuite`: cell ``(c, s)`` is a toy
    split shifted by ``12 s (c + 1)`` grey levels (up for even ``c``, down for odd ``c``), so
    higher severities lie further from the training images."""

    corruptions: tuple[str, ...] = ("brighten", "darken", "flatten")
    severities: tuple[int, ...] = (1, 2, 3)
    n: int = 40
    name: str = "toy-c"
    dataset: str = "toy"
    source: dict[str, Any] = field(default_factory=lambda: {"kind": "generated", "seed": 0})
    max_images: int | None = 40
    indices: np.ndarray = field(default_factory=lambda: np.arange(40))

    def cells(self) -> Iterator[Cell]:
        base = toy_split(self.n, 7)
        for c, corruption in enumerate(self.corruptions):
            for s in self.severities:
                shifted = (base.x.int() + (-1) ** c * 12 * s * (c + 1)).clamp(0, 255)
                yield Cell(corruption, s, shifted.to(torch.uint8), base.y)


def direct(model: Any, loss: Any, suite: ToySuite, temperature: float | None) -> dict[str, Any]:
    """Each cell on its own: predictive logits, then logit_metrics of s and s / T."""
    grid: dict[str, Any] = {}
    for cell in suite.cells():
        s = predictive_logits(loss, predict_logits(model, cell.x, MEAN, STD, device="cpu"))
        m = logit_metrics(s, cell.y, 15)
        values = {k: m[k] for k in SHIFT_KEYS}
        ts = logit_metrics(s.double() / temperature, cell.y, 15) if temperature else {}
        values.update({f"{k}_ts": ts.get(k) for k in SHIFT_KEYS})
        grid.setdefault(cell.corruption, {})[str(cell.severity)] = values
    return grid


@pytest.mark.parametrize("chunk", [1, 55, 10_000])
def test_grid_equals_a_direct_computation_per_cell(chunk: int, fast_smece) -> None:
    model, loss, suite = MeanPixel(), HalfTemperatureLoss(), ToySuite()
    out = evaluate_shift(
        model,
        loss,
        suite,
        mean=MEAN,
        std=STD,
        device="cpu",
        temperature=1.7,
        batch_size=16,
        chunk_images=chunk,
    )
    assert out["grid"] == direct(model, loss, suite, 1.7)
    assert list(out["grid"]) == list(suite.corruptions)
    assert all(list(per) == ["1", "2", "3"] for per in out["grid"].values())
    assert (out["suite"], out["source"], out["max_images"], out["n_images"]) == (
        "toy-c",
        {"kind": "generated", "seed": 0},
        40,
        40,
    )
    assert out["corruptions"] == list(suite.corruptions) and out["severities"] == [1, 2, 3]
    # The shift is real: accuracy falls as the severity grows.
    by = out["summary"]["by_severity"]
    assert by["3"]["acc"] < by["2"]["acc"] < by["1"]["acc"]
    json.dumps(out, allow_nan=False)


def test_summaries_are_means_over_corruptions_and_over_all_cells() -> None:
    out = evaluate_shift(
        MeanPixel(), HalfTemperatureLoss(), ToySuite(), mean=MEAN, std=STD, device="cpu",
        temperature=0.8,
    )  # fmt: skip
    grid = out["grid"]
    for key in CELL_KEYS:
        for s in ("1", "2", "3"):
            by = out["summary"]["by_severity"][s][key]
            assert by == pytest.approx(np.mean([grid[c][s][key] for c in grid]), rel=1e-12)
        cells = [grid[c][s][key] for c in grid for s in grid[c]]
        assert out["summary"]["mean"][key] == pytest.approx(np.mean(cells), rel=1e-12)
    assert set(out["summary"]["by_severity"]) == {"1", "2", "3"}


def test_without_a_temperature_the_ts_values_are_none() -> None:
    out = evaluate_shift(
        MeanPixel(), HalfTemperatureLoss(), ToySuite(), mean=MEAN, std=STD, device="cpu",
        temperature=None,
    )  # fmt: skip
    cell = out["grid"]["brighten"]["1"]
    assert set(cell) == CELL_KEYS
    assert all(cell[f"{k}_ts"] is None for k in SHIFT_KEYS)
    assert all(cell[k] is not None for k in SHIFT_KEYS)
    assert out["summary"]["mean"]["ece_ts"] is None and out["summary"]["mean"]["ece"] is not None


def test_evaluate_uses_the_val_temperature_and_records_the_convention(
    toy: ImageDataset, fast_smece
) -> None:
    model, loss, suite = MeanPixel(), HalfTemperatureLoss(), ToySuite()
    ev = evaluate(model, loss, toy, device="cpu", batch_size=64, shift=suite)
    val_s = predictive_logits(loss, predict_logits(model, toy.val.x, MEAN, STD, device="cpu"))
    t = fit_temperature(val_s, toy.val.y)
    assert ev.metrics["test_ts"]["temperature"] == t
    assert ev.metrics["shift"]["grid"] == direct(model, loss, suite, t)
    assert ev.conventions["shift"] == SHIFT_CONVENTION
    assert "clean val split" in SHIFT_CONVENTION and "NOT the official files" in SHIFT_CONVENTION
    plain = evaluate(model, loss, toy, device="cpu", batch_size=64)
    assert "shift" not in plain.metrics and "shift" not in plain.conventions


def test_cells_with_mismatched_labels_or_no_cells_are_refused() -> None:
    @dataclass(frozen=True)
    class Broken(ToySuite):
        def cells(self) -> Iterator[Cell]:
            for cell in super().cells():
                yield Cell(cell.corruption, cell.severity, cell.x, cell.y[:-1])

    kwargs: dict[str, Any] = dict(mean=MEAN, std=STD, device="cpu", temperature=1.0)
    with pytest.raises(UsageError, match=r"images and .* labels"):
        evaluate_shift(MeanPixel(), HalfTemperatureLoss(), Broken(), **kwargs)
    with pytest.raises(UsageError, match="no cells"):
        evaluate_shift(MeanPixel(), HalfTemperatureLoss(), ToySuite(corruptions=()), **kwargs)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 60),
    k=st.integers(2, 6),
    scale=st.floats(0.1, 30.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_cell_metrics_are_logit_metrics_restricted(n: int, k: int, scale: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, k, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, k, (n,), generator=g)
    full = logit_metrics(s, y, 15)
    mine = shift_cell_metrics(s, y, 15)
    assert set(mine) == set(SHIFT_KEYS)
    assert all(mine[key] == full[key] or math.isnan(full[key]) for key in SHIFT_KEYS)
