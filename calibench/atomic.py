"""Atomic file writes: the one way calibench writes records, checkpoints, predictions and plots.

A file is written to a temporary name in its destination folder, flushed and ``fsync``'ed, made
readable (``mkstemp`` creates files ``0600``), then ``os.replace``'d onto its name, and the
folder is ``fsync``'ed. A reader sees the old file or the new one, never a partial one; a
process killed at any point leaves at most a hidden ``.<name>.*.tmp`` file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

FILE_MODE = 0o644


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """``fsync`` a folder so a rename inside it survives a crash (a no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not supported (Windows) or not permitted: the rename itself is atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(binary_file)`` on a temporary file, then move it onto ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            if hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), FILE_MODE)
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike[str], payload: bytes) -> Path:
    """Write ``payload`` to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(payload))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, allow_nan: bool = True) -> Path:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=allow_nan) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))
