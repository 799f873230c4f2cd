"""Shift suites: official files (layout, labels, download), generated (determinism), the subset."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from calibench import get_registry
from calibench.cli import main
from calibench.data import CORRUPTIONS, SEVERITIES, ShiftSuite, load_shift_suite, sources
from calibench.errors import DataFormatError, DataNotFoundError, UnknownNameError, UsageError

REPO = Path(__file__).resolve().parents[2]
N = 30  # test images of the fixtures: 3 per class


def _test_split(n: int = N, k: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    y = rng.permutation(np.arange(n) % k).astype(np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


def _position(corruption: str, writers) -> int:
    return writers.CIFAR_C_CORRUPTIONS.index(corruption)


def _digest(suite: ShiftSuite) -> str:
    h = hashlib.sha256()
    for cell in suite.cells():
        h.update(f"{cell.corruption}/{cell.severity}".encode())
        h.update(cell.x.numpy().tobytes())
        h.update(cell.y.numpy().tobytes())
    return h.hexdigest()


# -- official files -------------------------------------------------------------------------------
@pytest.mark.parametrize("max_images", [None, 10])
def test_official_layout_severity_slicing_and_labels(tmp_path: Path, writers, max_images) -> None:
    x, y = _test_split()
    writers.write_cifar_c(tmp_path, y.numpy())
    suite = load_shift_suite("cifar10-c", root=tmp_path, test_x=x, test_y=y, max_images=max_images)
    assert suite.name == "cifar10-c" and suite.dataset == "cifar10" and not suite.generated
    assert suite.corruptions == CORRUPTIONS and suite.severities == SEVERITIES
    expected_n = N if max_images is None else max_images
    assert suite.max_images == max_images and len(suite.indices) == expected_n
    cells = list(suite.cells())
    assert [(c.corruption, c.severity) for c in cells] == [
        (c, s) for c in CORRUPTIONS for s in SEVERITIES
    ]
    for cell in cells:
        assert cell.x.dtype == torch.uint8 and cell.x.shape == (expected_n, 32, 32, 3)
        pixels = cell.x.numpy()[:, 0, 0, :]  # (corruption position, severity, test index)
        assert (pixels[:, 0] == _position(cell.corruption, writers)).all()
        assert (pixels[:, 1] == cell.severity).all()
        np.testing.assert_array_equal(pixels[:, 2], suite.indices)
        np.testing.assert_array_equal(cell.y.numpy(), y.numpy()[suite.indices])
        assert cell.y.dtype == torch.int64


def test_official_source_records_hashes_not_paths(tmp_path: Path, writers) -> None:
    x, y = _test_split()
    folder = writers.write_cifar_c(tmp_path, y.numpy())
    suite = load_shift_suite("cifar10-c", root=tmp_path, test_x=x, test_y=y)
    source = suite.source
    assert source["kind"] == "official" and source["how"] == "found"
    assert source["root"] == "CIFAR-10-C"
    assert set(source["files"]) == {f"{c}.npy" for c in CORRUPTIONS} | {"labels.npy"}
    for name, sha in source["files"].items():
        assert sha == hashlib.sha256((folder / name).read_bytes()).hexdigest()
    # fixtures are not the released files: every md5 differs from the published one
    assert source["md5_mismatch"] == sorted(source["files"])
    assert str(tmp_path) not in json.dumps(source)


def test_official_labels_must_match_the_test_split(tmp_path: Path, writers) -> None:
    x, y = _test_split()
    folder = writers.write_cifar_c(tmp_path, y.numpy())
    labels = np.load(folder / "labels.npy")
    labels[2 * N + 7] = (labels[2 * N + 7] + 1) % 10
    np.save(folder / "labels.npy", labels)
    with pytest.raises(DataFormatError, match=r"1 of 150 rows \(first: row 67, severity 3"):
        load_shift_suite("cifar10-c", root=tmp_path, test_x=x, test_y=y)


def test_official_files_of_another_size_are_refused(tmp_path: Path, writers) -> None:
    x, y = _test_split()
    writers.write_cifar_c(tmp_path, y.numpy())
    with pytest.raises(DataFormatError, match=r"must be uint8 \(100, 32, 32, 3\).*got uint8 \(150"):
        load_shift_suite("cifar10-c", root=tmp_path, test_x=x[:20], test_y=y[:20])


def test_corrupt_and_unreadable_files_are_clear_errors(tmp_path: Path, writers) -> None:
    x, y = _test_split()
    folder = writers.write_cifar_c(tmp_path, y.numpy())
    np.save(folder / "fog.npy", np.zeros((5 * N, 32, 32), np.uint8))
    with pytest.raises(DataFormatError, match=r"fog.npy must be uint8 \(150, 32, 32, 3\)"):
        load_shift_suite("cifar10-c", root=tmp_path, test_x=x, test_y=y)
    (folder / "fog.npy").write_bytes(b"not a numpy file")
    with pytest.raises(DataFormatError, match=r"fog.npy is not a readable .npy file"):
        load_shift_suite("cifar10-c", root=tmp_path, test_x=x, test_y=y)


def test_partial_official_folder_names_the_missing_files(tmp_path: Path, writers) -> None:
    x, y = _test_split()
    folder = writers.write_cifar_c(tmp_path, y.numpy())
    (folder / "snow.npy").unlink()
    (folder / "labels.npy").unlink()
    with pytest.raises(DataNotFoundError, match=r"missing snow.npy, labels.npy.*zenodo"):
        load_shift_suite("cifar10-c", root=tmp_path, test_x=x, test_y=y)


# -- download -------------------------------------------------------------------------------------
class _FakeResponse(io.BytesIO):
    def __init__(self, url: str, payload: bytes) -> None:
        super().__init__(payload)
        self.url = url
        self.length = len(payload)


def _serve(monkeypatch: pytest.MonkeyPatch, payload: bytes) -> list[str]:
    """Answer every urllib request with ``payload``; return the URLs asked for."""
    asked: list[str] = []

    def urlopen(request, *args, **kwargs):
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        asked.append(url)
        return _FakeResponse(url, payload)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return asked


def _archive_bytes(tmp_path: Path, writers, y: np.ndarray, folder: str = "CIFAR-10-C") -> bytes:
    staging = tmp_path / "staging"
    writers.write_cifar_c(staging, y, folder)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(staging / folder, arcname=folder)
    return buffer.getvalue()


def test_download_fetches_checks_and_extracts_the_official_archive(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, writers
) -> None:
    name, k = "cifar10-c", 10
    x, y = _test_split()
    payload = _archive_bytes(tmp_path, writers, y.numpy())
    official = sources.SHIFT_ARCHIVES[name]
    monkeypatch.setitem(
        sources.SHIFT_ARCHIVES,
        name,
        sources.Archive(official.url, official.filename, hashlib.md5(payload).hexdigest()),
    )
    monkeypatch.setitem(
        sources.DOWNLOADERS, name, lambda root: sources._download_archive(name, root)
    )
    asked = _serve(monkeypatch, payload)
    root = tmp_path / "data"
    suite = load_shift_suite(name, root=root, test_x=x, test_y=y, download=True, max_images=k)
    assert asked and set(asked) == {official.url}
    assert official.url == "https://zenodo.org/record/2535967/files/CIFAR-10-C.tar"
    assert suite.source["kind"] == "official" and suite.source["how"] == "download"
    assert suite.source["archive"]["url"] == official.url
    assert not (root / official.filename).exists(), "the tar is deleted after extraction"
    cell = suite.cell("zoom_blur", 4)
    assert (cell.x.numpy()[:, 0, 0, 1] == 4).all()
    # the next load finds the extracted files without downloading
    requests = len(asked)
    again = load_shift_suite(name, root=root, test_x=x, test_y=y, download=True, max_images=k)
    assert again.source["how"] == "found" and len(asked) == requests


def test_failed_download_falls_back_to_generated_and_says_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, writers
) -> None:
    x, y = _test_split()
    payload = _archive_bytes(tmp_path, writers, y.numpy())  # its md5 is not the official one
    monkeypatch.setitem(
        sources.DOWNLOADERS, "cifar10-c", lambda root: sources._download_archive("cifar10-c", root)
    )
    _serve(monkeypatch, payload)
    with pytest.warns(UserWarning, match="not the official images"):
        suite = load_shift_suite(
            "cifar10-c", root=tmp_path / "data", test_x=x, test_y=y, download=True, max_images=10
        )
    assert suite.generated and suite.source["download"].startswith("download failed: RuntimeError")
    assert not (tmp_path / "data" / "CIFAR-10-C").exists()


def test_no_download_without_asking(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    asked = _serve(monkeypatch, b"")
    x, y = _test_split()
    suite = load_shift_suite("cifar10-c", root=tmp_path, test_x=x, test_y=y, max_images=10)
    assert suite.generated and asked == [] and "download" not in suite.source


# -- generated --------------------------------------------------------------------------------------
def test_generated_suite_is_marked_and_documented(tmp_path: Path) -> None:
    x, y = _test_split()
    suite = load_shift_suite("cifar10-c", root=tmp_path, test_x=x, test_y=y, seed=3, max_images=10)
    source = suite.source
    assert suite.generated and source["kind"] == "generated" and source["seed"] == 3
    assert "not the official" in source["note"] and "make_cifar_c.py" in source["generator"]
    assert set(source["omitted"]) == {"frost"} and "frost" not in suite.corruptions
    assert suite.corruptions == tuple(c for c in CORRUPTIONS if c != "frost")
    assert set(source["parameters"]) == set(suite.corruptions)
    assert source["parameters"]["gaussian_noise"] == [0.04, 0.06, 0.08, 0.09, 0.10]
    assert json.loads(json.dumps(source)) == source, "the source is plain JSON"
    with pytest.raises(UsageError, match=r"no corruption 'frost' .*omitted: blends crops"):
        suite.cell("frost", 1)
    with pytest.raises(UsageError, match="severity must be one of"):
        suite.cell("fog", 6)


_CHILD = """
import hashlib, sys
import numpy as np, torch
from calibench.data import load_shift_suite
rng = np.random.default_rng(0)
x = torch.from_numpy(rng.integers(0, 256, size=(30, 32, 32, 3), dtype=np.uint8))
y = torch.from_numpy(rng.permutation(np.arange(30) % 10).astype(np.int64))
suite = load_shift_suite("cifar10-c", root=sys.argv[1], test_x=x, test_y=y, seed=5, max_images=20)
h = hashlib.sha256()
for cell in suite.cells():
    h.update(f"{cell.corruption}/{cell.severity}".encode())
    h.update(cell.x.numpy().tobytes())
    h.update(cell.y.numpy().tobytes())
print(h.hexdigest())
"""


def test_generated_suite_is_the_same_bytes_in_another_process(tmp_path: Path) -> None:
    x, y = _test_split()
    here = load_shift_suite("cifar10-c", root=tmp_path, test_x=x, test_y=y, seed=5, max_images=20)
    env = {**os.environ, "PYTHONPATH": str(REPO), "CALIBENCH_DISABLE_PLUGINS": "1"}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path)],
        capture_output=True, text=True, check=True, env=env, cwd=REPO,
    )  # fmt: skip
    assert child.stdout.strip() == _digest(here)


def test_generated_cells_depend_on_the_seed_only(tmp_path: Path) -> None:
    x, y = _test_split()

    def load(seed: int) -> ShiftSuite:
        return load_shift_suite("cifar10-c", root=tmp_path, test_x=x, test_y=y, seed=seed)

    a, b = load(1), load(1)
    for corruption in ("gaussian_noise", "glass_blur", "snow", "fog", "elastic_transform"):
        one, two = a.cell(corruption, 3).x, b.cell(corruption, 3).x
        assert torch.equal(one, two)
        assert not torch.equal(one, load(2).cell(corruption, 3).x)
    # deterministic corruptions do not depend on the seed at all
    assert torch.equal(a.cell("contrast", 2).x, load(2).cell("contrast", 2).x)


# -- the subset ----------------------------------------------------------------------------------------
def test_cap_is_a_seeded_class_stratified_subset_shared_by_every_cell(tmp_path: Path) -> None:
    x, y = _test_split(n=200)

    def load(seed: int, cap: int | None) -> ShiftSuite:
        return load_shift_suite(
            "cifar10-c", root=tmp_path, test_x=x, test_y=y, seed=seed, max_images=cap
        )

    suite = load(0, 50)
    assert suite.max_images == 50 and suite.images_per_cell == 50
    assert (np.diff(suite.indices) > 0).all(), "sorted, no repeats"
    assert np.bincount(y.numpy()[suite.indices], minlength=10).tolist() == [5] * 10
    np.testing.assert_array_equal(load(0, 50).indices, suite.indices)
    assert not np.array_equal(load(1, 50).indices, suite.indices)
    for cell in [suite.cell("brightness", 1), suite.cell("pixelate", 5)]:
        np.testing.assert_array_equal(cell.y.numpy(), y.numpy()[suite.indices])
    # the brightness of each kept image is the brightness of that very test image
    brightened = load(0, None).cell("brightness", 1).x.numpy()
    np.testing.assert_array_equal(suite.cell("brightness", 1).x.numpy(), brightened[suite.indices])
    whole = load(0, 500)
    assert whole.max_images is None and whole.indices.tolist() == list(range(200))


# -- errors and registry ----------------------------------------------------------------------------
def test_bad_inputs_are_one_clear_error(tmp_path: Path) -> None:
    x, y = _test_split()
    with pytest.raises(UnknownNameError, match="Did you mean: cifar10-c"):
        load_shift_suite("cifar10c", root=tmp_path, test_x=x, test_y=y)
    with pytest.raises(UsageError, match=r"test_x must be uint8 \(N, 32, 32, 3\)"):
        load_shift_suite("cifar10-c", root=tmp_path, test_x=x.permute(0, 3, 1, 2), test_y=y)
    with pytest.raises(UsageError, match=r"test_y must be integer labels \(30,\)"):
        load_shift_suite("cifar10-c", root=tmp_path, test_x=x, test_y=y[:5])
    with pytest.raises(UsageError, match="built on cifar10 \\(10 classes\\)"):
        load_shift_suite("cifar10-c", root=tmp_path, test_x=x, test_y=y + 10)
    with pytest.raises(UsageError, match="max_images must be a positive integer"):
        load_shift_suite("cifar10-c", root=tmp_path, test_x=x, test_y=y, max_images=0)
    with pytest.raises(UsageError, match="seed must be a non-negative integer"):
        load_shift_suite("cifar10-c", root=tmp_path, test_x=x, test_y=y, seed=-1)
    with pytest.raises(UsageError, match=r"must be a torch\.Tensor or numpy array"):
        load_shift_suite("cifar10-c", root=tmp_path, test_x=x.tolist(), test_y=y)


def test_cifar100_c_takes_cifar100_labels(tmp_path: Path) -> None:
    x, y = _test_split(n=200, k=100)
    suite = load_shift_suite("cifar100-c", root=tmp_path, test_x=x, test_y=y, max_images=100)
    assert suite.dataset == "cifar100" and suite.indices.size == 100
    assert np.bincount(suite.y.numpy(), minlength=100).tolist() == [1] * 100


def test_calibench_list_shows_the_suites_with_their_dataset(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["list", "shift", "--format", "json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"cifar10-c", "cifar100-c"}
    assert {n: r["metadata"]["dataset"] for n, r in rows.items()} == {
        "cifar10-c": "cifar10",
        "cifar100-c": "cifar100",
    }
    assert all("Hendrycks & Dietterich" in r["reference"] for r in rows.values())
    assert get_registry("shift").get("cifar10-c").required == ("test_x", "test_y")


def test_from_arrays_builds_a_suite_for_tests() -> None:
    y = torch.arange(4) % 2
    images = {(c, s): np.full((4, 32, 32, 3), s, np.uint8) for c in ("fog", "snow") for s in (1, 2)}
    suite = ShiftSuite.from_arrays("fake", "cifar10", images, y, {"kind": "generated"})
    assert suite.corruptions == ("snow", "fog") and suite.severities == (1, 2)
    assert [int(c.x[0, 0, 0, 0]) for c in suite.cells()] == [1, 2, 1, 2]
    del images[("fog", 2)]
    with pytest.raises(UsageError, match="lacks cells"):
        ShiftSuite.from_arrays("fake", "cifar10", images, y, {"kind": "generated"})
