"""Cut a small CIFAR-10 npz from ``../shared/data/cifar10.npz`` for carrying to a GPU machine.

Takes the first ``--train`` train rows and the first ``--test`` test rows (the shared copy's
rows are shuffled, so any prefix is close to class-balanced) and writes them, uncompressed
(JPEG-lossy pixels do not compress), with the same keys ``x_train, y_train, x_test, y_test`` to
``--out``, by default ``.carry/cifar10_subset/cifar10.npz`` (``.carry/`` is git-ignored; the
folder is a ``--data-root`` for calibench). Refuses to write more than ``--max-mib`` MiB.
The defaults (14,000 + 2,000 images) make 47 MiB: the protocol's 5,000-image val split leaves
9,000 training images.

    python benchmarks/make_subset.py
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import typer
from benchtools import REPO_ROOT, SHARED_CIFAR10, fail

from calibench.errors import UsageError

DEFAULT_OUT = REPO_ROOT / ".carry" / "cifar10_subset" / "cifar10.npz"
KEYS = ("x_train", "y_train", "x_test", "y_test")


def make_subset(
    source: Path = SHARED_CIFAR10,
    out: Path = DEFAULT_OUT,
    n_train: int = 14_000,
    n_test: int = 2_000,
    max_mib: float = 64.0,
) -> Path:
    """Write the subset npz and return its path; see module doc."""
    source, out = Path(source), Path(out)
    if not source.is_file():
        raise UsageError(f"no CIFAR-10 npz at {source}; pass --source")
    if n_train < 1 or n_test < 1:
        raise UsageError("--train and --test must be positive")
    with np.load(source) as f:
        missing = set(KEYS) - set(f.keys())
        if missing:
            raise UsageError(f"{source} lacks keys {', '.join(sorted(missing))}")
        if n_train > len(f["y_train"]) or n_test > len(f["y_test"]):
            raise UsageError(
                f"{source} has {len(f['y_train'])} train and {len(f['y_test'])} test images; "
                f"asked for {n_train} and {n_test}"
            )
        arrays = {
            "x_train": f["x_train"][:n_train],
            "y_train": f["y_train"][:n_train],
            "x_test": f["x_test"][:n_test],
            "y_test": f["y_test"][:n_test],
        }
    size = sum(a.nbytes for a in arrays.values()) / 2**20
    if size > max_mib:
        raise UsageError(f"the subset would take {size:.1f} MiB, over --max-mib {max_mib}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, out)
    return out


app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    source: Path = typer.Option(SHARED_CIFAR10, help="the full CIFAR-10 npz"),
    out: Path = typer.Option(DEFAULT_OUT, help="where the subset npz goes"),
    train: int = typer.Option(14_000, help="train images (the first rows)"),
    test: int = typer.Option(2_000, help="test images (the first rows)"),
    max_mib: float = typer.Option(64.0, help="refuse a larger file"),
) -> None:
    try:
        path = make_subset(source, out, train, test, max_mib)
    except UsageError as e:
        fail(e)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, {train} train + {test} test)")


if __name__ == "__main__":
    app()
