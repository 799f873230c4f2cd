"""Every value and interval from the saved files; row intervals; Welch's test of adjacent ranks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from calibench.leaderboard import build_leaderboard
from calibench.leaderboard.significance import (
    RunEvidence,
    compare_adjacent,
    row_intervals,
    run_evidence,
)
from calibench.metrics.intervals import BinnedReplicates, PercentileReplicates
from calibench.records import load_record

from .conftest import TEMPERATURE, synthetic_logits

KEYS = ("acc", "ece", "adaece", "nll", "ece_ts", "gaussian_auroc", "gaussian_fpr95")


def the_row(board, loss):
    return board.table[board.table["loss"] == loss].iloc[0]


def test_values_from_the_files_equal_the_records(make_run, tmp_path):
    paths = [make_run(loss="ce", seed=s, ood_sets=["gaussian"]) for s in range(3)]
    board = build_leaderboard(tmp_path / "results", n_boot=0)
    runs = board.runs.set_index("run_id")
    for path in paths:
        record = load_record(path)
        run = runs.loc[record["run_id"]]
        assert run["source"] == "files"
        m = record["metrics"]
        want = {
            **{k: m["test"][k] for k in ("acc", "ece", "adaece", "nll")},
            "ece_ts": m["test_ts"]["ece"],
            "gaussian_auroc": m["ood"]["gaussian"]["msp"]["auroc"],
            "gaussian_fpr95": m["ood"]["gaussian"]["msp"]["fpr95"],
        }
        for key, value in want.items():
            assert run[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key


def test_every_column_gets_an_interval_that_brackets_its_value(make_run, tmp_path):
    for s in range(3):
        make_run(loss="ce", seed=s, strength=1.5, ood_sets=["gaussian"])
    r = the_row(build_leaderboard(tmp_path / "results", n_boot=200), "ce")
    for key in KEYS:
        lo, hi, mean = r[f"{key}_ci_low"], r[f"{key}_ci_high"], r[f"{key}_mean"]
        assert lo < hi, key
        assert lo <= mean <= hi, key  # the binned interval always holds T; the others here do
    assert r["ece_ci_low"] >= 0.0


def test_row_interval_is_built_from_the_seed_means_of_the_replicates(test_labels):
    logits = [synthetic_logits(test_labels, 1.5, s) for s in range(2)]
    runs = [
        run_evidence(z, test_labels, temperature=TEMPERATURE, n_bins=15, n_boot=100, seed=4)
        for z in logits
    ]
    intervals, problems = row_intervals(runs, ["ece", "acc", "ece_ts"])
    assert problems == []
    ece = [r.replicates["ece"] for r in runs]
    assert isinstance(ece[0], BinnedReplicates)
    point = (ece[0].point + ece[1].point) / 2
    q = np.quantile((ece[0].deviation + ece[1].deviation) / 2, 0.975)
    sd = np.std((ece[0].linear + ece[1].linear) / 2, ddof=1)
    assert intervals["ece"] == pytest.approx((max(0.0, point - q), point + 1.959963984540054 * sd))
    acc = [r.replicates["acc"] for r in runs]
    assert isinstance(acc[0], PercentileReplicates)
    mean = (acc[0].values + acc[1].values) / 2
    assert intervals["acc"] == pytest.approx(tuple(np.quantile(mean, [0.025, 0.975])))
    assert runs[0].points["ece"] == ece[0].point  # the point is logit_metrics' value


def test_seeds_on_different_test_sets_get_no_row_interval(make_run, tmp_path, test_labels):
    make_run(loss="a", seed=0)
    other = np.random.default_rng(7).integers(0, 10, len(test_labels))
    make_run(loss="a", seed=1, labels=other)
    board = build_leaderboard(tmp_path / "results", n_boot=50)
    assert pd.isna(the_row(board, "a")["ece_ci_low"])
    assert any("different test or OOD sets" in n for n in board.notes)


def test_runs_without_files_fall_back_to_their_record_without_interval(make_run, tmp_path):
    make_run(loss="a", seed=0, strength=2.0)
    make_run(loss="b", seed=0, metrics={"test": {"acc": 0.5, "ece": 0.5}})
    board = build_leaderboard(tmp_path / "results", n_boot=50)
    b = the_row(board, "b")
    assert b["ece_mean"] == 0.5 and pd.isna(b["ece_ci_low"])
    assert not pd.isna(the_row(board, "a")["ece_ci_low"])
    assert list(board.runs.sort_values("loss")["source"]) == ["files", "record"]
    assert any("without usable saved test predictions" in n for n in board.notes)


def test_an_unreadable_prediction_file_is_a_note_not_a_crash(make_run, tmp_path):
    path = make_run(loss="a", seed=0)
    (path.parent / "test_predictions.npz").write_bytes(b"not a zip file")
    board = build_leaderboard(tmp_path / "results", n_boot=50)
    row = the_row(board, "a")
    assert row["ece_mean"] == pytest.approx(load_record(path)["metrics"]["test"]["ece"])
    assert pd.isna(row["ece_ci_low"])
    assert any("cannot use its saved files" in n for n in board.notes)


def test_bootstrap_off_leaves_intervals_empty_but_marks_ranks(make_run, tmp_path):
    for s in range(2):
        make_run(loss="a", seed=s, strength=4.0)
        make_run(loss="b", seed=s, strength=0.5)
    board = build_leaderboard(tmp_path / "results", sort="acc", n_boot=0)
    assert pd.isna(the_row(board, "a")["ece_ci_low"])
    assert bool(the_row(board, "b")["tie_above"]) is False


def test_rows_with_one_seed_are_never_marked_different(make_run, tmp_path):
    make_run(loss="strong", seed=0, strength=4.0)
    make_run(loss="weak", seed=1, strength=0.5)
    board = build_leaderboard(tmp_path / "results", sort="acc", n_boot=0)
    assert list(board.table["loss"]) == ["strong", "weak"]
    assert bool(the_row(board, "weak")["tie_above"]) is True
    assert pd.isna(the_row(board, "strong")["tie_above"])  # rank 1 has no row above


def test_clearly_different_rows_of_three_seeds_are_not_marked(make_run, tmp_path):
    for s in range(3):
        make_run(loss="strong", seed=s, strength=4.0)
        make_run(loss="weak", seed=10 + s, strength=0.5)
    board = build_leaderboard(tmp_path / "results", sort="acc", n_boot=0)
    weak = the_row(board, "weak")
    assert bool(weak["tie_above"]) is False and weak["p_above"] < 1e-3


def welch_p(a: list[float], b: list[float]) -> float:
    """Welch's t-test written out (Welch 1947): the oracle for compare_adjacent."""
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    t = (np.mean(a) - np.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return float(2 * stats.t.sf(abs(t), df))


@pytest.mark.parametrize(
    ("a", "b"),
    [([0.01, 0.02, 0.03], [0.05, 0.07, 0.04]), ([0.2, 0.3], [0.21, 0.35, 0.28, 0.30])],
)
def test_compare_adjacent_is_welchs_test(a, b):
    result = compare_adjacent(a, b)
    assert result.p == pytest.approx(welch_p(a, b), rel=1e-10)
    assert result.different == (result.p < 0.05)


def test_compare_adjacent_edge_cases():
    assert compare_adjacent([0.1], [0.9, 0.91, 0.92]).different is False
    assert compare_adjacent([0.1, 0.1, 0.1], [0.9, 0.9, 0.9]).different is True
    assert compare_adjacent([0.1, 0.1], [0.1, 0.1]).different is False
    assert compare_adjacent([0.1, float("nan"), 0.2], [0.5]).p is None  # NaN seeds do not count


def test_run_evidence_without_bootstrap_has_values_only(test_labels):
    ev = run_evidence(
        synthetic_logits(test_labels, 2.0, 0),
        test_labels,
        temperature=None,
        n_bins=15,
        ood={"noise": np.linspace(0, 1, 50)},
    )
    assert isinstance(ev, RunEvidence) and ev.replicates == {}
    assert set(ev.points) == {"acc", "ece", "adaece", "nll", "noise_auroc", "noise_fpr95"}


def test_the_ood_resamples_are_their_own(test_labels):
    z = synthetic_logits(test_labels, 2.0, 0)
    scores = torch.rand(300, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ood = {"a": scores.numpy(), "b": scores.numpy()}
    ev = run_evidence(z, test_labels, temperature=None, n_bins=15, ood=ood, n_boot=60)
    # Same scores under two names: different OOD resamples, so different replicates.
    assert not np.array_equal(ev.replicates["a_auroc"].values, ev.replicates["b_auroc"].values)
    assert ev.streams["a_auroc"] != ev.streams["b_auroc"]
