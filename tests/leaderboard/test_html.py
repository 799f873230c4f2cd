"""The HTML page: pinned byte for byte on a fixed board, self-contained, escaped, and its
template shipped as package data."""

from __future__ import annotations

import base64
import fnmatch
import sys
from importlib import resources
from pathlib import Path

import pytest

from calibench.leaderboard import build_leaderboard, render
from calibench.leaderboard.html import TEMPLATE
from calibench.records import RecordProblem

from .conftest import PNG

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

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


def test_html_is_self_contained_with_embedded_diagrams(board):
    page = render(board, "html")
    assert page.startswith("<!DOCTYPE html>")
    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert page.count(uri) == 4  # two seeds: thumbnail + gallery each
    assert "http://" not in page and "https://" not in page and 'src="/' not in page
    assert "<script>" in page and "dual_focal" in page


def test_the_table_shows_a_thumbnail_and_the_gallery_the_full_diagram(make_run, tmp_path):
    import io

    from PIL import Image

    from calibench.leaderboard.html import THUMB_HEIGHT

    buffer = io.BytesIO()
    Image.new("RGB", (300, 400), "white").save(buffer, format="PNG")
    tall = buffer.getvalue()
    make_run(loss="ce", seed=0, plots={"reliability": tall})
    page = render(build_leaderboard(tmp_path / "results", n_boot=0), "html")
    full = "data:image/png;base64," + base64.b64encode(tall).decode()
    assert page.count(full) == 1  # the gallery only
    thumb_uri = page.split('<img class="thumb"', 1)[1].split('src="', 1)[1].split('"', 1)[0]
    thumb = Image.open(io.BytesIO(base64.b64decode(thumb_uri.split(",", 1)[1])))
    assert thumb.size == (THUMB_HEIGHT * 3 // 4, THUMB_HEIGHT)


def test_html_escapes_and_skips_non_png(make_run, tmp_path):
    make_run(loss="ce", seed=0, plots={"reliability": b"<script>alert(1)</script>"})
    page = render(build_leaderboard(tmp_path / "results", n_boot=0), "html")
    assert "alert(1)" not in page and "data:image/png" not in page


def test_the_template_is_package_data(repo_root):
    shipped = resources.files("calibench") / "leaderboard" / "templates" / TEMPLATE
    assert shipped.is_file()
    pyproject = tomllib.loads((repo_root / "pyproject.toml").read_text(encoding="utf-8"))
    globs = pyproject["tool"]["setuptools"]["package-data"]["calibench"]
    assert any(fnmatch.fnmatch(f"leaderboard/templates/{TEMPLATE}", g) for g in globs)
    assert any(
        d.replace(" ", "").startswith("jinja2") for d in pyproject["project"]["dependencies"]
    )
