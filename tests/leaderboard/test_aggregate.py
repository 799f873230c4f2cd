"""Grouping, mean ± std, status counts and ranking, checked against hand computation."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from calibench.errors import UsageError
from calibench.leaderboard import build_leaderboard


def fake_metrics(acc: float, ece: float, nll: float = 1.0) -> dict[str, Any]:
    return {"test": {"acc": acc, "ece": ece, "adaece": ece / 2, "nll": nll}, "ood": {}}


def row(board: Any, loss: str, **keys: Any) -> Any:
    t = board.table
    sel = t[t["loss"] == loss]
    for k, v in keys.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, f"expected one row for {loss} {keys}, got {len(sel)}"
    return sel.iloc[0]


def test_mean_std_and_seed_count_match_hand_computation(make_run, tmp_path):
    accs, eces = [0.91, 0.87, 0.95], [0.031, 0.052, 0.018]
    for seed, (a, e) in enumerate(zip(accs, eces, strict=True)):
        make_run(loss="focal", params={"gamma": 3}, seed=seed, metrics=fake_metrics(a, e))
    make_run(loss="ce", seed=0, metrics=fake_metrics(0.8, 0.1))
    board = build_leaderboard(tmp_path / "results", n_boot=0)
    r = row(board, "focal(gamma=3)")
    assert r["n_seeds"] == 3 and r["seeds"] == "0,1,2"
    assert r["acc_mean"] == pytest.approx(sum(accs) / 3)
    assert r["acc_std"] == pytest.approx(statistics.stdev(accs))
    assert r["ece_mean"] == pytest.approx(statistics.fmean(eces))
    assert r["ece_std"] == pytest.approx(statistics.stdev(eces))
    assert r["adaece_mean"] == pytest.approx(statistics.fmean(e / 2 for e in eces))
    single = row(board, "ce")
    assert single["n_seeds"] == 1
    assert single["ece_mean"] == pytest.approx(0.1)
    assert single["ece_std"] != single["ece_std"]  # NaN: no std from one seed


def test_diverged_and_failed_runs_are_counted_not_dropped(make_run, tmp_path):
    make_run(loss="ls", seed=0, metrics=fake_metrics(0.9, 0.02))
    make_run(loss="ls", seed=1, metrics=fake_metrics(0.8, 0.04))
    make_run(loss="ls", seed=2, status="diverged")
    make_run(loss="mmce", seed=0, status="failed")
    board = build_leaderboard(tmp_path / "results", n_boot=0)
    ls = row(board, "ls")
    assert ls["status"] == "2 completed, 1 diverged"
    assert (ls["n_completed"], ls["n_diverged"], ls["n_failed"]) == (2, 1, 0)
    assert ls["ece_mean"] == pytest.approx(0.03)  # the diverged seed does not enter the mean
    assert "seed 2 diverged: synthetic diverged run" in ls["problems"]
    mmce = row(board, "mmce")
    assert mmce["status"] == "0 completed, 1 failed"
    assert pd.isna(mmce["rank"])
    assert list(board.table["loss"]) == ["ls", "mmce"]  # unranked rows come last


def test_rank_follows_sort_direction(make_run, tmp_path):
    make_run(loss="a", metrics=fake_metrics(0.70, 0.01))
    make_run(loss="b", metrics=fake_metrics(0.90, 0.05))
    make_run(loss="c", metrics=fake_metrics(0.80, 0.03))
    results = tmp_path / "results"
    by_ece = build_leaderboard(results, sort="ece", n_boot=0).table
    assert list(by_ece["loss"]) == ["a", "c", "b"]
    assert list(by_ece["rank"]) == [1, 2, 3]
    by_acc = build_leaderboard(results, sort="acc", n_boot=0).table
    assert list(by_acc["loss"]) == ["b", "c", "a"]


def test_deviations_backbones_and_protocols_make_separate_rows(make_run, tmp_path):
    make_run(loss="ce", seed=0, metrics=fake_metrics(0.9, 0.02))
    make_run(loss="ce", seed=1, metrics=fake_metrics(0.9, 0.04), deviations={"epochs": 1})
    make_run(loss="ce", seed=0, metrics=fake_metrics(0.9, 0.06), backbone="resnet56")
    make_run(loss="ce", seed=0, metrics=fake_metrics(0.9, 0.08), protocol="fast")
    board = build_leaderboard(tmp_path / "results", n_boot=0)
    assert len(board.table) == 4
    assert set(board.table["deviations"]) == {"none", "epochs=1"}
    assert list(board.table["rank"]) == [1, 1, 1, 1]  # each is alone in its section
    only_fast = build_leaderboard(tmp_path / "results", protocol="fast", n_boot=0)
    assert list(only_fast.table["protocol"]) == ["fast"]


def test_ood_columns_prefer_svhn_else_the_sets_present(make_run, tmp_path):
    ood = {
        "gaussian": {"msp": {"auroc": 0.7, "fpr95": 0.6}},
        "uniform": {"msp": {"auroc": 0.8, "fpr95": 0.5}},
    }
    make_run(loss="ce", metrics=fake_metrics(0.9, 0.02), ood=ood)
    board = build_leaderboard(tmp_path / "results", n_boot=0)
    keys = [c.key for c in board.columns]
    assert keys[-4:] == ["gaussian_auroc", "gaussian_fpr95", "uniform_auroc", "uniform_fpr95"]
    assert row(board, "ce")["uniform_auroc_mean"] == pytest.approx(0.8)
    make_run(
        loss="ls",
        metrics=fake_metrics(0.9, 0.02),
        ood={"svhn": {"msp": {"auroc": 0.9, "fpr95": 0.3}}},
    )
    keys = [c.key for c in build_leaderboard(tmp_path / "results", n_boot=0).columns]
    assert keys[-2:] == ["svhn_auroc", "svhn_fpr95"] and "gaussian_auroc" not in keys


def test_bad_sort_and_unknown_protocol_are_usage_errors(make_run, tmp_path):
    make_run(loss="ce", metrics=fake_metrics(0.9, 0.02))
    with pytest.raises(UsageError, match=r"cannot sort by 'eec'.*ece"):
        build_leaderboard(tmp_path / "results", sort="eec", n_boot=0)
    with pytest.raises(UsageError, match=r"no records for protocol 'standard'.*smoke"):
        build_leaderboard(tmp_path / "results", protocol="standard", n_boot=0)


def test_malformed_records_are_reported_and_skipped(make_run, tmp_path):
    make_run(loss="ce", metrics=fake_metrics(0.9, 0.02))
    bad = tmp_path / "results" / "smoke" / "broken" / "record.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    board = build_leaderboard(tmp_path / "results", n_boot=0)
    assert list(board.table["loss"]) == ["ce"]
    assert [p.path for p in board.problems] == [bad]


def _truncated_zip(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _labels_out_of_range(path: Path) -> None:
    with np.load(path) as npz:
        logits, labels = npz["logits"], npz["labels"].copy()
    labels[0] = logits.shape[1]
    np.savez_compressed(path, logits=logits, labels=labels)


def _not_a_zip(path: Path) -> None:
    path.write_bytes(b"not a zip file")


@pytest.mark.parametrize(
    "damage",
    [
        _not_a_zip,
        _truncated_zip,
        _labels_out_of_range,
    ],
)
def test_a_malformed_prediction_file_is_a_note_about_that_run(make_run, tmp_path, damage):
    path = make_run(loss="a", seed=0).parent / "test_predictions.npz"
    make_run(loss="b", seed=0, strength=3.0)
    damage(path)
    board = build_leaderboard(tmp_path / "results", n_boot=20)
    assert pd.isna(row(board, "a")["ece_ci_low"]) and not pd.isna(row(board, "b")["ece_ci_low"])
    assert any(
        "cannot use its saved files" in n and "test_predictions.npz" in n for n in board.notes
    )


@pytest.mark.parametrize("bug", [TypeError, ValueError, KeyError])
def test_a_bug_while_reading_the_saved_files_is_not_turned_into_a_note(
    make_run, tmp_path, monkeypatch, bug
):
    import calibench.leaderboard.aggregate as aggregate

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise bug("a bug, not a malformed file")

    make_run(loss="a", seed=0)
    monkeypatch.setattr(aggregate, "run_evidence", broken)
    with pytest.raises(bug, match="a bug"):
        build_leaderboard(tmp_path / "results", n_boot=20)
