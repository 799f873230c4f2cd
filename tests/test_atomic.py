"""Atomic writes: a failed write leaves the old file intact and no temporary file behind."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from calibench.atomic import atomic_write, atomic_write_bytes, atomic_write_json


def test_write_creates_parents_and_is_readable(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "x.json"
    atomic_write_json(target, {"b": 1, "a": [1.5, None]})
    assert json.loads(target.read_text()) == {"a": [1.5, None], "b": 1}
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "record.json"
    atomic_write_bytes(target, b"old")

    def explode(fh) -> None:
        fh.write(b"partial new content")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, explode)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_json_nan_can_be_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "x.json", {"v": float("nan")}, allow_nan=False)
    assert not (tmp_path / "x.json").exists()
