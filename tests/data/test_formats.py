"""Readers of the official formats, checked against torchvision's own readers on the same files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torchvision

from calibench.data import formats
from calibench.data.datasets import CIFAR100_CLASSES


@pytest.fixture
def no_md5_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fixture files are not the official bytes, so torchvision's checksum test must pass them."""
    for module in (torchvision.datasets.cifar, torchvision.datasets.svhn):
        monkeypatch.setattr(module, "check_integrity", lambda *args, **kwargs: True)


def test_cifar10_matches_torchvision(tmp_path: Path, writers, no_md5_check) -> None:
    written = writers.write_cifar10(tmp_path, n_train=60, n_test=20)
    arrays, classes = formats.read_cifar10(tmp_path)
    for train, split in ((True, "train"), (False, "test")):
        tv = torchvision.datasets.CIFAR10(str(tmp_path), train=train, download=False)
        np.testing.assert_array_equal(arrays[f"x_{split}"], tv.data)
        np.testing.assert_array_equal(arrays[f"y_{split}"], np.asarray(tv.targets))
        np.testing.assert_array_equal(arrays[f"x_{split}"], written[f"x_{split}"])
        assert arrays[f"x_{split}"].dtype == np.uint8
        assert arrays[f"y_{split}"].dtype == np.int64
    assert classes == tv.classes


def test_cifar100_matches_torchvision(tmp_path: Path, writers, no_md5_check) -> None:
    writers.write_cifar100(tmp_path, list(CIFAR100_CLASSES), n_train=120, n_test=40)
    arrays, classes = formats.read_cifar100(tmp_path)
    tv = torchvision.datasets.CIFAR100(str(tmp_path), train=True, download=False)
    np.testing.assert_array_equal(arrays["x_train"], tv.data)
    np.testing.assert_array_equal(arrays["y_train"], np.asarray(tv.targets))
    assert classes == tv.classes == list(CIFAR100_CLASSES)


def test_svhn_matches_torchvision_and_maps_10_to_0(tmp_path: Path, writers, no_md5_check) -> None:
    written = writers.write_svhn(tmp_path, n=30)
    x, y = formats.read_svhn_mat(tmp_path / "test_32x32.mat")
    tv = torchvision.datasets.SVHN(str(tmp_path), split="test", download=False)
    np.testing.assert_array_equal(x, tv.data.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(y, tv.labels)
    np.testing.assert_array_equal(x, written["x_test"])
    assert set(y[written["y_file"] == 10]) == {0}
    assert y.min() == 0 and y.max() == 9


def test_svhn_bad_shapes_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "test_32x32.mat"
    scipy.io.savemat(str(path), {"X": np.zeros((28, 28, 3, 4), np.uint8), "y": np.ones((4, 1))})
    with pytest.raises(formats.DataFormatError, match=r"'X' must be uint8 \(32, 32, 3, N\)"):
        formats.read_svhn_mat(path)
    scipy.io.savemat(str(path), {"images": np.zeros((32, 32, 3, 4), np.uint8)})
    with pytest.raises(formats.DataFormatError, match="must hold arrays 'X' and 'y'"):
        formats.read_svhn_mat(path)


def test_cifar_pickle_missing_field(tmp_path: Path, writers) -> None:
    import pickle

    writers.write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    with open(batch, "wb") as f:
        pickle.dump({"data": np.zeros((2, 3072), np.uint8)}, f, protocol=2)
    with pytest.raises(formats.DataFormatError, match="has no 'labels' entry"):
        formats.read_cifar10(tmp_path)
