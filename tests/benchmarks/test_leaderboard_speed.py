"""Dry run of benchmarks/leaderboard_speed.py with tiny runs (no timing assertions)."""

from __future__ import annotations

import leaderboard_speed as ls
import pytest

from calibench.errors import UsageError
from calibench.leaderboard import build_leaderboard
from calibench.records import iter_records


def test_made_runs_are_valid_completed_records_whose_files_give_their_metrics(tmp_path):
    ls.make_runs(tmp_path, n_runs=4, n_test=60, n_ood=50, seeds=2)
    records, problems = iter_records(tmp_path)
    assert problems == [] and len(records) == 4
    assert {r.data["loss"]["label"] for r in records} == {"brier", "ce"}
    board = build_leaderboard(tmp_path, n_boot=0)
    assert set(board.runs["source"]) == {"files"}
    runs = board.runs.set_index("run_id")
    for r in records:
        m = r.data["metrics"]
        assert runs.loc[r.data["run_id"], "ece"] == pytest.approx(m["test"]["ece"], rel=1e-12)
        auroc = m["ood"]["svhn"]["msp"]["auroc"]
        assert runs.loc[r.data["run_id"], "svhn_auroc"] == pytest.approx(auroc, rel=1e-12)


def test_the_cli_is_timed_cold_then_warm_with_identical_output():
    r = ls.benchmark(runs=2, n_test=40, n_ood=30, n_boot=10, repeats=1)
    assert r["warm_identical_to_cold"] and r["caches_written"] == 2 and r["caches_cleared"] == 0
    assert r["cold_seconds"] > 0 and r["warm_seconds"]["n"] == 1


def test_bad_arguments_raise_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="--runs at most 81"):
        ls.make_runs(tmp_path, n_runs=82, n_test=10, n_ood=10)
    with pytest.raises(UsageError, match="n-boot"):
        ls.benchmark(n_boot=1)
