"""OOD sets: SVHN from its official .mat, seeded noise sets of the right size and distribution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

from calibench import create_dataset, create_ood, get_registry
from calibench.data.ood import DEFAULT_NOISE_COUNT, OODSet
from calibench.errors import DataNotFoundError, UsageError


def test_svhn_from_official_mat(tmp_path: Path, writers) -> None:
    written = writers.write_svhn(tmp_path, n=40)
    ood = create_ood("svhn", root=str(tmp_path), download=False)
    assert isinstance(ood, OODSet) and ood.name == "svhn" and len(ood) == 40
    np.testing.assert_array_equal(ood.x.numpy(), written["x_test"])
    assert ood.y is not None
    np.testing.assert_array_equal(ood.y.numpy(), written["y_file"] % 10)
    assert ood.provenance["source"] == "torchvision-format"


def test_svhn_from_npz(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "svhn.npz", x_test=x, y_test=np.arange(7))
    ood = create_ood("svhn", root=str(tmp_path), download=False)
    assert ood.provenance["source"] == "npz"
    np.testing.assert_array_equal(ood.x.numpy(), x)


def test_svhn_missing_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match=r"test_32x32\.mat"):
        create_ood("svhn", root=str(tmp_path))


@pytest.mark.parametrize("name", ["gaussian", "uniform"])
def test_noise_is_seeded_and_shaped(name: str) -> None:
    a = create_ood(name, seed=3)
    b = create_ood(name, seed=3)
    c = create_ood(name, seed=4)
    assert a.x.shape == (DEFAULT_NOISE_COUNT, 32, 32, 3) and a.x.dtype == torch.uint8
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    assert a.provenance == {**a.provenance, "source": "synthetic", "seed": 3, "size": 10_000}


@pytest.mark.parametrize("name", ["gaussian", "uniform"])
def test_noise_matches_like_test_size(tmp_path: Path, writers, name: str) -> None:
    writers.write_npz(tmp_path / "cifar10.npz", n_train=50, n_test=17)
    like = create_dataset("cifar10", root=str(tmp_path), download=False, val_size=0)
    ood = create_ood(name, like=like)
    assert ood.x.shape == (17, 32, 32, 3) and ood.provenance["like"] == "cifar10"


def test_noise_distributions() -> None:
    g = create_ood("gaussian").x.double() / 255
    # clip(N(0.5, 0.25^2), 0, 1): mean 0.5, about 4.55% of pixels clipped to 0 or 1.
    assert abs(g.mean().item() - 0.5) < 0.01
    clipped = ((g == 0) | (g == 1)).double().mean().item()
    assert 0.040 < clipped < 0.051
    inside = scipy.stats.truncnorm(-2, 2, loc=0.5, scale=0.25)
    assert abs(g[(g > 0) & (g < 1)].std().item() - inside.std()) < 0.003
    u = create_ood("uniform").x.long()
    counts = torch.bincount(u.flatten(), minlength=256).double()
    assert counts.min() > 0.9 * counts.mean() and counts.max() < 1.1 * counts.mean()


def test_noise_rejects_bad_arguments() -> None:
    with pytest.raises(UsageError, match="seed"):
        create_ood("gaussian", seed=-1)
    with pytest.raises(UsageError, match="like must be an ImageDataset"):
        create_ood("uniform", like="cifar10")


def test_ood_registry_signature() -> None:
    for name in ("svhn", "gaussian", "uniform"):
        entry = get_registry("ood").get(name)
        assert entry.defaults == {"root": None, "download": True, "like": None, "seed": 0}
        assert entry.reference
