"""Distribution-shift suites: CIFAR-10-C and CIFAR-100-C. Importing this module registers them.

Hendrycks & Dietterich (ICLR 2019) corrupt the CIFAR test split with 15 corruptions (noise, blur,
weather, digital; :data:`CORRUPTIONS`, in their order) at 5 severities. A suite is one
class-stratified subset of the test split (:attr:`ShiftSuite.indices`, the same for every cell)
seen through every (corruption, severity) cell, labels from the test split.

Sources, in this order:

1. **official**: the released ``.npy`` files under the data root (see
   :func:`calibench.data.sources.resolve_data_root`), ``<root>/CIFAR-10-C/<corruption>.npy``
   (uint8 ``(5 n, 32, 32, 3)``, severity ``k`` in rows ``(k-1) n .. k n - 1``, ``n`` = 10,000
   test images) and ``labels.npy``; or, with ``download=True``, the official Zenodo archive
   (:data:`calibench.data.sources.SHIFT_ARCHIVES`, md5-checked) extracted there. The labels must
   equal the test split's, five times over. The record gets each file's sha256, and whether its
   md5 matches the published one.
2. **generated**: otherwise, the subset is corrupted here by :mod:`calibench.data.corruptions`,
   a port of Hendrycks's ``make_cifar_c.py`` with its CIFAR severity constants, deterministically
   from ``seed`` (same bytes in any process). ``frost`` is left out (it needs photographs not
   available offline), so a generated suite has 14 corruptions. Generated images are not the
   official ones: ``source["kind"] == "generated"`` says so, with the generator and its
   constants.

Nothing is cached: :meth:`ShiftSuite.cells` reads (official, memory-mapped) or generates each
cell when it is reached, so memory stays at one cell.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calibench.data import corruptions as _gen
from calibench.data.datasets import stratified_indices
from calibench.data.sources import DOWNLOADERS, SHIFT_ARCHIVES, resolve_data_root
from calibench.errors import DataFormatError, DataNotFoundError, UsageError
from calibench.registry import get_registry, register_shift

__all__ = [
    "CORRUPTIONS",
    "SEVERITIES",
    "ShiftCell",
    "ShiftSuite",
    "cifar10_c",
    "cifar100_c",
    "load_shift_suite",
]

CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog",
    "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

HENDRYCKS_2019 = (
    "Hendrycks & Dietterich, Benchmarking Neural Network Robustness to Common Corruptions and "
    "Perturbations, ICLR 2019"
)
LABELS_FILE = "labels.npy"

# md5 of each released file, as torch-uncertainty 0.13's CIFAR10C / CIFAR100C check them.
PUBLISHED_MD5: dict[str, dict[str, str]] = {
    "cifar10-c": {
        "gaussian_noise.npy": "ecaf8b9a2399ffeda7680934c33405fd",
        "shot_noise.npy": "3a7239bb118894f013d9bf1984be7f11",
        "impulse_noise.npy": "2090e01c83519ec51427e65116af6b1a",
        "defocus_blur.npy": "7d1322666342a0702b1957e92f6254bc",
        "glass_blur.npy": "7361fb4019269e02dbf6925f083e8629",
        "motion_blur.npy": "fffa5f852ff7ad299cfe8a7643f090f4",
        "zoom_blur.npy": "6ea8e63f1c5cdee1517533840641641b",
        "snow.npy": "bb238de8555123da9c282dea23bd6e55",
        "frost.npy": "31f6ab3bce1d9934abfb0cc13656f141",
        "fog.npy": "7b397314b5670f825465fbcd1f6e9ccd",
        "brightness.npy": "0a81ef75e0b523c3383219c330a85d48",
        "contrast.npy": "3c8262171c51307f916c30a3308235a8",
        "elastic_transform.npy": "9421657c6cd452429cf6ce96cc412b5f",
        "pixelate.npy": "0f14f7e2db14288304e1de10df16832f",
        "jpeg_compression.npy": "2b9cc4c864e0193bb64db8d7728f8187",
        "labels.npy": "c439b113295ed5254878798ffe28fd54",
    },
    "cifar100-c": {
        "gaussian_noise.npy": "ecc4d366eac432bdf25c024086f5e97d",
        "shot_noise.npy": "b0a1fa6e1e465a747c1b204b1914048a",
        "impulse_noise.npy": "3b3c210ddfa0b5cb918ff4537a429fef",
        "defocus_blur.npy": "d923e3d9c585a27f0956e2f2ad832564",
        "glass_blur.npy": "0bf384f38e5ccbf8dd479d9059b913e1",
        "motion_blur.npy": "732a7e2e54152ff97c742d4c388c5516",
        "zoom_blur.npy": "0204613400c034a81c4830d5df81cb82",
        "snow.npy": "0237be164583af146b7b144e73b43465",
        "frost.npy": "3a39c6823bdfaa0bf8b12fe7004b8117",
        "fog.npy": "4efc7ebd5e82b028bdbe13048e3ea564",
        "brightness.npy": "f22d7195aecd6abb541e27fca230c171",
        "contrast.npy": "322bb385f1d05154ee197ca16535f71e",
        "elastic_transform.npy": "a0792bd6581f6810878be71acedfc65a",
        "pixelate.npy": "96c00c60f144539e14cffb02ddbd0640",
        "jpeg_compression.npy": "c851b7f1324e1d2ffddeb76920576d11",
        "labels.npy": "bb4026e9ce52996b95f439544568cdb2",
    },
}


@dataclass(frozen=True)
class _Spec:
    name: str
    dataset: str
    folder: str
    num_classes: int


_SPECS = {
    "cifar10-c": _Spec("cifar10-c", "cifar10", "CIFAR-10-C", 10),
    "cifar100-c": _Spec("cifar100-c", "cifar100", "CIFAR-100-C", 100),
}


@dataclass(frozen=True)
class ShiftCell:
    """One (corruption, severity) cell: images ``x`` uint8 ``(N, 32, 32, 3)`` and labels ``y``."""

    corruption: str
    severity: int
    x: torch.Tensor
    y: torch.Tensor


@dataclass(frozen=True)
class ShiftSuite:
    """A grid of corrupted copies of one test subset; :meth:`cells` yields them.

    ``source`` (plain JSON) says where the images come from: ``kind`` ``"official"`` (with the
    files' sha256) or ``"generated"`` (generator, seed, constants, omitted corruptions).
    ``indices`` are the sorted test-split indices used in every cell, ``y`` their labels;
    ``max_images`` is the per-cell cap that was applied (None: the whole test split).
    """

    name: str
    dataset: str
    source: dict[str, Any]
    corruptions: tuple[str, ...]
    severities: tuple[int, ...]
    max_images: int | None
    indices: np.ndarray
    y: torch.Tensor
    _images: Callable[[str, int], np.ndarray] = field(repr=False, compare=False)

    @property
    def generated(self) -> bool:
        """True when the images were made here, not read from the official files."""
        return self.source.get("kind") == "generated"

    @property
    def images_per_cell(self) -> int:
        return len(self.indices)

    @property
    def num_cells(self) -> int:
        return len(self.corruptions) * len(self.severities)

    def cell(self, corruption: str, severity: int) -> ShiftCell:
        """The cell ``(corruption, severity)``, read or generated now."""
        if corruption not in self.corruptions:
            why = self.source.get("omitted", {}).get(corruption)
            detail = f" (omitted: {why})" if why else ""
            raise UsageError(
                f"{self.name} has no corruption {corruption!r}{detail}; "
                f"it has {', '.join(self.corruptions)}"
            )
        if severity not in self.severities:
            raise UsageError(
                f"{self.name}: severity must be one of {self.severities}, got {severity!r}"
            )
        x = np.ascontiguousarray(self._images(corruption, severity))
        return ShiftCell(corruption, severity, torch.from_numpy(x), self.y)

    def cells(self) -> Iterator[ShiftCell]:
        """Every cell, corruption-major, severity-minor (each read or generated when reached)."""
        for corruption in self.corruptions:
            for severity in self.severities:
                yield self.cell(corruption, severity)

    @classmethod
    def from_arrays(
        cls,
        name: str,
        dataset: str,
        images: Mapping[tuple[str, int], np.ndarray | torch.Tensor],
        y: np.ndarray | torch.Tensor,
        source: dict[str, Any],
        indices: np.ndarray | None = None,
        max_images: int | None = None,
    ) -> ShiftSuite:
        """A suite over given images ``{(corruption, severity): uint8 (N, 32, 32, 3)}`` (tests,
        plugins); corruptions and severities in :data:`CORRUPTIONS` / sorted order."""
        arrays = {k: _as_numpy(v, f"images[{k}]") for k, v in images.items()}
        labels = _as_numpy(y, "y").astype(np.int64)
        for key, x in arrays.items():
            if x.dtype != np.uint8 or x.shape != (len(labels), 32, 32, 3):
                raise UsageError(
                    f"images[{key}] must be uint8 ({len(labels)}, 32, 32, 3), "
                    f"got {x.dtype} {tuple(x.shape)}"
                )
        names = {c for c, _ in arrays}
        corruptions = tuple(c for c in CORRUPTIONS if c in names) + tuple(
            sorted(names - set(CORRUPTIONS))
        )
        severities = tuple(sorted({s for _, s in arrays}))
        missing = [(c, s) for c in corruptions for s in severities if (c, s) not in arrays]
        if missing:
            raise UsageError(f"images lacks cells {missing}: every corruption needs every severity")
        idx = np.arange(len(labels)) if indices is None else np.asarray(indices, dtype=np.int64)
        return cls(
            name, dataset, dict(source), corruptions, severities, max_images, idx,
            torch.from_numpy(labels), lambda c, s: arrays[(c, s)],
        )  # fmt: skip


# -- inputs -------------------------------------------------------------------------------------
def _as_numpy(value: Any, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise UsageError(f"{what} must be a torch.Tensor or numpy array, got {type(value).__name__}")


def _check_test_split(spec: _Spec, test_x: Any, test_y: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_numpy(test_x, "test_x"), _as_numpy(test_y, "test_y")
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3):
        raise UsageError(
            f"{spec.name}: test_x must be uint8 (N, 32, 32, 3) (the {spec.dataset} test split), "
            f"got {x.dtype} {tuple(x.shape)}"
        )
    if not np.issubdtype(y.dtype, np.integer) or y.shape != (len(x),):
        raise UsageError(
            f"{spec.name}: test_y must be integer labels ({len(x)},), got {y.dtype} {tuple(y.shape)}"
        )
    if len(y) == 0:
        raise UsageError(f"{spec.name}: the test split is empty")
    if y.min() < 0 or y.max() >= spec.num_classes:
        raise UsageError(
            f"{spec.name} is built on {spec.dataset} ({spec.num_classes} classes), but test_y has "
            f"labels in [{y.min()}, {y.max()}]"
        )
    return x, y.astype(np.int64)


def _check_options(seed: Any, max_images: Any) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed!r}")
    if max_images is not None and (
        not isinstance(max_images, int) or isinstance(max_images, bool) or max_images < 1
    ):
        raise UsageError(f"max_images must be a positive integer or None, got {max_images!r}")


def _subset(y: np.ndarray, seed: int, max_images: int | None) -> np.ndarray:
    """Sorted test indices: all of them, or ``max_images`` class-stratified ones drawn from
    ``seed`` (largest-remainder quotas, a seeded random choice within each class)."""
    if max_images is None or max_images >= len(y):
        return np.arange(len(y), dtype=np.int64)
    rng = np.random.default_rng([seed, zlib.crc32(b"shift-subset")])
    return stratified_indices(y, max_images, rng)


# -- official files -----------------------------------------------------------------------------
_DIGESTS: dict[tuple[str, int, int], tuple[str, str]] = {}


def _digests(path: Path) -> tuple[str, str]:
    """``(sha256, md5)`` of a file in one read, cached per (path, size, mtime) in this process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                sha.update(chunk)
                md5.update(chunk)
        _DIGESTS[key] = (sha.hexdigest(), md5.hexdigest())
    return _DIGESTS[key]


def _open_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise DataFormatError(
            f"{path} is not a readable .npy file ({type(exc).__name__}: {exc}); "
            "replace it with the official file"
        ) from None


def _official(
    spec: _Spec, data_root: Path, y: np.ndarray, indices: np.ndarray, how: str
) -> tuple[dict[str, Any], Callable[[str, int], np.ndarray]]:
    folder = data_root / spec.folder
    names = [f"{c}.npy" for c in CORRUPTIONS] + [LABELS_FILE]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        archive = SHIFT_ARCHIVES[spec.name]
        raise DataNotFoundError(
            f"{folder} holds the official {spec.folder} files only in part: missing "
            f"{', '.join(missing)}. Complete it from the official archive {archive.url} "
            f"(load with download=True to fetch it), or remove the folder to use the generated "
            f"{spec.name} suite instead."
        )
    n = len(y)
    rows = len(SEVERITIES) * n
    arrays = {}
    for c in CORRUPTIONS:
        a = _open_npy(folder / f"{c}.npy")
        if a.dtype != np.uint8 or a.shape != (rows, 32, 32, 3):
            raise DataFormatError(
                f"{folder / c}.npy must be uint8 ({rows}, 32, 32, 3): severity k in rows "
                f"(k-1)*{n} .. k*{n}-1 for the {n} images of the test split; got {a.dtype} "
                f"{tuple(a.shape)}. Is the test split the full official {spec.dataset} one?"
            )
        arrays[c] = a
    labels = np.asarray(_open_npy(folder / LABELS_FILE))
    if labels.shape != (rows,) or not np.issubdtype(labels.dtype, np.integer):
        raise DataFormatError(
            f"{folder / LABELS_FILE} must hold {rows} integer labels (5 severities x {n} test "
            f"images), got {labels.dtype} {tuple(labels.shape)}"
        )
    expected = np.tile(y, len(SEVERITIES))
    wrong = np.flatnonzero(labels.astype(np.int64) != expected)
    if len(wrong):
        r = int(wrong[0])
        raise DataFormatError(
            f"{folder / LABELS_FILE} disagrees with the {spec.dataset} test split's labels at "
            f"{len(wrong)} of {rows} rows (first: row {r}, severity {r // n + 1}, test image "
            f"{r % n}: file {int(labels[r])}, test split {int(expected[r])}); these files belong "
            "to another dataset or test-split order"
        )
    digests = {name: _digests(folder / name) for name in names}
    published = PUBLISHED_MD5[spec.name]
    source: dict[str, Any] = {
        "kind": "official",
        "root": spec.folder,
        "how": how,
        "files": {name: sha for name, (sha, _) in digests.items()},
        "md5_mismatch": sorted(
            name for name, (_, md5) in digests.items() if md5 != published[name]
        ),
        "reference": HENDRYCKS_2019,
    }
    if how == "download":
        archive = SHIFT_ARCHIVES[spec.name]
        source["archive"] = {"url": archive.url, "md5": archive.md5}

    def images(corruption: str, severity: int) -> np.ndarray:
        return np.asarray(arrays[corruption][(severity - 1) * n + indices])

    return source, images


# -- generated ------------------------------------------------------------------------------------
def _cell_rng(seed: int, corruption: str, severity: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(corruption.encode()), severity])


def _library_versions() -> dict[str, str]:
    import PIL
    import scipy

    return {"numpy": np.__version__, "scipy": scipy.__version__, "pillow": PIL.__version__}


def _generated(
    spec: _Spec, x: np.ndarray, indices: np.ndarray, seed: int, download_note: str | None
) -> tuple[dict[str, Any], tuple[str, ...], Callable[[str, int], np.ndarray]]:
    present = _gen.generated_corruptions(CORRUPTIONS)
    clean = np.ascontiguousarray(x[indices])
    source: dict[str, Any] = {
        "kind": "generated",
        "generator": _gen.GENERATOR,
        "generator_version": _gen.GENERATOR_VERSION,
        "seed": seed,
        "parameters": {
            c: [list(v) if isinstance(v, tuple) else v for v in _gen.PARAMETERS[c]] for c in present
        },
        "omitted": dict(_gen.OMITTED),
        "approximations": dict(_gen.APPROXIMATIONS),
        "note": (
            f"not the official {spec.folder} files: the {spec.dataset} test images were "
            f"corrupted here with the constants of {_gen.MAKE_CIFAR_C} (same distributions, "
            "other random draws)"
        ),
        "libraries": _library_versions(),
        "reference": HENDRYCKS_2019,
    }
    if download_note is not None:
        source["download"] = download_note

    def images(corruption: str, severity: int) -> np.ndarray:
        return _gen.corrupt(corruption, severity, clean, _cell_rng(seed, corruption, severity))

    return source, present, images


# -- loading ------------------------------------------------------------------------------------
def _load(
    spec: _Spec,
    test_x: Any,
    test_y: Any,
    root: str | os.PathLike[str] | None,
    seed: int,
    max_images: int | None,
    download: bool,
) -> ShiftSuite:
    x, y = _check_test_split(spec, test_x, test_y)
    _check_options(seed, max_images)
    indices = _subset(y, seed, max_images)
    cap = max_images if max_images is not None and max_images < len(y) else None
    labels = torch.from_numpy(y[indices])
    data_root = resolve_data_root(root)
    folder = data_root / spec.folder

    def official(how: str) -> ShiftSuite:
        source, images = _official(spec, data_root, y, indices, how)
        return ShiftSuite(
            spec.name, spec.dataset, source, CORRUPTIONS, SEVERITIES, cap, indices, labels, images
        )

    if folder.is_dir():
        return official("found")
    note = None
    if download:
        try:
            data_root.mkdir(parents=True, exist_ok=True)
            DOWNLOADERS[spec.name](data_root)
        except Exception as exc:  # no network, server down, bad checksum, read-only folder
            note = f"download failed: {type(exc).__name__}: {exc}"
        else:
            if folder.is_dir():
                return official("download")
            note = f"the download did not create {spec.folder}/"
        warnings.warn(
            f"{spec.name}: the official files could not be downloaded ({note}); "
            "using the generated suite (not the official images)",
            stacklevel=3,
        )
    source, present, images = _generated(spec, x, indices, seed, note)
    return ShiftSuite(
        spec.name, spec.dataset, source, present, SEVERITIES, cap, indices, labels, images
    )


def load_shift_suite(
    name: str,
    *,
    root: str | os.PathLike[str] | None,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    seed: int = 0,
    max_images: int | None = None,
    download: bool = False,
) -> ShiftSuite:
    """The registered shift suite ``name`` over the test split ``test_x, test_y``.

    ``test_x`` uint8 ``(N, 32, 32, 3)`` and ``test_y`` ``(N,)`` must be the dataset's test split
    in its official order (the official files are aligned to it row by row). ``max_images`` caps
    the images per cell with a class-stratified subset drawn from ``seed``; ``seed`` also seeds
    the generated corruptions. See the module docstring for the sources.
    """
    return get_registry("shift").create(
        name,
        test_x=test_x,
        test_y=test_y,
        root=root,
        seed=seed,
        max_images=max_images,
        download=download,
    )


_SUMMARY = (
    "{folder}, 15 corruptions x 5 severities of the test split: official .npy files, "
    "else generated (14, no frost)"
)


@register_shift(
    "cifar10-c",
    summary=_SUMMARY.format(folder="CIFAR-10-C"),
    reference=HENDRYCKS_2019,
    dataset="cifar10",
)
def cifar10_c(
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    max_images: int | None = None,
    download: bool = False,
) -> ShiftSuite:
    """CIFAR-10-C over the CIFAR-10 test split (official files, else generated)."""
    return _load(_SPECS["cifar10-c"], test_x, test_y, root, seed, max_images, download)


@register_shift(
    "cifar100-c",
    summary=_SUMMARY.format(folder="CIFAR-100-C"),
    reference=HENDRYCKS_2019,
    dataset="cifar100",
)
def cifar100_c(
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    max_images: int | None = None,
    download: bool = False,
) -> ShiftSuite:
    """CIFAR-100-C over the CIFAR-100 test split (official files, else generated)."""
    return _load(_SPECS["cifar100-c"], test_x, test_y, root, seed, max_images, download)
