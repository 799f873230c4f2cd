"""Where dataset files come from, and the record of how they were found.

The data root is, in order: the explicit ``root`` argument (``--data-root``), the environment
variable ``CALIBENCH_DATA``, or ``<user cache dir>/calibench/data`` (platformdirs). Inside it a
dataset is looked up in this order:

1. the official torchvision on-disk format (``cifar-10-batches-py/``, ``cifar-100-python/``,
   ``test_32x32.mat``);
2. ``<name>.npz`` with keys ``x_train, y_train, x_test, y_test`` (uint8 NHWC images);
3. a download through torchvision's download helpers, only if ``download=True``.

If all fail, one :class:`~calibench.errors.DataNotFoundError` lists the files looked for and how
to provide them. Every load returns a ``provenance`` dict for the run record: the source used,
the root, and each file's path, size and sha256 (hashing CIFAR takes about 0.1 s).

The official CIFAR-10-C / CIFAR-100-C archives (:data:`SHIFT_ARCHIVES`) are fetched through
:data:`DOWNLOADERS` too; :mod:`calibench.data.shift` looks for their files.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibench.data import formats
from calibench.errors import DataNotFoundError, UsageError

DATA_ENV = "CALIBENCH_DATA"

__all__ = [
    "DATA_ENV",
    "DOWNLOADERS",
    "SHIFT_ARCHIVES",
    "Archive",
    "RawData",
    "default_data_root",
    "file_info",
    "load_cifar",
    "load_svhn_test",
    "resolve_data_root",
]


def default_data_root() -> Path:
    """``<user cache dir>/calibench/data`` (platformdirs)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("calibench")) / "data"


def resolve_data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The data folder: ``root`` if given, else ``$CALIBENCH_DATA``, else the user cache folder."""
    if root is None or str(root).strip() == "":
        env = os.environ.get(DATA_ENV, "").strip()
        path = Path(env).expanduser() if env else default_data_root()
    else:
        path = Path(root).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"data root {path} is a file; pass a folder (--data-root or ${DATA_ENV})")
    return path


@dataclass(frozen=True)
class RawData:
    """Arrays read from disk (``x_*`` uint8 NHWC, ``y_*`` int64), class names and provenance."""

    arrays: dict[str, np.ndarray]
    classes: list[str] | None
    provenance: dict[str, Any] = field(default_factory=dict)


_HASHES: dict[tuple[str, int, int], str] = {}


def file_info(path: Path, root: Path | None = None) -> dict[str, Any]:
    """``{"path", "bytes", "sha256"}`` of a file; the hash is cached per (path, size, mtime).

    ``path`` is given relative to ``root`` (the data root), so a record never carries the
    machine's absolute paths; without ``root``, just the file name.
    """
    path = path.resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    shown = path.relative_to(root.resolve()).as_posix() if root is not None else path.name
    return {"path": shown, "bytes": st.st_size, "sha256": _HASHES[key]}


def _download_cifar(name: str, root: Path) -> None:
    from torchvision.datasets import CIFAR10, CIFAR100
    from torchvision.datasets.utils import download_and_extract_archive

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)


def _download_svhn(root: Path) -> None:
    from torchvision.datasets import SVHN
    from torchvision.datasets.utils import download_url

    url, filename, md5 = SVHN.split_list["test"]
    download_url(url, str(root), filename=filename, md5=md5)


@dataclass(frozen=True)
class Archive:
    """An official archive: where it is, the name it is saved under, its md5."""

    url: str
    filename: str
    md5: str


# The official CIFAR-10-C / CIFAR-100-C tar files (Hendrycks & Dietterich 2019) on Zenodo,
# records 2535967 and 3555552; each extracts to CIFAR-10-C/ or CIFAR-100-C/ (19 corruption .npy
# files and labels.npy). The md5s are those torch-uncertainty's CIFAR10C / CIFAR100C check.
SHIFT_ARCHIVES: dict[str, Archive] = {
    "cifar10-c": Archive(
        "https://zenodo.org/record/2535967/files/CIFAR-10-C.tar",
        "CIFAR-10-C.tar",
        "56bf5dcef84df0e2308c6dcbcbbd8499",
    ),
    "cifar100-c": Archive(
        "https://zenodo.org/record/3555552/files/CIFAR-100-C.tar",
        "CIFAR-100-C.tar",
        "11f0ed0f1191edbf9fa23466ae6021d3",
    ),
}


def _download_archive(name: str, root: Path) -> None:
    """Download ``SHIFT_ARCHIVES[name]`` into ``root``, check its md5, extract it, delete the tar."""
    from torchvision.datasets.utils import download_and_extract_archive

    archive = SHIFT_ARCHIVES[name]
    download_and_extract_archive(
        archive.url, str(root), filename=archive.filename, md5=archive.md5, remove_finished=True
    )


# name -> function(root) that fetches the official files into root. Tests replace entries.
DOWNLOADERS: dict[str, Callable[[Path], None]] = {
    "cifar10": lambda root: _download_cifar("cifar10", root),
    "cifar100": lambda root: _download_cifar("cifar100", root),
    "svhn": _download_svhn,
    "cifar10-c": lambda root: _download_archive("cifar10-c", root),
    "cifar100-c": lambda root: _download_archive("cifar100-c", root),
}


@dataclass(frozen=True)
class _Layout:
    name: str
    official_files: Callable[[Path], list[Path]]
    read_official: Callable[[Path], tuple[dict[str, np.ndarray], list[str] | None]]
    npz_keys: tuple[str, ...]
    how_to: str


def _lookup(layout: _Layout, root: str | os.PathLike[str] | None, download: bool) -> RawData:
    data_root = resolve_data_root(root)
    official = layout.official_files(data_root)
    npz_path = data_root / f"{layout.name}.npz"

    def found(
        source: str, files: list[Path], arrays: dict[str, np.ndarray], classes: Any
    ) -> RawData:
        provenance = {
            "dataset": layout.name,
            "source": source,
            "files": [file_info(p, data_root) for p in files],
        }
        return RawData(arrays, classes, provenance)

    if all(p.is_file() for p in official):
        arrays, classes = layout.read_official(data_root)
        return found("torchvision-format", official, arrays, classes)
    if npz_path.is_file():
        return found("npz", [npz_path], formats.read_npz(npz_path, layout.npz_keys), None)
    download_note = "download=False"
    if download:
        try:
            data_root.mkdir(parents=True, exist_ok=True)
            DOWNLOADERS[layout.name](data_root)
        except Exception as exc:  # no network, server down, bad checksum, read-only folder
            download_note = f"download failed: {type(exc).__name__}: {exc}"
        else:
            missing = [p for p in official if not p.is_file()]
            if not missing:
                arrays, classes = layout.read_official(data_root)
                return found("download", official, arrays, classes)
            download_note = f"download left out {', '.join(str(p) for p in missing)}"
    looked_for = ", ".join(str(p) for p in [*official, npz_path])
    raise DataNotFoundError(
        f"dataset '{layout.name}' not found in data root {data_root} ({download_note}). "
        f"Looked for: {looked_for}. "
        f"To provide it: {layout.how_to}, or {npz_path.name} with keys "
        f"{', '.join(layout.npz_keys)} (uint8 NHWC images, int labels); or point --data-root / "
        f"${DATA_ENV} at a folder that has them; or rerun with downloads allowed on a machine "
        "with internet access."
    )


_CIFAR10 = _Layout(
    "cifar10",
    formats.cifar10_files,
    formats.read_cifar10,
    formats.NPZ_KEYS,
    "extract the official cifar-10-python.tar.gz there (giving cifar-10-batches-py/)",
)
_CIFAR100 = _Layout(
    "cifar100",
    formats.cifar100_files,
    formats.read_cifar100,
    formats.NPZ_KEYS,
    "extract the official cifar-100-python.tar.gz there (giving cifar-100-python/)",
)


def _svhn_files(root: Path) -> list[Path]:
    return [root / formats.SVHN_TEST_FILE]


def _read_svhn(root: Path) -> tuple[dict[str, np.ndarray], None]:
    x, y = formats.read_svhn_mat(root / formats.SVHN_TEST_FILE)
    return {"x_test": x, "y_test": y}, None


_SVHN = _Layout(
    "svhn",
    _svhn_files,
    _read_svhn,
    ("x_test", "y_test"),
    "put the official SVHN test_32x32.mat there",
)


def load_cifar(
    name: str, root: str | os.PathLike[str] | None = None, download: bool = True
) -> RawData:
    """Train and test arrays of ``cifar10`` or ``cifar100`` from the first source that has them."""
    layouts = {"cifar10": _CIFAR10, "cifar100": _CIFAR100}
    if name not in layouts:
        raise UsageError(f"unknown CIFAR variant {name!r}; expected one of {', '.join(layouts)}")
    return _lookup(layouts[name], root, download)


def load_svhn_test(root: str | os.PathLike[str] | None = None, download: bool = True) -> RawData:
    """The official SVHN test split (26,032 images), labels 0..9 with digit 0 as 0."""
    return _lookup(_SVHN, root, download)
