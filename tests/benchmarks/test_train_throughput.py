"""Dry run of benchmarks/train_throughput.py on CPU with tiny sizes (no timing assertions)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import train_throughput as tt

from calibench.errors import UsageError

from .conftest import BENCHMARKS, REPO_ROOT

TINY = {"images": 48, "batch_size": 16, "warmup": 1, "steps": 1, "repeats": 2, "workers": 0}


def test_benchmark_reports_all_three_pipelines_and_their_ratios() -> None:
    r = tt.benchmark(device="cpu", **TINY)
    assert set(tt.JSON_KEYS) <= set(r)
    assert (r["device"], r["backbone"], r["batch_size"]) == ("cpu", "resnet20", 16)
    for key in ("img_s_calibench", "img_s_pure", "img_s_baseline", "tflops"):
        assert math.isfinite(r[key]) and r[key] > 0
    assert r["efficiency"] == pytest.approx(r["img_s_calibench"] / r["img_s_pure"])
    assert r["speedup"] == pytest.approx(r["img_s_calibench"] / r["img_s_baseline"])
    # resnet20 is ~41 M multiply-adds per image forward (He et al. 2016)
    assert 0.07 < r["gflops_fwd_per_image"] < 0.09
    assert r["tflops"] == pytest.approx(3 * r["gflops_fwd_per_image"] * r["img_s_calibench"] / 1e3)
    assert r["precision"] == "fp32" and r["stats"]["pure"]["n"] == 2


def test_real_images_are_read_from_an_npz(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(40) % 10)
    got_x, got_y = tt.load_images(tmp_path / "d.npz", 32)
    assert np.array_equal(got_x, x[:32]) and got_y.tolist() == (np.arange(32) % 10).tolist()
    with pytest.raises(UsageError, match="x_train"):
        np.savez(tmp_path / "bad.npz", images=x)
        tt.load_images(tmp_path / "bad.npz", 32)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch-size"),
        ({"images": 8, "batch_size": 16}, "fewer than one batch"),
        ({"device": "tpu"}, "device"),
        ({"backbone": "no-such-net"}, "no-such-net"),
    ],
)
def test_bad_arguments_raise_usage_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        tt.benchmark(**{**TINY, "device": "cpu", "baseline": False, **kwargs})


def test_script_prints_one_json_object_last() -> None:
    args = ["--device", "cpu", "--images", "32", "--batch-size", "16", "--warmup", "0"]
    args += ["--steps", "1", "--repeats", "1", "--workers", "0", "--no-baseline"]
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "train_throughput.py"), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(tt.JSON_KEYS) <= set(result)
    assert result["img_s_baseline"] is None and result["speedup"] is None
    assert "efficiency a/b" in out.stdout


def test_script_reports_bad_input_in_one_line() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "train_throughput.py"), "--device=cpu", "--batch-size=0"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error: --batch-size must be positive")
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_compiled_step_runs() -> None:
    r = tt.benchmark(device="cpu", compile=True, baseline=False, **{**TINY, "warmup": 2})
    assert r["compile"] is True and r["img_s_calibench"] > 0 and r["img_s_pure"] > 0
