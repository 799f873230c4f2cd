"""The CLI's frame: version, help, exit codes and one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from calibench import __version__
from calibench.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"calibench {__version__}"


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "list" in out and "plugins" in out


def test_list_losses_json_contains_ce(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "losses", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    ce = next(r for r in rows if r["name"] == "ce")
    for key in ("name", "summary", "reference", "defaults", "source"):
        assert key in ce


def test_list_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "losses", "--pattern", "c*"]) == 0
    assert "ce" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["list", "lossez"], "valid kinds: losses, backbones, datasets, ood"),
        (["frobnicate"], "No such command"),
        (["list", "losses", "--format", "xml"], "--format"),
        (["list"], "Missing argument"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and needle in lines[0]
    assert "Traceback" not in err


def test_console_script_is_installed() -> None:
    exe = shutil.which("calibench") or str(
        __import__("pathlib").Path(sys.executable).with_name("calibench")
    )
    done = subprocess.run([exe, "list", "lossez"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("error: unknown kind 'lossez'")
    assert "Traceback" not in done.stderr


def test_unexpected_error_is_one_line_unless_debugging(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from calibench.cli import registry_cmds

    def broken(kind: str) -> None:
        raise RuntimeError("something deep broke")

    monkeypatch.setattr(registry_cmds, "get_registry", broken)
    monkeypatch.delenv("CALIBENCH_DEBUG", raising=False)
    assert main(["list", "losses"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error RuntimeError: something deep broke" in err
    monkeypatch.setenv("CALIBENCH_DEBUG", "1")
    with pytest.raises(RuntimeError, match="something deep broke"):
        main(["list", "losses"])


def test_protocols_lists_versions_and_hashes(capsys: pytest.CaptureFixture[str]) -> None:
    from calibench.protocols import load_protocol

    assert main(["protocols", "--format", "json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"standard", "fast", "smoke"} <= set(rows)
    standard = load_protocol("standard")
    assert rows["standard"]["version"] == standard.version
    assert rows["standard"]["content_hash"] == standard.content_hash
    assert rows["standard"]["train"]["epochs"] == 350
    assert main(["protocols"]) == 0
    assert "standard@v" in capsys.readouterr().out
