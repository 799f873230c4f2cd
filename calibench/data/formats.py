"""Readers for the official on-disk dataset formats and the calibench ``.npz`` format.

Every reader returns numpy arrays in one layout: images ``uint8 (N, 32, 32, 3)`` RGB (NHWC),
labels ``int64 (N,)``. A malformed file raises :class:`DataFormatError` naming the file and what
was wrong with it.

The official formats are:

- CIFAR-10 (``cifar-10-batches-py/``): python pickles ``data_batch_1`` .. ``data_batch_5``,
  ``test_batch`` (dicts with ``data`` uint8 ``(10000, 3072)`` in CHW order and ``labels``) and
  ``batches.meta`` (``label_names``).
- CIFAR-100 (``cifar-100-python/``): pickles ``train``, ``test`` (``data`` and ``fine_labels``)
  and ``meta`` (``fine_label_names``).
- SVHN (``test_32x32.mat``): a MATLAB file with ``X`` uint8 ``(32, 32, 3, N)`` and ``y``
  ``(N, 1)``, where label 10 means digit 0.

The CIFAR pickles are unpickled, as torchvision does: only point the data root at files you trust.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from calibench.errors import DataFormatError

IMAGE_SHAPE = (32, 32, 3)
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_META_FILE = "batches.meta"

CIFAR100_FOLDER = "cifar-100-python"
CIFAR100_TRAIN_FILE = "train"
CIFAR100_TEST_FILE = "test"
CIFAR100_META_FILE = "meta"

SVHN_TEST_FILE = "test_32x32.mat"


def _load_pickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except Exception as exc:
        raise DataFormatError(
            f"{path} is not a readable CIFAR python pickle ({type(exc).__name__}: {exc}); "
            "delete it and provide the official file"
        ) from None
    if not isinstance(obj, dict):
        raise DataFormatError(f"{path} holds a {type(obj).__name__}, expected a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _pickle_field(entry: dict[str, Any], key: str, path: Path) -> Any:
    if key not in entry:
        raise DataFormatError(
            f"{path} has no '{key}' entry (found: {', '.join(sorted(entry))}); "
            "it is not an official CIFAR file"
        )
    return entry[key]


def _cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    entry = _load_pickle(path)
    data = np.asarray(_pickle_field(entry, "data", path))
    labels = np.asarray(_pickle_field(entry, label_key, path))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataFormatError(
            f"{path}: 'data' must be uint8 (N, 3072), got {data.dtype} {tuple(data.shape)}"
        )
    if labels.shape != (data.shape[0],):
        raise DataFormatError(
            f"{path}: '{label_key}' must have {data.shape[0]} entries, got shape {labels.shape}"
        )
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), labels.astype(np.int64)


def _names(path: Path, key: str) -> list[str]:
    names = _pickle_field(_load_pickle(path), key, path)
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def cifar10_files(root: Path) -> list[Path]:
    folder = root / CIFAR10_FOLDER
    names = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE, CIFAR10_META_FILE)
    return [folder / n for n in names]


def cifar100_files(root: Path) -> list[Path]:
    folder = root / CIFAR100_FOLDER
    return [folder / n for n in (CIFAR100_TRAIN_FILE, CIFAR100_TEST_FILE, CIFAR100_META_FILE)]


def read_cifar10(root: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """Arrays ``x_train, y_train, x_test, y_test`` and class names from ``root/cifar-10-batches-py``."""
    *train_files, test_file, meta_file = cifar10_files(root)
    batches = [_cifar_batch(p, "labels") for p in train_files]
    x_test, y_test = _cifar_batch(test_file, "labels")
    arrays = {
        "x_train": np.concatenate([b[0] for b in batches]),
        "y_train": np.concatenate([b[1] for b in batches]),
        "x_test": x_test,
        "y_test": y_test,
    }
    return arrays, _names(meta_file, "label_names")


def read_cifar100(root: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """Arrays ``x_train, y_train, x_test, y_test`` (fine labels) and class names from ``cifar-100-python``."""
    train_file, test_file, meta_file = cifar100_files(root)
    x_train, y_train = _cifar_batch(train_file, "fine_labels")
    x_test, y_test = _cifar_batch(test_file, "fine_labels")
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    return arrays, _names(meta_file, "fine_label_names")


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images NHWC and labels (digit 0 stored as 10 is mapped to 0) from an SVHN ``.mat`` file."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:
        raise DataFormatError(
            f"{path} is not a readable MATLAB file ({type(exc).__name__}: {exc}); "
            "delete it and provide the official SVHN test_32x32.mat"
        ) from None
    if "X" not in mat or "y" not in mat:
        raise DataFormatError(f"{path} must hold arrays 'X' and 'y' (official SVHN format)")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"])
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != IMAGE_SHAPE:
        raise DataFormatError(f"{path}: 'X' must be uint8 (32, 32, 3, N), got {x.dtype} {x.shape}")
    n = x.shape[3]
    if y.size != n:
        raise DataFormatError(f"{path}: 'y' must have {n} labels, got shape {y.shape}")
    labels = y.reshape(-1).astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 10):
        raise DataFormatError(
            f"{path}: SVHN labels must lie in 0..10, got {labels.min()}..{labels.max()}"
        )
    labels[labels == 10] = 0
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), labels


def read_npz(path: Path, keys: tuple[str, ...] = NPZ_KEYS) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of a calibench ``.npz``, validated: ``x_*`` uint8 NHWC 32x32x3, ``y_*`` int (N,)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise DataFormatError(
                    f"{path} lacks key(s) {', '.join(missing)} (has: {', '.join(npz.files)}); "
                    f"a dataset .npz needs {', '.join(keys)}"
                )
            arrays = {k: npz[k] for k in keys}
    except DataFormatError:
        raise
    except Exception as exc:
        raise DataFormatError(
            f"{path} is not a readable .npz file ({type(exc).__name__}: {exc})"
        ) from None
    for split in sorted({k[2:] for k in keys}):
        x, y = arrays.get(f"x_{split}"), arrays.get(f"y_{split}")
        if x is not None and (x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE):
            raise DataFormatError(
                f"{path}: x_{split} must be uint8 (N, 32, 32, 3) RGB NHWC, "
                f"got {x.dtype} {tuple(x.shape)}"
            )
        if y is not None:
            if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
                raise DataFormatError(
                    f"{path}: y_{split} must be an integer vector (N,), got {y.dtype} {tuple(y.shape)}"
                )
            if x is not None and len(y) != len(x):
                raise DataFormatError(
                    f"{path}: x_{split} has {len(x)} images but y_{split} has {len(y)} labels"
                )
            arrays[f"y_{split}"] = y.astype(np.int64)
    return arrays
