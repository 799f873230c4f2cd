"""Every output format renders the same rows; machine formats keep fractions."""

from __future__ import annotations

import csv
import html
import io
import json

import pytest

from calibench.errors import UsageError
from calibench.leaderboard import build_leaderboard, render, render_terminal
from calibench.leaderboard.render import FORMATS


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_names_every_row(board, fmt):
    text = render(board, fmt)
    assert "dual" in text and "ce" in text
    assert "diverged" in text


def test_markdown_shows_mean_std_ci_status_and_problems(board):
    md = render(board, "md")
    header = md.splitlines()[0]
    for title in (
        "acc %",
        "ECE %",
        "AdaECE %",
        "NLL",
        "ECE after TS %",
        "SVHN AUROC % (MSP)",
        "SVHN FPR95 % (MSP)",
        "status",
        "seeds",
        "protocol",
        "deviations",
    ):
        assert title in header
    row = next(line for line in md.splitlines() if "| dual_focal" in line)
    values = board.table.set_index("loss").loc["dual_focal"]
    for key in ("ece", "svhn_auroc", "svhn_fpr95"):
        mean, std = values[f"{key}_mean"] * 100, values[f"{key}_std"] * 100
        lo, hi = values[f"{key}_ci_low"] * 100, values[f"{key}_ci_high"] * 100
        assert f"{mean:.2f} ± {std:.2f} [{lo:.2f}, {hi:.2f}]" in row, key
    assert "smoke v1" in row
    assert "1 completed, 1 diverged" in md
    assert "seed 1 diverged: synthetic diverged run" in md
    assert "junk/record.json" in md  # the skipped record is listed with its path


def test_csv_and_json_hold_fractions(board):
    rows = list(csv.DictReader(io.StringIO(render(board, "csv"))))
    by_loss = {r["loss"]: r for r in rows}
    auroc = board.table.set_index("loss").loc["dual_focal", "svhn_auroc_mean"]
    assert 0.5 < auroc < 1.0
    assert float(by_loss["dual_focal"]["svhn_auroc_mean"]) == pytest.approx(auroc)
    assert float(by_loss["dual_focal"]["svhn_auroc_ci_low"]) < auroc
    assert by_loss["ce"]["status"] == "1 completed, 1 diverged"
    assert by_loss["ce"]["ece_std"] == ""  # one completed seed: no std
    doc = json.loads(render(board, "json"))
    jrows = {r["loss"]: r for r in doc["rows"]}
    assert jrows["dual_focal"]["svhn_auroc_mean"] == pytest.approx(auroc)
    assert jrows["ce"]["ece_std"] is None
    assert doc["sort"] == "ece" and doc["problems"][0]["path"].endswith("record.json")
    assert "Welch" in doc["significance"] and "population value" in doc["intervals"]
    kinds = {c["key"]: c["interval"] for c in doc["columns"]}
    assert kinds["ece"] == kinds["ece_ts"] == "binned" and kinds["svhn_auroc"] == "percentile"


@pytest.mark.parametrize("fmt", ["md", "html", "latex"])
def test_caption_says_what_the_interval_covers_and_which_test(board, fmt):
    text = " ".join(html.unescape(render(board, fmt)).split())
    assert "population binned error" in text and "percentile bootstrap" in text
    assert "Welch's t-test on the per-seed values" in text
    assert "50 resamples" in text


def test_latex_escapes_text_and_uses_math_symbols(board):
    tex = render(board, "latex")
    assert r"dual\_focal" in tex and r"$\pm$" in tex and r"ECE \%" in tex
    assert "\\begin{tabular}" in tex and "±" not in tex and "\\caption{" in tex


def test_terminal_table(board):
    from rich.console import Console

    console = Console(file=io.StringIO(), width=300, color_system=None)
    render_terminal(board, console)
    text = console.file.getvalue()
    assert "calibench leaderboard" in text and "dual_focal" in text
    assert "1 completed, 1 diverged" in text and "skipped record" in text


def test_unknown_format_is_a_usage_error(board):
    with pytest.raises(UsageError, match="unknown format 'xlsx'"):
        render(board, "xlsx")


def test_empty_results_render(tmp_path):
    (tmp_path / "empty").mkdir()
    board = build_leaderboard(tmp_path / "empty", n_boot=0)
    for fmt in FORMATS:
        assert render(board, fmt)
