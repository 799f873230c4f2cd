"""Provenance: calibench's version and commit, and the software and device, with no paths."""

from __future__ import annotations

import subprocess
from typing import Any

from calibench import provenance


def test_code_info_outside_a_git_checkout(monkeypatch):
    def no_git(*args: Any, **kwargs: Any) -> None:
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    info = provenance.code_info()
    assert info["git_sha"] is None and info["git_dirty"] is None
    assert info["calibench_version"]


def test_env_info_names_versions_and_device():
    info = provenance.env_info(device="my accelerator")
    assert info["device"] == "my accelerator"
    assert info["torch"] and info["python"]
    assert not any(isinstance(v, str) and v.startswith("/") for v in info.values())
