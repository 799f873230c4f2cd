"""gpu_check.sh dry-run on CPU (GPU_CHECK_TINY=1), train_check.py and the summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import make_subset
import pytest
import summarize_gpu_check
import train_check

from calibench.errors import UsageError

from .conftest import BENCHMARKS, REPO_ROOT


@pytest.fixture(scope="module")
def small_root(real_cifar10, tmp_path_factory):
    root = tmp_path_factory.mktemp("subset")
    make_subset.make_subset(real_cifar10, root / "cifar10.npz", n_train=5_400, n_test=200)
    return root


def test_train_check_trains_two_epochs_and_checks(small_root) -> None:
    r = train_check.check(
        data_root=small_root,
        backbone="resnet20",
        device="cpu",
        train_subset=256,
        batch_size=64,
        eval_images=100,
    )
    assert set(r["checks"]) == {"completed", "loss_fell", "losses_finite", "metrics_finite"}
    assert r["checks"]["completed"] and r["checks"]["losses_finite"]
    assert r["checks"]["metrics_finite"]
    assert r["ok"] == all(r["checks"].values())
    assert r["checks"]["loss_fell"] == (r["history"][1] < r["history"][0])
    assert len(r["history"]) == 2 and r["eval_sizes"] == {"val": 100, "test": 100, "ood": 100}


def test_train_check_refuses_bad_input(tmp_path) -> None:
    with pytest.raises(UsageError, match="make_subset"):
        train_check.check(data_root=tmp_path, device="cpu")
    (tmp_path / "cifar10.npz").touch()
    with pytest.raises(UsageError, match="epochs"):
        train_check.check(data_root=tmp_path, device="cpu", epochs=1)


def test_summary_flags_failures_but_not_skips() -> None:
    ok_entry = {"section": "train_throughput bs=128", "rc": 0, "seconds": 9, "result": {}}
    skipped = {"section": "eval_throughput bs=512 compile", "rc": None, "skipped": "time budget"}
    timed_out = {"section": "eval_throughput bs=128", "rc": 124, "seconds": 75, "result": None}
    text, ok = summarize_gpu_check.summarize([ok_entry, skipped])
    assert ok and "skipped (time budget)" in text
    text, ok = summarize_gpu_check.summarize([ok_entry, timed_out])
    assert not ok and "timed out" in text
    bad_check = {"section": "train_check 2 epochs", "rc": 0, "result": {"ok": False}}
    assert not summarize_gpu_check.summarize([bad_check])[1]


@pytest.mark.slow
def test_gpu_check_dry_run_on_cpu(small_root, tmp_path) -> None:
    """The whole script on CPU at tiny sizes, but the sweep sections (each a `calibench run`
    subprocess per --runs-per-device value; benchmarks/sweep_throughput.py has its own test)."""
    out = tmp_path / "out"
    env = {
        **os.environ,
        "GPU_CHECK_DEVICE": "cpu",
        "GPU_CHECK_TINY": "1",
        "GPU_CHECK_COMPILE": "0",
        "GPU_CHECK_SWEEP": "0",
        "GPU_CHECK_DATA_ROOT": str(small_root),
        "PYTHON": sys.executable,
    }
    env.pop("OUT", None)
    proc = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_check.sh"), str(out)],  # the folder as $1
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "gpu_check.log", "results.jsonl", "summary.json", "summary.md",
    ]  # fmt: skip
    entries = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [e["section"] for e in entries] == [
        "train_throughput bs=32",
        "eval_throughput with shift grid",
        "checkpoint_cost",
        "train_check 2 epochs",
    ]
    assert all(e["rc"] == 0 and e["result"] for e in entries)
    assert entries[0]["result"]["backbone"] == "resnet20"
    assert entries[1]["result"]["n_shift"] == 75 * 4
    assert entries[2]["result"]["write_seconds"] > 0
    assert entries[3]["result"]["ok"] is True
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is True and len(summary["sections"]) == 4
    assert "shift images" in summary["sections"][1]["figures"]
    assert "train_check 2 epochs" in (out / "summary.md").read_text()


def test_the_summary_reads_sweep_and_checkpoint_figures() -> None:
    sweep = {
        "section": "sweep_throughput", "rc": 0, "seconds": 80,
        "result": {"sweeps": [{"runs_per_device": 1, "sweep_img_per_s": 900.0, "wall_seconds": 60},
                              {"runs_per_device": 4, "sweep_img_per_s": 2400.0, "wall_seconds": 22}]},
    }  # fmt: skip
    ckpt = {
        "section": "checkpoint_cost", "rc": 0, "seconds": 9,
        "result": {"file_mb": 188.5, "write_seconds": 0.6, "img_per_s": 21000,
                   "every_epoch_fraction": 0.218, "by_time_every_s": 300, "by_time_fraction": 0.002},
    }  # fmt: skip
    s = summarize_gpu_check.summary([sweep, ckpt])
    assert (
        s["ok"] and s["sections"][0]["figures"] == "N=1: 900 img/s (60 s); N=4: 2400 img/s (22 s)"
    )
    assert "every epoch 21.8%" in s["sections"][1]["figures"]


def test_gpu_check_needs_out() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    proc = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_check.sh")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "OUT" in proc.stderr and "$1" in proc.stderr
