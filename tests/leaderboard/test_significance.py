"""Bootstrap CIs from saved predictions and the adjacent-rank mark."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from calibench.leaderboard import build_leaderboard
from calibench.leaderboard.significance import (
    RunDistribution,
    group_means,
    percentile_ci,
    significantly_different,
)
from calibench.records import load_record


def the_row(board, loss):
    return board.table[board.table["loss"] == loss].iloc[0]


def test_ci_brackets_the_full_test_set_value(make_run, tmp_path):
    paths = [make_run(loss="ce", seed=s, strength=1.5) for s in range(2)]
    board = build_leaderboard(tmp_path / "results", n_boot=300)
    r = the_row(board, "ce")
    for key in ("acc", "nll"):
        mean = np.mean([load_record(p)["metrics"]["test"][key] for p in paths])
        assert r[f"{key}_ci_low"] < mean < r[f"{key}_ci_high"]
        assert r[f"{key}_ci_high"] - r[f"{key}_ci_low"] > 0
    assert r["ece_ts_ci_low"] < r["ece_ts_ci_high"]


def test_identical_predictions_are_marked_as_not_different(make_run, tmp_path):
    make_run(loss="a", seed=0, strength=2.0)
    make_run(loss="b", seed=0, strength=2.0)  # same seed and strength: the same logits
    board = build_leaderboard(tmp_path / "results", n_boot=200)
    assert list(board.table["loss"]) == ["a", "b"]
    assert bool(the_row(board, "b")["tie_above"]) is True
    assert pd.isna(the_row(board, "a")["tie_above"])  # rank 1 has no row above


def test_clearly_different_rows_are_not_marked(make_run, tmp_path):
    make_run(loss="strong", seed=0, strength=4.0)
    make_run(loss="weak", seed=1, strength=0.5)
    board = build_leaderboard(tmp_path / "results", sort="acc", n_boot=200)
    assert list(board.table["loss"]) == ["strong", "weak"]
    assert bool(the_row(board, "weak")["tie_above"]) is False


def test_rows_without_predictions_get_no_ci_and_a_note(make_run, tmp_path):
    make_run(loss="a", seed=0, strength=2.0)
    make_run(loss="b", seed=0, metrics={"test": {"acc": 0.5, "ece": 0.5}})
    board = build_leaderboard(tmp_path / "results", n_boot=100)
    assert pd.isna(the_row(board, "b")["ece_ci_low"])
    assert not pd.isna(the_row(board, "a")["ece_ci_low"])
    assert pd.isna(the_row(board, "b")["tie_above"])
    assert any("without usable test predictions" in n for n in board.notes)


def test_runs_on_different_test_sets_are_not_paired(make_run, tmp_path):
    make_run(loss="a", seed=0, strength=2.0)
    other = np.random.default_rng(7).integers(0, 10, 600)
    make_run(loss="b", seed=0, strength=2.0, labels=other)
    board = build_leaderboard(tmp_path / "results", n_boot=100)
    assert not pd.isna(the_row(board, "b")["ece_ci_low"])
    assert pd.isna(the_row(board, "b")["tie_above"])


def test_bootstrap_off_leaves_ci_empty(make_run, tmp_path):
    make_run(loss="a", seed=0)
    board = build_leaderboard(tmp_path / "results", n_boot=0)
    assert pd.isna(the_row(board, "a")["ece_ci_low"])


def test_group_means_average_seeds_per_resample():
    a = RunDistribution("k", {"ece": np.array([1.0, 2.0, 3.0]), "acc": np.array([0.0, 0.0, 0.0])})
    b = RunDistribution("k", {"ece": np.array([3.0, 4.0, 5.0])})
    means = group_means([a, b])
    assert set(means) == {"ece"}  # acc is missing from one seed
    np.testing.assert_allclose(means["ece"], [2.0, 3.0, 4.0])


def test_percentile_ci_and_paired_test_on_known_samples():
    samples = np.arange(1001, dtype=float)
    assert percentile_ci(samples) == pytest.approx((25.0, 975.0))
    base = np.linspace(0, 1, 500)
    assert significantly_different(base + 1.0, base)  # constant shift: the difference is 1
    assert not significantly_different(base, base[::-1])  # symmetric around 0
