"""Where a run's numbers came from: calibench's version and git commit, and the software and device.

Both dictionaries go into every run record (``code`` and ``env``); they hold versions and names,
never a path of the machine.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["code_info", "env_info"]


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def code_info() -> dict[str, Any]:
    """calibench's version, and the git sha and dirty flag of its checkout (null when not one).

    The git fields are filled only when the ``calibench`` package being run lies inside the
    repository's work tree, so an installed calibench inside an unrelated repository (a user
    project with a venv) does not report that project's commit.
    """
    from calibench import __version__

    package_dir = Path(__file__).resolve().parent
    info: dict[str, Any] = {"calibench_version": __version__, "git_sha": None, "git_dirty": None}
    top = _git(["rev-parse", "--show-toplevel"], package_dir)
    if not top or Path(top).resolve() / "calibench" != package_dir:
        return info
    sha = _git(["rev-parse", "HEAD"], package_dir)
    if not sha:  # a repository without commits
        return info
    info["git_sha"] = sha
    status = _git(["status", "--porcelain", "--untracked-files=no"], package_dir)
    info["git_dirty"] = None if status is None else bool(status)
    return info


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def env_info(device: str | None = None) -> dict[str, str | None]:
    """Versions of Python, torch, CUDA, timm and torch-uncertainty, and the device's name.

    ``device`` is a name already known to the caller (``"NVIDIA H100 80GB HBM3"``); when omitted
    it is the first CUDA device's name if CUDA is available, else ``"cpu"``.
    """
    info: dict[str, str | None] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": _dist_version("torch"),
        "cuda": None,
        "cudnn": None,
        "timm": _dist_version("timm"),
        "torch_uncertainty": _dist_version("torch-uncertainty"),
        "device": device,
    }
    try:
        import torch
    except ImportError:
        info["device"] = device or "cpu"
        return info
    info["cuda"] = torch.version.cuda
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    info["cudnn"] = None if cudnn is None else str(cudnn)
    if device is None:
        info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return info
