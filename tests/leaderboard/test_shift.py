"""The "under shift" columns, their Student-t interval over seeds, the caption, and the
ECE-against-severity figure in the HTML page and in a published version."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from calibench.errors import UsageError
from calibench.leaderboard import build_leaderboard, publish, render
from calibench.leaderboard.aggregate import SHIFT_COLUMNS, shift_grid_mean, shift_severity_curves
from calibench.leaderboard.cells import GENERATED_NOTE, caption_lines, format_cell
from calibench.leaderboard.versions import SHIFT_PLOT
from calibench.records import load_record, write_record

from .conftest import PNG

CORRUPTIONS = ("gaussian_noise", "fog", "pixelate")
SEVERITIES = ("1", "2", "3", "4", "5")
KEYS = ("acc", "ece", "adaece", "nll", "acc_ts", "ece_ts", "adaece_ts", "nll_ts")


def grid(level: float) -> dict[str, Any]:
    """Cell (c, s): ece = level + 0.02 s + 0.01 c, acc = 0.9 - 0.1 s, ece_ts = ece / 2."""
    out: dict[str, Any] = {}
    for c, corruption in enumerate(CORRUPTIONS):
        for s in SEVERITIES:
            ece = level + 0.02 * int(s) + 0.01 * c
            cell = dict.fromkeys(KEYS, 0.5)
            cell.update(acc=0.9 - 0.1 * int(s), ece=ece, ece_ts=ece / 2)
            out.setdefault(corruption, {})[s] = cell
    return out


def add_shift(path: Path, level: float, kind: str = "generated") -> dict[str, Any]:
    """The record at ``path`` with a shift grid (as the evaluator writes it), rewritten."""
    record = load_record(path)
    g = grid(level)
    cells = [cell for per in g.values() for cell in per.values()]
    record["metrics"]["shift"] = {
        "suite": "cifar10-c",
        "source": {"kind": kind, "seed": 0},
        "max_images": 20,
        "n_images": 20,
        "corruptions": list(CORRUPTIONS),
        "severities": [int(s) for s in SEVERITIES],
        "grid": g,
        "summary": {
            "by_severity": {
                s: {k: float(np.mean([g[c][s][k] for c in g])) for k in KEYS} for s in SEVERITIES
            },
            "mean": {k: float(np.mean([cell[k] for cell in cells])) for k in KEYS},
        },
    }
    write_record(path, record)
    return record


@pytest.fixture
def shift_board(make_run, tmp_path):
    """ce: 3 seeds with grids (levels 0.10, 0.13, 0.11); focal: 1 seed (level 0.05); mmce: no
    grid. Saved predictions for every run, 2 resamples (the shift intervals need none)."""
    for seed, level in enumerate((0.10, 0.13, 0.11)):
        add_shift(make_run(loss="ce", seed=seed, strength=1.5), level)
    add_shift(make_run(loss="focal", seed=0, strength=2.0), 0.05)
    make_run(loss="mmce", seed=0, strength=2.0)
    return build_leaderboard(tmp_path / "results", n_boot=2)


def row(board, loss: str):
    return board.table[board.table["loss"] == loss].iloc[0]


def test_shift_columns_are_the_seed_means_of_the_grid_means(shift_board) -> None:
    titles = [c.title for c in shift_board.columns]
    assert titles[5:8] == ["acc under shift %", "ECE under shift %", "ECE under shift after TS %"]
    # The grid mean of ece is level + 0.06 + 0.01 (mean severity 3, mean corruption index 1).
    levels = np.array([0.10, 0.13, 0.11]) + 0.07
    ce = row(shift_board, "ce")
    assert ce["shift_ece_mean"] == pytest.approx(levels.mean(), abs=1e-12)
    assert ce["shift_ece_std"] == pytest.approx(levels.std(ddof=1), abs=1e-12)
    assert ce["shift_ece_ts_mean"] == pytest.approx(levels.mean() / 2, abs=1e-12)
    assert ce["shift_acc_mean"] == pytest.approx(0.6, abs=1e-12)
    focal = row(shift_board, "focal")
    assert focal["shift_ece_mean"] == pytest.approx(0.12, abs=1e-12)
    assert math.isnan(row(shift_board, "mmce")["shift_ece_mean"])
    assert format_cell(row(shift_board, "mmce"), SHIFT_COLUMNS[1]) == "–"


def test_the_interval_is_student_t_over_seeds_and_blank_for_one_seed(shift_board) -> None:
    levels = np.array([0.10, 0.13, 0.11]) + 0.07
    half = stats.t.ppf(0.975, 2) * levels.std(ddof=1) / math.sqrt(3)
    ce = row(shift_board, "ce")
    assert (ce["shift_ece_ci_low"], ce["shift_ece_ci_high"]) == pytest.approx(
        (levels.mean() - half, levels.mean() + half), abs=1e-12
    )
    assert ce["shift_acc_ci_low"] == pytest.approx(0.6, abs=1e-12)  # no spread: a point
    focal = row(shift_board, "focal")
    assert math.isnan(focal["shift_ece_ci_low"]) and math.isnan(focal["shift_ece_ci_high"])
    cell = format_cell(ce, SHIFT_COLUMNS[1])
    assert cell.startswith(f"{levels.mean() * 100:.2f} ± ") and cell.endswith("]")
    assert "[" not in format_cell(focal, SHIFT_COLUMNS[1])
    # Intervals off: none for the shift columns either.
    off = build_leaderboard(shift_board.records(), n_boot=0)
    assert row(off, "ce")[["shift_ece_ci_low", "shift_ece_ci_high"]].isna().all()


def test_caption_and_json_say_what_the_shift_interval_covers(shift_board) -> None:
    line = next(x for x in caption_lines(shift_board) if x.startswith("Under shift"))
    assert "cifar10-c" in line and GENERATED_NOTE in line and "clean val split" in line
    assert "Student-t interval over seeds" in line and "seed-to-seed" in line
    doc = json.loads(render(shift_board, "json"))
    kinds = {c["key"]: c["interval"] for c in doc["columns"]}
    assert kinds["shift_ece"] == "student-t over seeds" and kinds["ece"] == "binned"


def test_records_without_a_grid_get_no_shift_columns(make_run, tmp_path) -> None:
    make_run(loss="ce", seed=0)
    board = build_leaderboard(tmp_path / "results", n_boot=0)
    assert not any(c.key.startswith("shift_") for c in board.columns)
    assert not any(x.startswith("Under shift") for x in caption_lines(board))
    assert shift_severity_curves(board) == {}
    assert "Calibration under distribution shift" not in render(board, "html")


def test_sorting_by_ece_under_shift(shift_board) -> None:
    board = build_leaderboard(shift_board.records(), sort="shift_ece", n_boot=0)
    assert list(board.table["loss"]) == ["focal", "ce", "mmce"]
    assert board.table["rank"].tolist()[:2] == [1, 2] and board.table["rank"].isna().tolist()[2]


def test_severity_curves_are_clean_then_means_over_corruptions(shift_board) -> None:
    curves = shift_severity_curves(shift_board)
    (section,) = curves
    assert section.startswith("cifar10 · resnet20 · smoke v1")
    assert set(curves[section]) == {"ce", "focal"}  # mmce has no grid
    ce = curves[section]["ce"]
    assert ce["severities"] == [0, 1, 2, 3, 4, 5]
    records = [r.data for r in shift_board.records() if r.data["loss"]["label"] == "ce"]
    clean = np.mean([r["metrics"]["test"]["ece"] for r in records])
    clean_ts = np.mean([r["metrics"]["test_ts"]["ece"] for r in records])
    level = np.mean([0.10, 0.13, 0.11])
    expected = [clean, *(level + 0.02 * s + 0.01 for s in range(1, 6))]
    assert ce["ece"] == pytest.approx(expected, abs=1e-12)
    assert ce["ece_ts"] == pytest.approx([clean_ts, *(v / 2 for v in expected[1:])], abs=1e-12)
    seed0 = next(r for r in records if r["spec"]["seed"] == 0)
    assert shift_grid_mean(seed0, "ece") == pytest.approx(0.17, abs=1e-12)


def test_html_embeds_the_severity_figure(shift_board) -> None:
    page = render(shift_board, "html")
    assert "<h2>Calibration under distribution shift</h2>" in page
    start = page.index('src="data:image/png;base64,', page.index('figure class="shift"'))
    uri = page[start + len('src="data:image/png;base64,') :].split('"', 1)[0]
    assert base64.b64decode(uri).startswith(PNG[:8])
    assert "ECE under shift %" in page


def test_publish_writes_the_severity_png(shift_board, tmp_path) -> None:
    result = publish(tmp_path / "results", root=tmp_path / "leaderboards", n_boot=0)
    png = result.path / SHIFT_PLOT
    assert png.read_bytes().startswith(PNG[:8])
    assert f"]({SHIFT_PLOT})" in (result.path / "LEADERBOARD.md").read_text()


def test_publish_without_grids_writes_no_severity_png(make_run, tmp_path) -> None:
    make_run(loss="ce", seed=0)
    result = publish(tmp_path / "results", root=tmp_path / "leaderboards", n_boot=0)
    assert not (result.path / SHIFT_PLOT).exists()
    assert SHIFT_PLOT not in (result.path / "LEADERBOARD.md").read_text()


def test_compare_reads_a_severity_from_the_grid(shift_board) -> None:
    """``ece@s5`` is each run's mean over corruptions at severity 5, compared like a column."""
    from calibench.leaderboard.baseline import compare_to_baseline

    frame = compare_to_baseline(shift_board, "ce", ["ece@s5", "acc_ts@s2"])
    frame = frame.set_index(["metric", "loss"])
    # grid(): at severity 5, ece = level + 0.10 + 0.01 c, mean over c in 0..2: level + 0.11
    row = frame.loc[("ece@s5", "focal")]
    assert row["baseline_mean"] == pytest.approx(np.mean([0.10, 0.13, 0.11]) + 0.11)
    assert row["mean"] == pytest.approx(0.05 + 0.11) and row["n"] == 1
    assert np.isnan(frame.loc[("ece@s5", "mmce"), "delta"])  # no grid: no value
    assert row["title"] == "ECE at shift severity 5" and not row["higher_is_better"]
    assert frame.loc[("acc_ts@s2", "focal"), "higher_is_better"]
    with pytest.raises(UsageError, match=r"<acc\|ece\|adaece\|nll>\[_ts\]@s<N>"):
        compare_to_baseline(shift_board, "ce", ["ece@5"])
