"""The HTML page: pinned byte for byte on a fixed board, self-contained, escaped."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from calibench.leaderboard import build_leaderboard, render
from calibench.records import RecordProblem

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
EXPECTED_PAGE = Path(__file__).parent / "expected" / "leaderboard.html"
HOSTILE = "<i>\"a\" & 'b'</i>"


def fixed_metrics(acc: float, ece: float) -> dict:
    """Numbers written in the record only (no saved files): the page depends on no arithmetic
    beyond a mean of two seeds."""
    return {
        "test": {"acc": acc, "ece": ece, "adaece": ece / 2, "nll": 0.5},
        "test_ts": {"temperature": 1.5, "ece": ece / 4},
        "ood": {},
    }


@pytest.fixture
def fixed_board(make_run, tmp_path):
    """Two sections (two backbones), a tie, a failed row, a hostile loss name and note, plots."""
    tag = {"tag": 'x"y'}
    for seed, (acc, ece) in enumerate([(0.91, 0.031), (0.89, 0.047)]):
        make_run(
            loss="focal",
            params={"gamma": 3},
            seed=seed,
            metrics=fixed_metrics(acc, ece),
            deviations=tag,
            plots={"reliability": PNG},
        )
    make_run(
        loss="ce",
        params={"note": HOSTILE},
        metrics=fixed_metrics(0.9, 0.052),
        deviations=tag,
        plots={"reliability": b"<script>alert(1)</script>"},
    )
    make_run(loss="ls", status="failed", deviations=tag)
    make_run(loss="ce", backbone="resnet56", metrics=fixed_metrics(0.93, 0.02), deviations=tag)
    board = build_leaderboard(tmp_path / "results", n_boot=50)
    focal = board.table.index[board.table["loss"] == "focal(gamma=3)"][0]
    board.table.loc[focal, ["ece_ci_low", "ece_ci_high", "acc_ci_low", "acc_ci_high"]] = [
        0.021,
        0.055,
        0.88,
        0.92,
    ]
    board.problems = [
        RecordProblem(Path("results/smoke/junk/record.json"), "a run record must be an object")
    ]
    board.notes.append(f"a note naming {HOSTILE}")
    return board


def test_page_of_a_fixed_board_is_pinned(fixed_board):
    assert render(fixed_board, "html") == EXPECTED_PAGE.read_text(encoding="utf-8")


def test_page_escapes_loss_names_and_notes(fixed_board):
    page = render(fixed_board, "html")
    assert HOSTILE not in page and "<i>" not in page
    assert "&lt;i&gt;" in page and "alert(1)" not in page
    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert page.count(uri) == 4  # two seeds of focal: a thumbnail and a gallery figure each
