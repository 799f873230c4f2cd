"""cifar10 / cifar100: splits, stratification, determinism, registry wiring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from calibench import create_dataset, get_registry
from calibench.data.datasets import (
    CIFAR100_CLASSES,
    ImageDataset,
    Split,
    stratified_indices,
    subset,
)
from calibench.errors import DataFormatError, UsageError


@pytest.fixture(scope="module")
def real_cifar10(real_cifar10_root: Path) -> ImageDataset:
    return create_dataset("cifar10", root=str(real_cifar10_root), download=False)


def _rows_as_bytes(x: torch.Tensor) -> set[bytes]:
    return {bytes(row) for row in x.reshape(len(x), -1).numpy()}


def test_real_cifar10_split_sizes_and_stratification(
    real_cifar10: ImageDataset, real_cifar10_root: Path
) -> None:
    d = real_cifar10
    assert (len(d.train), len(d.val), len(d.test)) == (45_000, 5_000, 10_000)
    assert d.num_classes == 10 and d.classes[0] == "airplane"
    assert torch.bincount(d.val.y).tolist() == [500] * 10
    assert torch.bincount(d.train.y).tolist() == [4_500] * 10
    assert d.train.x.dtype == torch.uint8 and d.train.x.shape[1:] == (32, 32, 3)
    assert d.provenance["source"] == "npz"
    assert d.provenance["sizes"] == {"train": 45_000, "val": 5_000, "test": 10_000}
    with np.load(real_cifar10_root / "cifar10.npz") as npz:
        x_train = npz["x_train"]
    # train and val partition the official train set.
    assert _rows_as_bytes(d.train.x).isdisjoint(_rows_as_bytes(d.val.x))
    assert len(_rows_as_bytes(d.train.x) | _rows_as_bytes(d.val.x)) == len(
        _rows_as_bytes(torch.from_numpy(x_train))
    )


def test_split_is_deterministic_and_seeded(tmp_path: Path, writers) -> None:
    writers.write_cifar10(tmp_path, n_train=200, n_test=20)
    a = create_dataset("cifar10", root=str(tmp_path), download=False, val_size=50)
    b = create_dataset("cifar10", root=str(tmp_path), download=False, val_size=50)
    c = create_dataset("cifar10", root=str(tmp_path), download=False, val_size=50, split_seed=1)
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.train.y, b.train.y)
    assert not torch.equal(a.val.x, c.val.x)
    assert torch.bincount(a.val.y).tolist() == [5] * 10
    assert len(a.train) == 150 and len(a.test) == 20
    assert a.provenance["split_seed"] == 0 and c.provenance["split_seed"] == 1


def test_val_size_zero_gives_empty_val(tmp_path: Path, writers) -> None:
    written = writers.write_npz(tmp_path / "cifar10.npz", n_train=40)
    d = create_dataset("cifar10", root=str(tmp_path), download=False, val_size=0)
    assert len(d.val) == 0 and d.val.x.shape == (0, 32, 32, 3)
    np.testing.assert_array_equal(d.train.x.numpy(), written["x_train"])


@pytest.mark.parametrize("val_size", [-1, 100, 1.5, True])
def test_bad_val_size(tmp_path: Path, writers, val_size) -> None:
    writers.write_npz(tmp_path / "cifar10.npz", n_train=100)
    with pytest.raises(UsageError, match="val_size"):
        create_dataset("cifar10", root=str(tmp_path), download=False, val_size=val_size)


def test_cifar100_from_official_pickles(tmp_path: Path, writers) -> None:
    written = writers.write_cifar100(tmp_path, list(CIFAR100_CLASSES), n_train=300, n_test=50)
    d = create_dataset("cifar100", root=str(tmp_path), download=False, val_size=100)
    assert d.num_classes == 100 and d.classes == CIFAR100_CLASSES
    assert torch.bincount(d.val.y, minlength=100).tolist() == [1] * 100
    assert d.provenance["source"] == "torchvision-format"
    np.testing.assert_array_equal(d.test.x.numpy(), written["x_test"])


def test_wrong_class_names_are_rejected(tmp_path: Path, writers) -> None:
    writers.write_cifar100(tmp_path, [f"c{i}" for i in range(100)], n_train=200, n_test=20)
    with pytest.raises(DataFormatError, match="class names"):
        create_dataset("cifar100", root=str(tmp_path), download=False, val_size=0)


def test_out_of_range_labels_are_rejected(tmp_path: Path, writers) -> None:
    writers.write_npz(tmp_path / "cifar10.npz", n_train=60, k=12)
    with pytest.raises(DataFormatError, match=r"expected \[0, 10\)"):
        create_dataset("cifar10", root=str(tmp_path), download=False, val_size=0)


def test_registry_entries() -> None:
    for name in ("cifar10", "cifar100"):
        entry = get_registry("datasets").get(name)
        assert entry.defaults == {"root": None, "download": True, "val_size": 5000, "split_seed": 0}
        assert "Mukhoti" in entry.reference


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(0, 30), min_size=1, max_size=8).filter(lambda c: sum(c) > 0),
    frac=st.floats(0, 1),
    seed=st.none() | st.integers(0, 2**16),
)
def test_stratified_indices_keep_class_proportions(counts, frac, seed) -> None:
    y = np.random.default_rng(0).permutation(np.repeat(np.arange(len(counts)), counts))
    n = round(frac * len(y))
    rng = None if seed is None else np.random.default_rng(seed)
    idx = stratified_indices(y, n, rng)
    assert len(idx) == n and len(np.unique(idx)) == n
    assert np.all(np.diff(idx) > 0)
    taken = np.bincount(y[idx], minlength=len(counts))
    expected = np.asarray(counts) * n / len(y)
    assert np.all(np.abs(taken - expected) < 1)
    assert np.all(taken <= counts)


def test_subset_is_stratified_prefix_per_class() -> None:
    y = torch.tensor([0, 1, 0, 1, 1, 0, 2, 2, 2, 0, 1, 2])
    x = torch.arange(12, dtype=torch.uint8).view(12, 1, 1, 1).expand(12, 2, 2, 3).contiguous()
    s = subset(Split(x, y), 6)
    assert s.x[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 6, 7]
    assert torch.bincount(s.y).tolist() == [2, 2, 2]
    assert len(subset(Split(x, y), 12)) == 12
    for bad in (0, 13, -1, 2.0):
        with pytest.raises(UsageError, match="subset size"):
            subset(Split(x, y), bad)


def test_with_train_subset(tmp_path: Path, writers) -> None:
    writers.write_npz(tmp_path / "cifar10.npz", n_train=100)
    d = create_dataset("cifar10", root=str(tmp_path), download=False, val_size=20)
    small = d.with_train_subset(40)
    assert len(small.train) == 40 and torch.bincount(small.train.y).tolist() == [4] * 10
    assert small.provenance["train_subset"] == 40 and small.val is d.val


def test_split_validates_tensors() -> None:
    with pytest.raises(UsageError, match="uint8"):
        Split(torch.zeros(2, 32, 32, 3), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(UsageError, match="int64"):
        Split(torch.zeros(2, 32, 32, 3, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))
