"""Built-in out-of-distribution sets. Importing this module registers them.

- ``svhn``: the official SVHN test split (26,032 house-number digits), the usual near-ish OOD set
  for CIFAR models (Netzer et al. 2011). Found like the CIFAR sets (see
  :mod:`calibench.data.sources`): ``test_32x32.mat``, then ``svhn.npz`` (``x_test, y_test``), then
  a download.
- ``gaussian`` and ``uniform``: synthetic noise images that need no download, the far-OOD probes
  of Hendrycks & Gimpel 2017 and Hendrycks, Mazeika & Dietterich 2019 (outlier exposure). In
  their code, on images scaled to [-1, 1], Gaussian noise is ``clip(N(0, 0.5^2), -1, 1)`` and
  uniform noise ``U(-1, 1)``; on the 0..255 pixel scale used here that is
  ``round(255 * clip(N(0.5, 0.25^2), 0, 1))`` and integers uniform in 0..255. Each set has as
  many images as ``like.test`` (or 10,000, the size of the CIFAR test sets, when ``like`` is
  None), of the same 32x32x3 shape, drawn from a CPU ``torch.Generator`` seeded with ``seed``.

Every factory takes ``(root=None, download=True, like=None, seed=0)``; each set ignores the
arguments it does not need.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from calibench.data.datasets import ImageDataset
from calibench.data.sources import load_svhn_test
from calibench.errors import UsageError
from calibench.registry import register_ood

__all__ = ["DEFAULT_NOISE_COUNT", "OODSet", "gaussian", "svhn", "uniform"]

DEFAULT_NOISE_COUNT = 10_000
HENDRYCKS = (
    "Hendrycks & Gimpel, A Baseline for Detecting Misclassified and Out-of-Distribution Examples "
    "in Neural Networks, ICLR 2017; Hendrycks, Mazeika & Dietterich, Deep Anomaly Detection with "
    "Outlier Exposure, ICLR 2019"
)


@dataclass(frozen=True)
class OODSet:
    """Out-of-distribution images ``x`` uint8 ``(N, 32, 32, 3)`` RGB; ``y`` their own labels, if any."""

    name: str
    x: torch.Tensor
    provenance: dict[str, Any] = field(default_factory=dict)
    y: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])


@register_ood(
    "svhn",
    summary="SVHN test split, 26,032 digit images (label 10 in the file = digit 0)",
    reference="Netzer et al., Reading Digits in Natural Images with Unsupervised Feature Learning, 2011",
)
def svhn(
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    like: ImageDataset | None = None,
    seed: int = 0,
) -> OODSet:
    """The official SVHN test split; ``like`` and ``seed`` are unused."""
    raw = load_svhn_test(root, download)
    x = torch.from_numpy(raw.arrays["x_test"])
    y = torch.from_numpy(raw.arrays["y_test"])
    return OODSet("svhn", x, {**raw.provenance, "size": len(x)}, y)


def _noise_shape(like: ImageDataset | None) -> tuple[int, ...]:
    if like is None:
        return (DEFAULT_NOISE_COUNT, 32, 32, 3)
    if not isinstance(like, ImageDataset):
        raise UsageError(f"like must be an ImageDataset or None, got {type(like).__name__}")
    return tuple(like.test.x.shape)


def _noise_generator(seed: int) -> torch.Generator:
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def _noise_provenance(
    kind: str, shape: tuple[int, ...], seed: int, like: ImageDataset | None
) -> dict[str, Any]:
    return {
        "dataset": kind,
        "source": "synthetic",
        "seed": seed,
        "size": shape[0],
        "like": like.name if like is not None else None,
    }


@register_ood(
    "gaussian",
    summary="Gaussian noise images clip(N(0.5, 0.25^2), 0, 1), seeded; size of the test set",
    reference=HENDRYCKS,
)
def gaussian(
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    like: ImageDataset | None = None,
    seed: int = 0,
) -> OODSet:
    """``round(255 * clip(N(0.5, 0.25^2), 0, 1))`` per pixel; as many images as ``like.test`` (or 10,000)."""
    shape = _noise_shape(like)
    g = _noise_generator(seed)
    x = torch.randn(shape, generator=g).mul_(0.25).add_(0.5).clamp_(0, 1).mul_(255).round_()
    return OODSet("gaussian", x.to(torch.uint8), _noise_provenance("gaussian", shape, seed, like))


@register_ood(
    "uniform",
    summary="uniform noise images, pixels uniform in 0..255, seeded; size of the test set",
    reference=HENDRYCKS,
)
def uniform(
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    like: ImageDataset | None = None,
    seed: int = 0,
) -> OODSet:
    """Pixels i.i.d. uniform in 0..255; as many images as ``like.test`` (or 10,000)."""
    shape = _noise_shape(like)
    x = torch.randint(0, 256, shape, generator=_noise_generator(seed), dtype=torch.uint8)
    return OODSet("uniform", x, _noise_provenance("uniform", shape, seed, like))
