"""Built-in in-distribution datasets. Importing this module registers them.

``cifar10`` and ``cifar100`` give train / val / test = 45,000 / 5,000 / 10,000 images: the val
split is ``val_size`` class-stratified images carved from the official train set with a fixed
seed (``split_seed``), as in Mukhoti et al. 2020; train is the rest; test is the official test
set. The split is deterministic: the same files and seed always give the same indices.
``val_size=0`` means no val split (``dataset.val`` is then empty).

Normalisation statistics are the published per-channel train means and standard deviations
(0..1 scale) of the official releases, so they do not depend on the split or the source.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from calibench.data.sources import RawData, load_cifar
from calibench.errors import DataFormatError, UsageError
from calibench.registry import register_dataset

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR100_CLASSES",
    "ImageDataset",
    "Split",
    "cifar10",
    "cifar100",
    "stratified_indices",
    "subset",
]

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR100_CLASSES = tuple(
    [
        "apple",
        "aquarium_fish",
        "baby",
        "bear",
        "beaver",
        "bed",
        "bee",
        "beetle",
        "bicycle",
        "bottle",
        "bowl",
        "boy",
        "bridge",
        "bus",
        "butterfly",
        "camel",
        "can",
        "castle",
        "caterpillar",
        "cattle",
        "chair",
        "chimpanzee",
        "clock",
        "cloud",
        "cockroach",
        "couch",
        "crab",
        "crocodile",
        "cup",
        "dinosaur",
        "dolphin",
        "elephant",
        "flatfish",
        "forest",
        "fox",
        "girl",
        "hamster",
        "house",
        "kangaroo",
        "keyboard",
        "lamp",
        "lawn_mower",
        "leopard",
        "lion",
        "lizard",
        "lobster",
        "man",
        "maple_tree",
        "motorcycle",
        "mountain",
        "mouse",
        "mushroom",
        "oak_tree",
        "orange",
        "orchid",
        "otter",
        "palm_tree",
        "pear",
        "pickup_truck",
        "pine_tree",
        "plain",
        "plate",
        "poppy",
        "porcupine",
        "possum",
        "rabbit",
        "raccoon",
        "ray",
        "road",
        "rocket",
        "rose",
        "sea",
        "seal",
        "shark",
        "shrew",
        "skunk",
        "skyscraper",
        "snail",
        "snake",
        "spider",
        "squirrel",
        "streetcar",
        "sunflower",
        "sweet_pepper",
        "table",
        "tank",
        "telephone",
        "television",
        "tiger",
        "tractor",
        "train",
        "trout",
        "tulip",
        "turtle",
        "wardrobe",
        "whale",
        "willow_tree",
        "wolf",
        "woman",
        "worm",
    ]
)

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

MUKHOTI_2020 = (
    "Mukhoti et al., Calibrating Deep Neural Networks using Focal Loss, NeurIPS 2020 "
    "(45k/5k/10k split); Krizhevsky, Learning Multiple Layers of Features from Tiny Images, 2009"
)


@dataclass(frozen=True)
class Split:
    """Images ``x`` uint8 ``(N, 32, 32, 3)`` RGB (NHWC) and labels ``y`` int64 ``(N,)``."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.dtype != torch.uint8 or self.x.dim() != 4 or self.x.shape[3] != 3:
            raise UsageError(
                f"Split.x must be uint8 (N, H, W, 3), got {self.x.dtype} {tuple(self.x.shape)}"
            )
        if self.y.dtype != torch.int64 or self.y.shape != (self.x.shape[0],):
            raise UsageError(
                f"Split.y must be int64 ({self.x.shape[0]},), got {self.y.dtype} {tuple(self.y.shape)}"
            )

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, indices: np.ndarray | torch.Tensor) -> Split:
        """The rows ``indices`` (in that order) as a new split."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.int64)
        return Split(self.x[idx], self.y[idx])


@dataclass(frozen=True)
class ImageDataset:
    """An image classification dataset with fixed train / val / test splits."""

    name: str
    classes: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train: Split
    val: Split
    test: Split
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def with_train_subset(self, n: int) -> ImageDataset:
        """This dataset with ``train`` replaced by :func:`subset` ``(train, n)``."""
        provenance = {**self.provenance, "train_subset": n}
        return dataclasses.replace(self, train=subset(self.train, n), provenance=provenance)


def _quotas(counts: np.ndarray, n: int) -> np.ndarray:
    """Split ``n`` over classes in proportion to ``counts`` (largest remainder, ties by class)."""
    exact = counts * (n / counts.sum())
    quotas = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - quotas), kind="stable")
    quotas[order[: n - int(quotas.sum())]] += 1
    return quotas


def stratified_indices(
    y: np.ndarray | torch.Tensor, n: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Sorted indices of ``n`` rows of ``y`` with class proportions kept (largest remainder).

    Within each class the rows are the first ones in order, or a random choice when ``rng`` is
    given. Deterministic for a fixed ``y`` and ``rng`` state.
    """
    y = np.asarray(y)
    if not 0 <= n <= len(y):
        raise UsageError(f"cannot take {n} of {len(y)} images; choose 0 <= n <= {len(y)}")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    _, inverse = np.unique(y, return_inverse=True)
    quotas = _quotas(np.bincount(inverse), n)
    chosen = []
    for c, q in enumerate(quotas):
        rows = np.flatnonzero(inverse == c)
        if rng is not None:
            rows = rng.permutation(rows)
        chosen.append(rows[:q])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def subset(split: Split, n: int) -> Split:
    """A class-stratified subset of ``n`` images: the first images of each class, in split order.

    Deterministic, no seed: the same split and ``n`` always give the same images, and a smaller
    ``n`` gives (up to rounding of the per-class quotas) a subset of a larger one.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise UsageError(f"subset size must be a positive integer, got {n!r}")
    if n > len(split):
        raise UsageError(f"subset size {n} exceeds the {len(split)} images of the split")
    if n == len(split):
        return split
    return split.take(stratified_indices(split.y.numpy(), n))


def _build(
    name: str,
    raw: RawData,
    classes: tuple[str, ...],
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    val_size: int,
    split_seed: int,
) -> ImageDataset:
    if raw.classes is not None and tuple(raw.classes) != classes:
        raise DataFormatError(
            f"{name}: the class names in the files ({len(raw.classes)}) do not match the "
            f"official {len(classes)} {name} classes; is this really {name}?"
        )
    a = raw.arrays
    for key in ("y_train", "y_test"):
        y = a[key]
        if y.size and (y.min() < 0 or y.max() >= len(classes)):
            raise DataFormatError(
                f"{name}: {key} has labels in [{y.min()}, {y.max()}], expected [0, {len(classes)})"
            )
    if not isinstance(val_size, int) or isinstance(val_size, bool) or val_size < 0:
        raise UsageError(f"val_size must be a non-negative integer, got {val_size!r}")
    n_train = len(a["y_train"])
    if val_size >= n_train:
        raise UsageError(f"val_size={val_size} leaves no training images (train has {n_train})")
    val_idx = stratified_indices(a["y_train"], val_size, np.random.default_rng(split_seed))
    train_mask = np.ones(n_train, dtype=bool)
    train_mask[val_idx] = False
    full = Split(torch.from_numpy(a["x_train"]), torch.from_numpy(a["y_train"]))
    train, val = full.take(np.flatnonzero(train_mask)), full.take(val_idx)
    test = Split(torch.from_numpy(a["x_test"]), torch.from_numpy(a["y_test"]))
    provenance = {
        **raw.provenance,
        "val_size": val_size,
        "split_seed": split_seed,
        "sizes": {"train": len(train), "val": len(val), "test": len(test)},
    }
    return ImageDataset(name, classes, mean, std, train, val, test, provenance)


@register_dataset(
    "cifar10",
    summary="CIFAR-10, 10 classes, 32x32; train/val/test 45k/5k/10k (stratified seeded val)",
    reference=MUKHOTI_2020,
)
def cifar10(
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    val_size: int = 5000,
    split_seed: int = 0,
) -> ImageDataset:
    """CIFAR-10 with a class-stratified val split of ``val_size`` images carved from train."""
    raw = load_cifar("cifar10", root, download)
    return _build("cifar10", raw, CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, val_size, split_seed)


@register_dataset(
    "cifar100",
    summary="CIFAR-100, 100 classes, 32x32; train/val/test 45k/5k/10k (stratified seeded val)",
    reference=MUKHOTI_2020,
)
def cifar100(
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    val_size: int = 5000,
    split_seed: int = 0,
) -> ImageDataset:
    """CIFAR-100 (fine labels) with a class-stratified val split of ``val_size`` images."""
    raw = load_cifar("cifar100", root, download)
    return _build(
        "cifar100", raw, CIFAR100_CLASSES, CIFAR100_MEAN, CIFAR100_STD, val_size, split_seed
    )
