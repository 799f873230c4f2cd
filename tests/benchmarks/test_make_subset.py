"""benchmarks/make_subset.py: the carried CIFAR-10 subset."""

from __future__ import annotations

import make_subset as ms
import numpy as np
import pytest

from calibench.errors import UsageError


@pytest.fixture
def source(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8),
        "y_train": np.arange(50, dtype=np.int64) % 10,
        "x_test": rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
        "y_test": np.arange(20, dtype=np.int64) % 10,
    }
    np.savez(tmp_path / "cifar10.npz", **arrays)
    return tmp_path / "cifar10.npz", arrays


def test_subset_holds_the_first_rows(source, tmp_path) -> None:
    path, arrays = source
    out = ms.make_subset(path, tmp_path / "carry" / "cifar10.npz", n_train=30, n_test=7)
    with np.load(out) as f:
        assert sorted(f.keys()) == sorted(ms.KEYS)
        assert np.array_equal(f["x_train"], arrays["x_train"][:30])
        assert np.array_equal(f["y_test"], arrays["y_test"][:7])
    assert not list(out.parent.glob("*.tmp*"))


def test_refusals(source, tmp_path) -> None:
    path, _ = source
    with pytest.raises(UsageError, match="MiB"):
        ms.make_subset(path, tmp_path / "o.npz", n_train=50, n_test=20, max_mib=0.1)
    with pytest.raises(UsageError, match="asked for 51"):
        ms.make_subset(path, tmp_path / "o.npz", n_train=51, n_test=1)
    with pytest.raises(UsageError, match="no CIFAR-10 npz"):
        ms.make_subset(tmp_path / "missing.npz", tmp_path / "o.npz")
    assert not (tmp_path / "o.npz").exists()


def test_default_subset_fits_the_carry_limit() -> None:
    assert (14_000 + 2_000) * 32 * 32 * 3 / 2**20 < 48
