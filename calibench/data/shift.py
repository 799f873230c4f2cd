"""STAND-IN for the shift suites (CIFAR-10-C / CIFAR-100-C); the data branch replaces this file.

It has the interface of the real module so that the evaluation, record and leaderboard code can
be written and tested against it: every "corruption" here is the clean test image plus seeded
Gaussian noise whose standard deviation grows with the severity (and a little with the
corruption's position in :data:`CORRUPTIONS`), clipped to 0..255. These are NOT Hendrycks &
Dietterich's corruptions and NOT the official files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from calibench.data.datasets import stratified_indices
from calibench.errors import UsageError

__all__ = ["CORRUPTIONS", "SEVERITIES", "ShiftCell", "ShiftSuite", "load_shift_suite"]

CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
SEVERITIES = (1, 2, 3, 4, 5)
_SUITES = {"cifar10-c": "cifar10", "cifar100-c": "cifar100"}


@dataclass(frozen=True)
class ShiftCell:
    """One (corruption, severity): images ``x`` uint8 ``(N, 32, 32, 3)`` and labels ``y`` int64."""

    corruption: str
    severity: int
    x: torch.Tensor
    y: torch.Tensor


@dataclass(frozen=True)
class ShiftSuite:
    """A shift suite: which corruptions and severities, on which test images (``indices``)."""

    name: str
    dataset: str
    source: dict[str, Any]
    corruptions: tuple[str, ...]
    severities: tuple[int, ...]
    max_images: int | None
    indices: np.ndarray
    _x: torch.Tensor = field(repr=False, compare=False)
    _y: torch.Tensor = field(repr=False, compare=False)
    _seed: int = field(repr=False, compare=False, default=0)

    def cells(self) -> Iterator[ShiftCell]:
        """Every cell, corruption-major, severity-minor, generated on demand."""
        for c, corruption in enumerate(self.corruptions):
            for severity in self.severities:
                g = torch.Generator().manual_seed(self._seed * 1000 + c * 10 + severity)
                sigma = 8.0 * severity * (1 + c / len(self.corruptions))
                noise = torch.randn(self._x.shape, generator=g) * sigma
                x = (self._x.float() + noise).round_().clamp_(0, 255).to(torch.uint8)
                yield ShiftCell(corruption, severity, x, self._y)


def load_shift_suite(
    name: str,
    *,
    root: str | os.PathLike[str] | None,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    seed: int = 0,
    max_images: int | None = None,
    download: bool = False,
) -> ShiftSuite:
    """The stand-in suite ``name`` from the clean test split (``root``, ``download`` unused)."""
    if name not in _SUITES:
        raise UsageError(f"unknown shift suite '{name}'; known: {', '.join(_SUITES)}")
    n = len(test_y)
    if max_images is not None and max_images < n:
        indices = np.asarray(stratified_indices(test_y.numpy(), max_images), dtype=np.int64)
    else:
        indices = np.arange(n, dtype=np.int64)
    idx = torch.from_numpy(indices)
    source = {"kind": "generated", "generator": "calibench stand-in (Gaussian noise)", "seed": seed}
    return ShiftSuite(
        name,
        _SUITES[name],
        source,
        CORRUPTIONS,
        SEVERITIES,
        max_images,
        indices,
        test_x[idx],
        test_y[idx].to(torch.int64),
        seed,
    )
