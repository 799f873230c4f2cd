"""Checkpoints: atomic writes, ``weights_only`` loads, corrupt files set aside.

A checkpoint is ``<dir>/epoch-NNNN.pt`` (NNNN = epochs completed) or, taken in the middle of an
epoch, ``<dir>/epoch-NNNN-step-SSSSSS.pt`` (NNNN epochs and SSSSSS steps of the next epoch
done); files order by ``(epochs, steps)``. A checkpoint is a dict of tensors and plain
Python values only, so that ``torch.load(weights_only=True)`` can read it (no pickled objects).
Writes are atomic: the file is written to a temporary file in the same directory, flushed and
fsync'ed, then ``os.replace``'d onto its name, and the directory is fsync'ed; a process killed
mid-write leaves at most a ``.epoch-NNNN.pt.*.tmp`` file, which the next load removes.

A checkpoint that cannot be read, or whose content is wrong (missing fields, epoch that
disagrees with its name, or a caller-supplied check that fails), is reported with a
:class:`CorruptCheckpointWarning` naming its path and renamed to ``*.corrupt``; the previous
checkpoint is tried next. A corrupt checkpoint is never used.
"""

from __future__ import annotations

import os
import random
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calibench.atomic import atomic_write
from calibench.errors import CheckpointError

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "CorruptCheckpointWarning",
    "capture_rng_state",
    "checkpoint_path",
    "checkpoint_position",
    "list_checkpoints",
    "load_checkpoint",
    "load_latest_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]

FORMAT_VERSION = 1
REQUIRED = {
    "format": int,
    "epoch": int,
    "model": dict,
    "optimizer": dict,
    "scheduler": dict,
    "rng": dict,
    "spec": dict,
}
_NAME = re.compile(r"^epoch-(\d{4,})(?:-step-(\d{6,}))?\.pt$")


class CorruptCheckpointWarning(UserWarning):
    """A corrupt checkpoint was found and renamed to ``*.corrupt``."""


def checkpoint_path(directory: Path, epoch: int, step: int = 0) -> Path:
    """``directory / "epoch-NNNN.pt"``: the checkpoint after ``epoch`` completed epochs, or with
    ``step > 0``, ``epoch-NNNN-step-SSSSSS.pt``: after ``step`` more steps of epoch ``epoch + 1``."""
    name = f"epoch-{epoch:04d}" + (f"-step-{step:06d}" if step else "")
    return Path(directory) / f"{name}.pt"


def checkpoint_position(path: Path) -> tuple[int, int] | None:
    """``(epochs, steps)`` that a checkpoint file's name says it holds, or None if not one."""
    m = _NAME.match(Path(path).name)
    return None if m is None else (int(m.group(1)), int(m.group(2) or 0))


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of every checkpoint file in ``directory``, oldest first (by epochs, then
    steps: a mid-epoch checkpoint comes after its epoch's checkpoint and before the next)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        position = checkpoint_position(path)
        if position and path.is_file():
            found.append((position, path))
    return [(position[0], path) for position, path in sorted(found)]


def save_checkpoint(
    directory: Path, epoch: int, state: dict[str, Any], *, keep: int = 2, step: int = 0
) -> Path:
    """Atomically write ``state`` as the checkpoint after ``epoch`` epochs and ``step`` steps of
    the next; keep only the newest ``keep``.

    ``state`` must hold the :data:`REQUIRED` fields (``format``, ``epoch`` and ``step`` are
    filled in) and only tensors and plain Python values.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {**state, "format": FORMAT_VERSION, "epoch": epoch, "step": step}
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint state lacks field(s) {', '.join(missing)}")
    final = checkpoint_path(directory, epoch, step)
    atomic_write(final, lambda f: torch.save(state, f))
    for _, old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return final


def load_checkpoint(path: Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and check one checkpoint with ``torch.load(weights_only=True)``.

    Raises :class:`CheckpointError` if the file cannot be read or its content is wrong.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a dict")
    for key, kind in REQUIRED.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise CheckpointError(f"checkpoint {path} lacks a valid '{key}' field")
    if state["format"] != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format {state['format']}, expected {FORMAT_VERSION}"
        )
    position = checkpoint_position(path)
    step = state.get("step", 0)
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"checkpoint {path} lacks a valid 'step' field")
    if position and position != (state["epoch"], step):
        raise CheckpointError(
            f"checkpoint {path} holds epoch {state['epoch']}, step {step}, which disagrees "
            "with its name"
        )
    if not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        raise CheckpointError(f"checkpoint {path} has a model state that is not all tensors")
    return state


def _quarantine(path: Path, reason: str) -> Path:
    target = path.with_name(path.name + ".corrupt")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.{n}.corrupt")
        n += 1
    os.replace(path, target)
    warnings.warn(
        f"corrupt checkpoint {path} set aside as {target.name}, not used ({reason}); "
        "falling back to the previous checkpoint",
        CorruptCheckpointWarning,
        stacklevel=3,
    )
    return target


def load_latest_checkpoint(
    directory: Path,
    *,
    check: Callable[[dict[str, Any]], None] | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[Path, dict[str, Any]] | None:
    """The newest good checkpoint in ``directory`` as ``(path, state)``, or ``None``.

    Newer checkpoints that are unreadable or wrong, including those for which ``check(state)``
    raises :class:`CheckpointError`, are renamed ``*.corrupt`` with a warning. Leftover
    temporary files of an interrupted write are removed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    for tmp in directory.glob(".epoch-*.tmp"):
        tmp.unlink(missing_ok=True)
    for _, path in reversed(list_checkpoints(directory)):
        try:
            state = load_checkpoint(path, map_location=map_location)
            if check is not None:
                check(state)
        except CheckpointError as exc:
            _quarantine(path, str(exc))
            continue
        return path, state
    return None


# -- RNG state as tensors and plain values (readable with weights_only=True) -----------------
def capture_rng_state() -> dict[str, Any]:
    """Every global RNG state: torch CPU, CUDA (all devices, if initialised), numpy, ``random``."""
    version, mt, gauss_next = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "python": {"version": int(version), "state": list(mt), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` captured (CUDA only if present on both sides)."""
    torch.set_rng_state(state["torch"].cpu())
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["name"],
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
