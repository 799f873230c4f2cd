"""Where data comes from: root resolution, lookup order, npz validation, one clear error."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from calibench.data import sources
from calibench.data.sources import load_cifar, load_svhn_test, resolve_data_root
from calibench.errors import DataFormatError, DataNotFoundError, UsageError


def test_root_argument_beats_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CALIBENCH_DATA", str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_root(None) == tmp_path / "env"


def test_default_root_is_user_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    import platformdirs

    monkeypatch.delenv("CALIBENCH_DATA", raising=False)
    expected = Path(platformdirs.user_cache_dir("calibench")) / "data"
    assert resolve_data_root(None) == expected


def test_root_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        resolve_data_root(f)


def test_official_format_is_preferred_over_npz(tmp_path: Path, writers) -> None:
    official = writers.write_cifar10(tmp_path, seed=1)
    writers.write_npz(tmp_path / "cifar10.npz", seed=2)
    raw = load_cifar("cifar10", tmp_path, download=False)
    assert raw.provenance["source"] == "torchvision-format"
    np.testing.assert_array_equal(raw.arrays["x_test"], official["x_test"])
    assert raw.classes == writers.CIFAR10_NAMES
    assert len(raw.provenance["files"]) == 7
    assert all(f["path"].startswith("cifar-10-batches-py/") for f in raw.provenance["files"])


def test_npz_used_when_no_official_files(tmp_path: Path, writers) -> None:
    written = writers.write_npz(tmp_path / "cifar10.npz")
    raw = load_cifar("cifar10", tmp_path, download=False)
    assert raw.provenance["source"] == "npz"
    for key, value in written.items():
        np.testing.assert_array_equal(raw.arrays[key], value)
    (info,) = raw.provenance["files"]
    digest = hashlib.sha256((tmp_path / "cifar10.npz").read_bytes()).hexdigest()
    assert info["sha256"] == digest
    assert info["bytes"] == (tmp_path / "cifar10.npz").stat().st_size
    assert info["path"] == "cifar10.npz", "paths are relative to the data root"


def test_env_root_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, writers) -> None:
    writers.write_npz(tmp_path / "cifar10.npz")
    monkeypatch.setenv("CALIBENCH_DATA", str(tmp_path))
    provenance = load_cifar("cifar10", None, download=False).provenance
    assert [f["path"] for f in provenance["files"]] == ["cifar10.npz"]
    assert str(tmp_path) not in str(provenance), "a record must not carry the machine's paths"


def test_missing_everything_names_files_and_remedy(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as info:
        load_cifar("cifar100", tmp_path, download=False)
    message = str(info.value)
    for name in ("cifar-100-python", "train", "meta", "cifar100.npz", "x_train", "--data-root"):
        assert name in message
    assert "download=False" in message


def test_failed_download_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="download failed: ConnectionError"):
        load_svhn_test(tmp_path, download=True)


def test_download_path_reads_downloaded_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, writers
) -> None:
    calls = []

    def fake_download(root: Path) -> None:
        calls.append(root)
        writers.write_svhn(root, n=20)

    monkeypatch.setitem(sources.DOWNLOADERS, "svhn", fake_download)
    raw = load_svhn_test(tmp_path / "new", download=True)
    assert calls == [tmp_path / "new"]
    assert raw.provenance["source"] == "download"
    assert raw.arrays["x_test"].shape == (20, 32, 32, 3)
    with pytest.raises(DataNotFoundError):
        load_svhn_test(tmp_path / "other", download=False)


def test_partial_official_folder_falls_back_to_npz(tmp_path: Path, writers) -> None:
    writers.write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    writers.write_npz(tmp_path / "cifar10.npz")
    assert load_cifar("cifar10", tmp_path, download=False).provenance["source"] == "npz"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("y_test"), "lacks key"),
        (lambda a: a.update(x_train=a["x_train"].astype(np.float32)), "x_train must be uint8"),
        (lambda a: a.update(x_test=a["x_test"][:, :16]), "x_test must be uint8"),
        (lambda a: a.update(x_test=a["x_test"].transpose(0, 3, 1, 2)), "NHWC"),
        (lambda a: a.update(y_train=a["y_train"][:-1]), "100 images but y_train has 99"),
        (lambda a: a.update(y_train=a["y_train"].astype(np.float64)), "integer vector"),
    ],
)
def test_malformed_npz_gives_clear_error(tmp_path: Path, writers, change, message) -> None:
    arrays = writers.write_npz(tmp_path / "cifar10.npz")
    change(arrays)
    np.savez(tmp_path / "cifar10.npz", **arrays)
    with pytest.raises(DataFormatError, match=message):
        load_cifar("cifar10", tmp_path, download=False)


def test_corrupt_npz_and_pickle_give_clear_errors(tmp_path: Path, writers) -> None:
    (tmp_path / "cifar10.npz").write_bytes(b"not a zip")
    with pytest.raises(DataFormatError, match=r"not a readable \.npz"):
        load_cifar("cifar10", tmp_path, download=False)
    writers.write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"garbage")
    with pytest.raises(DataFormatError, match="test_batch is not a readable CIFAR python pickle"):
        load_cifar("cifar10", tmp_path, download=False)


def test_unknown_cifar_variant(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cifar10, cifar100"):
        load_cifar("cifar1000", tmp_path)
