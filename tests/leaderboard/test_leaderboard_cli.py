"""``calibench leaderboard`` and ``calibench leaderboard publish`` through the real CLI entry."""

from __future__ import annotations

import json
import subprocess
import sys

from calibench.cli import main
from calibench.leaderboard import build_leaderboard, render
from calibench.leaderboard.render import FORMATS, RENDERERS, SUFFIXES


def metrics(ece: float) -> dict:
    return {"test": {"acc": 0.9, "ece": ece, "adaece": ece, "nll": 0.5}, "ood": {}}


def test_md_to_stdout_is_the_default_off_a_terminal(make_run, tmp_path, capsys):
    make_run(loss="ce", seed=0, metrics=metrics(0.05))
    make_run(loss="ls", seed=0, status="failed")
    assert main(["leaderboard", "--results", str(tmp_path / "results"), "--bootstrap", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| rank") and "| ce " in out and "0 completed, 1 failed" in out


def test_format_and_output_file(make_run, tmp_path, capsys):
    make_run(loss="ce", seed=0, strength=2.0)
    target = tmp_path / "out" / "board.json"
    code = main(
        [
            "leaderboard",
            "-r",
            str(tmp_path / "results"),
            "--bootstrap",
            "20",
            "--sort",
            "acc",
            "--output",
            str(target),
        ]
    )
    assert code == 0
    doc = json.loads(target.read_text())
    assert doc["sort"] == "acc" and doc["rows"][0]["loss"] == "ce"
    assert doc["rows"][0]["acc_ci_low"] is not None
    assert (
        main(["leaderboard", "-r", str(tmp_path / "results"), "-f", "latex", "--bootstrap", "0"])
        == 0
    )
    assert "\\begin{tabular}" in capsys.readouterr().out


def test_usage_errors_are_one_line(make_run, tmp_path, capsys):
    make_run(loss="ce", seed=0, metrics=metrics(0.05))
    results = str(tmp_path / "results")
    cases = [
        (["leaderboard", "-r", results, "--sort", "bogus"], "cannot sort by 'bogus'"),
        (["leaderboard", "-r", str(tmp_path / "nope")], "does not exist"),
        (["leaderboard", "-r", results, "-o", str(tmp_path / "x.xlsx")], "cannot tell the format"),
        (["leaderboard", "-r", results, "--bootstrap", "1"], "--bootstrap must be"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_results_default_is_the_one_calibench_run_writes(
    make_run, tmp_path, capsys, monkeypatch
) -> None:
    make_run(loss="ce", seed=0, metrics=metrics(0.05))
    monkeypatch.chdir(tmp_path)  # ./results, as 'calibench run' writes by default
    assert main(["leaderboard", "-f", "csv", "--bootstrap", "0"]) == 0
    assert "ce" in capsys.readouterr().out
    monkeypatch.setenv("CALIBENCH_RESULTS", str(tmp_path / "elsewhere"))
    assert main(["leaderboard", "--bootstrap", "0"]) == 2
    assert "elsewhere" in capsys.readouterr().err


def test_publish_command(make_run, tmp_path, capsys):
    make_run(loss="ce", seed=0, metrics=metrics(0.05))
    argv = [
        "leaderboard",
        "publish",
        "-r",
        str(tmp_path / "results"),
        "--root",
        str(tmp_path / "lb"),
        "--bootstrap",
        "0",
    ]
    assert main(argv) == 0
    assert "published smoke v1 (1 records)" in capsys.readouterr().out
    assert (tmp_path / "lb" / "smoke" / "v1" / "CHANGES.md").is_file()
    assert main(argv) == 2
    assert "nothing changed since v1" in capsys.readouterr().err


def test_show_verify_commands(make_run, tmp_path, capsys):
    """'show' prints a published file offline; 'verify' re-renders a version from its runs."""
    make_run(loss="ce", seed=0)
    results, lb = str(tmp_path / "results"), str(tmp_path / "lb")
    assert main(["leaderboard", "publish", "-r", results, "--root", lb, "--bootstrap", "10"]) == 0
    capsys.readouterr()
    assert main(["leaderboard", "show", "smoke", "--root", lb]) == 0
    out = capsys.readouterr().out
    assert out == (tmp_path / "lb" / "smoke" / "v1" / "LEADERBOARD.md").read_text()
    assert main(["leaderboard", "show", "smoke", "--root", lb, "-f", "json", "-v", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["n_boot"] == 10
    for argv, message in [
        (["show", "standard", "--root", lb], "published protocols there: smoke"),
        (["show", "smoke", "--root", lb, "-v", "2"], "smoke has no v2; published: v1"),
        (["show", "smoke", "--root", lb, "-f", "xlsx"], "--format must be one of md, csv"),
        (["verify", str(tmp_path / "lb" / "smoke")], "is not a published version"),
    ]:
        assert main(["leaderboard", *argv]) == 2, argv
        assert message in capsys.readouterr().err
    v1 = str(tmp_path / "lb" / "smoke" / "v1")
    assert main(["leaderboard", "verify", v1, "-r", results]) == 0
    assert "reproduces byte for byte" in capsys.readouterr().out
    (tmp_path / "lb" / "smoke" / "v1" / "LEADERBOARD.json").write_text("{}")
    assert main(["leaderboard", "verify", v1, "-r", results]) == 1
    assert "LEADERBOARD.json: differs from a fresh rendering" in capsys.readouterr().err


def test_format_choices_and_output_suffixes_come_from_the_renderers(make_run, tmp_path, capsys):
    make_run(loss="ce", seed=0, metrics=metrics(0.05))
    results = tmp_path / "results"
    assert main(["leaderboard", "-r", str(results), "-f", "xlsx"]) == 2
    err = capsys.readouterr().err
    assert all(f"'{fmt}'" in err for fmt in RENDERERS)
    assert set(SUFFIXES.values()) == set(RENDERERS) == set(FORMATS)
    board = build_leaderboard(results, n_boot=0)
    for suffix, fmt in SUFFIXES.items():
        target = tmp_path / f"board{suffix.upper()}"
        assert main(["leaderboard", "-r", str(results), "-o", str(target), "--bootstrap", "0"]) == 0
        assert target.read_text(encoding="utf-8") == render(board, fmt), suffix


def test_the_cli_lists_the_formats_without_loading_torch_or_pandas():
    code = (
        "import sys\n"
        "import calibench.cli\n"
        "from calibench.leaderboard import RENDERERS\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'pandas' not in sys.modules, 'pandas was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
