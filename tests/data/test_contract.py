"""The dataset, OOD-set and shift-suite contracts, checked for every registered one (new ones are
picked up).

A dataset builds from a ``<name>.npz`` under its root (the format every built-in reads) and
fails with one :class:`DataNotFoundError` when nothing is there and downloads are off. An OOD set
gives uint8 NHWC 32x32 images with its provenance. A shift suite names its dataset and gives
uint8 cells over a test split, with a JSON source.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from calibench import create_dataset, create_ood, get_registry
from calibench.errors import DataNotFoundError

DATASETS = list(get_registry("datasets").entries())
OOD_SETS = list(get_registry("ood").entries())
SHIFT_SUITES = list(get_registry("shift").entries())


def _check_images(x: torch.Tensor) -> None:
    assert x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1:] == (32, 32, 3)


PARAMETERS = {
    "datasets": {"root", "download", "val_size", "split_seed"},
    "ood": {"root", "download", "like", "seed"},
    "shift": {"test_x", "test_y", "root", "seed", "max_images", "download"},
}


@pytest.mark.parametrize(
    ("kind", "name"),
    [("datasets", n) for n in DATASETS]
    + [("ood", n) for n in OOD_SETS]
    + [("shift", n) for n in SHIFT_SUITES],
)
def test_is_documented_and_takes_the_contract_parameters(kind: str, name: str) -> None:
    entry = get_registry(kind).get(name)
    assert entry.summary and entry.reference
    assert PARAMETERS[kind] <= set(entry.parameters)


@pytest.mark.parametrize("name", DATASETS)
def test_dataset_missing_is_one_clear_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(DataNotFoundError, match=str(tmp_path)):
        create_dataset(name, root=str(tmp_path), download=False)


@pytest.mark.parametrize("name", DATASETS)
def test_dataset_splits(tmp_path: Path, writers, name: str) -> None:
    k = 100 if name == "cifar100" else 10
    writers.write_npz(tmp_path / f"{name}.npz", n_train=3 * k, n_test=k, k=k)
    ds = create_dataset(name, root=str(tmp_path), download=False, val_size=k)
    assert ds.name == name and ds.num_classes == len(ds.classes)
    assert len(ds.mean) == 3 and len(ds.std) == 3 and min(ds.std) > 0
    assert (len(ds.train), len(ds.val), len(ds.test)) == (2 * k, k, k)
    for split in (ds.train, ds.val, ds.test):
        _check_images(split.x)
        assert split.y.dtype == torch.int64 and split.y.shape == (len(split),)
        assert int(split.y.min()) >= 0 and int(split.y.max()) < ds.num_classes
    assert ds.provenance["sizes"] == {"train": 2 * k, "val": k, "test": k}


@pytest.mark.parametrize("name", OOD_SETS)
def test_ood_set_images(tmp_path: Path, writers, name: str) -> None:
    writers.write_svhn(tmp_path, n=20)
    np.savez(tmp_path / f"{name}.npz", x_test=np.zeros((20, 32, 32, 3), np.uint8))
    ood = create_ood(name, root=str(tmp_path), download=False, seed=1)
    assert ood.name == name and len(ood) > 0
    _check_images(ood.x)
    assert isinstance(ood.provenance, dict) and ood.provenance


@pytest.mark.parametrize("name", SHIFT_SUITES)
def test_shift_suite_cells(tmp_path: Path, name: str) -> None:
    entry = get_registry("shift").get(name)
    num_classes = {"cifar10": 10, "cifar100": 100}.get(entry.metadata["dataset"], 10)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 256, size=(2 * num_classes, 32, 32, 3), dtype=np.uint8))
    y = torch.arange(2 * num_classes) % num_classes
    suite = entry.create(test_x=x, test_y=y, root=str(tmp_path), max_images=num_classes)
    assert suite.dataset == entry.metadata["dataset"]
    assert json.loads(json.dumps(suite.source)) == suite.source
    cell = next(iter(suite.cells()))
    _check_images(cell.x)
    assert cell.x.shape[0] == len(cell.y) == num_classes
