"""Real CPU training runs on CIFAR-10 -> records -> leaderboard -> publish v1 and v2."""

from __future__ import annotations

import pytest

from calibench.cli import main
from calibench.leaderboard import build_leaderboard
from calibench.records import iter_records


def run(results, data_dir, seeds: str) -> None:
    argv = [
        "run", "--protocol", "smoke", "--losses", "ce", "--backbone", "resnet20",
        "--seeds", seeds, "--epochs", "1", "--train-subset", "200", "--device", "cpu",
        "--results", str(results), "--data-root", str(data_dir),
    ]  # fmt: skip
    assert main(argv) == 0


@pytest.mark.slow
def test_real_runs_to_published_versions(tmp_path, shared_data_dir, capsys, allow_losses):
    results, root = tmp_path / "results", tmp_path / "leaderboards"
    run(results, shared_data_dir, "0,1")
    records, problems = iter_records(results)
    assert problems == [] and len(records) == 2
    for r in records:
        assert r.data["status"] == "completed"
        assert r.artifact(r.data["artifacts"]["predictions"]) is not None
        assert r.artifact(r.data["artifacts"]["plots"]["reliability"]) is not None
    capsys.readouterr()

    assert main(["leaderboard", "-r", str(results), "--format", "md", "--bootstrap", "50"]) == 0
    md = capsys.readouterr().out
    board = build_leaderboard(records, n_boot=0)
    (row,) = board.table.itertuples()
    accs = [r.data["metrics"]["test"]["acc"] for r in records]
    assert row.acc_mean == pytest.approx(sum(accs) / 2)
    assert f"{row.acc_mean * 100:.2f} ± {row.acc_std * 100:.2f} [" in md
    assert "| ce " in md and "2 completed" in md and "epochs=1" in md

    argv = ["leaderboard", "publish", "-r", str(results), "--root", str(root), "--bootstrap", "0"]
    assert main(argv) == 0
    run(results, shared_data_dir, "2")
    assert main(argv) == 0
    changes = (root / "smoke" / "v2" / "CHANGES.md").read_text()
    assert "## Runs added (1)" in changes and "seed 2" in changes
    assert "## Rows whose metrics changed (1)" in changes and "seeds 0,1 → 0,1,2" in changes
    assert len(list((root / "smoke" / "v2" / "records").glob("*/record.json"))) == 3
