"""``calibench protocols hash``: print a protocol file's content hash, or write it in."""

from __future__ import annotations

from pathlib import Path

import pytest

from calibench.cli import main
from calibench.protocols import load_protocol


def _new_protocol(tmp_path: Path) -> Path:
    """smoke.toml renamed ``mine``, with 1 epoch and no content_hash line yet."""
    text = load_protocol("smoke").path.read_text()
    text = text.replace('name = "smoke"', 'name = "mine"').replace("epochs = 2", "epochs = 1")
    path = tmp_path / "mine.toml"
    lines = text.splitlines(keepends=True)
    path.write_text("".join(line for line in lines if not line.startswith("content_hash")))
    return path


def test_hash_prints_the_hash_of_a_shipped_protocol(capsys: pytest.CaptureFixture[str]) -> None:
    standard = load_protocol("standard")
    assert main(["protocols", "hash", str(standard.path)]) == 0
    out, err = capsys.readouterr()
    assert out == standard.content_hash + "\n" and err == ""


def test_hash_write_fills_in_a_new_protocol(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _new_protocol(tmp_path)
    before = path.read_bytes()
    assert main(["protocols", "hash", str(path)]) == 0
    out, err = capsys.readouterr()
    assert path.read_bytes() == before  # without --write the file is left alone
    assert out.startswith("sha256:") and "--write adds it" in err
    assert main(["protocols", "hash", str(path), "--write"]) == 0
    assert capsys.readouterr().out == out
    assert load_protocol(path).content_hash == out.strip()
    path.write_text(path.read_text().replace("epochs = 1", "epochs = 2"))
    assert main(["protocols", "hash", "-w", str(path)]) == 0
    out2, err = capsys.readouterr()
    assert out2 != out and f"replaced content_hash {out.strip()}" in err and "bump `version`" in err
    assert load_protocol(path).content_hash == out2.strip()


def test_hash_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _new_protocol(tmp_path)
    path.write_text(path.read_text().replace('precision = "bf16"', 'precision = "fp16"'))
    assert main(["protocols", "hash", "--write", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'train.precision' must be one of bf16, fp32" in err
    assert main(["protocols", "hash", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read protocol file" in capsys.readouterr().err
