"""benchmarks/sweep_throughput.py and checkpoint_cost.py: their arithmetic and command lines,
and a tiny real checkpoint write (no timing assertions)."""

from __future__ import annotations

from pathlib import Path

import checkpoint_cost as cc
import pytest
import sweep_throughput as st

from calibench.errors import UsageError


def test_sweep_figures_add_up_the_runs() -> None:
    records = [
        {"status": "completed", "timing": {"img_per_s": 100.0, "train_seconds": 50.0, "cpu_threads": 1}},
        {"status": "completed", "timing": {"img_per_s": 300.0, "train_seconds": 10.0, "cpu_threads": 1}},
    ]  # fmt: skip
    f = st.sweep_figures(records, wall_s=80.0)
    assert f["train_images"] == 8000 and f["sweep_img_per_s"] == 100.0
    assert f["train_img_per_s_per_run"] == 200.0 and f["cpu_threads"] == 1
    with pytest.raises(UsageError, match="did not complete every run"):
        st.sweep_figures([{**records[0], "status": "failed"}], 1.0)


def test_sweep_command_passes_the_settings(tmp_path: Path) -> None:
    cmd = st.sweep_command(tmp_path, 2, cpu_threads=2, train_subset=5000, epochs=2)
    line = " ".join(cmd)
    assert "-m calibench run" in line and f"--results {tmp_path}" in line
    assert "--runs-per-device 2" in line and "--cpu-threads 2" in line
    assert "--train-subset 5000 --epochs 2" in line and "--device cpu" in line


def test_checkpoint_cost_writes_a_real_checkpoint(tmp_path: Path) -> None:
    r = cc.benchmark("resnet20", repeats=1, directory=tmp_path, img_per_s=1000, epoch_images=2000)
    assert 1 < r["file_mb"] < 4 and r["optimizer_mb"] == pytest.approx(r["model_mb"], rel=0.05)
    assert r["epoch_seconds"] == 2.0 and 0 < r["by_time_fraction"] < r["every_epoch_fraction"]
    assert list(tmp_path.iterdir()) == []  # its files are removed


def test_cost_fractions() -> None:
    f = cc.cost_fractions(write_s=1.0, img_per_s=20_000, epoch_images=40_000, every_s=299.0)
    assert f["epoch_seconds"] == 2.0
    assert f["every_epoch_fraction"] == pytest.approx(1 / 3)
    assert f["by_time_fraction"] == pytest.approx(1 / 300)
