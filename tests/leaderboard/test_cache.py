"""Each run's statistics are resampled once and kept in its folder (``leaderboard_cache.npz``)."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import calibench.leaderboard.cache as cache_module
import calibench.leaderboard.significance as significance
import calibench.metrics.bootstrap as bootstrap
from calibench.leaderboard import RENDERERS, build_leaderboard, publish
from calibench.leaderboard.cache import CACHE_FILENAME
from calibench.records import load_record, save_predictions, write_record

from .conftest import synthetic_logits

N_BOOT = 40


@pytest.fixture
def resampled(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Counts the calls of the bootstrap: ``replicates`` (a test set), ``ood_replicates`` (an
    OOD set)."""
    calls: Counter = Counter()
    for name in ("replicates", "ood_replicates"):
        original = getattr(bootstrap, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(bootstrap, name, counted)
    return calls


@pytest.fixture(scope="module")
def made() -> dict[str, Path]:
    """Holds the first test's sweep, which the others copy (making runs costs seconds)."""
    return {}


@pytest.fixture
def sweep(make_run, tmp_path, tmp_path_factory, made) -> Path:
    """Two losses x two seeds with SVHN scores, one diverged run; the results folder."""
    results = tmp_path / "results"
    if "template" in made:
        shutil.copytree(made["template"], results)
        return results
    for loss, strength in (("ce", 1.5), ("focal", 2.5)):
        for seed in range(2):
            make_run(loss=loss, seed=seed, strength=strength, ood_sets=["svhn"])
    make_run(loss="ls", seed=0, status="diverged")
    made["template"] = tmp_path_factory.mktemp("sweep") / "results"
    shutil.copytree(results, made["template"])
    return results


def rendered(results: Path, **kwargs) -> dict[str, str]:
    board = build_leaderboard(results, **{"n_boot": N_BOOT, **kwargs})
    return {name: render(board) for name, render in RENDERERS.items()}


def caches(results: Path) -> list[Path]:
    return sorted(results.rglob(CACHE_FILENAME))


def test_the_second_rendering_resamples_nothing_and_is_byte_identical(sweep, resampled):
    first = rendered(sweep)
    assert resampled == {"replicates": 4, "ood_replicates": 4}
    assert len(caches(sweep)) == 4  # the completed runs; the diverged one has nothing to cache
    resampled.clear()
    second = rendered(sweep)
    assert resampled == {}
    assert second == first


def test_the_cache_changes_no_byte_of_any_format(sweep, monkeypatch):
    cached_cold = rendered(sweep)
    cached_warm = rendered(sweep)
    monkeypatch.setattr(cache_module, "load", lambda path, key: None)
    monkeypatch.setattr(cache_module, "save", lambda path, key, evidence: None)
    for path in caches(sweep):
        path.unlink()
    uncached = rendered(sweep)
    assert caches(sweep) == []
    assert cached_cold == cached_warm == uncached


def test_a_changed_record_or_file_recomputes_that_run_only(sweep, resampled, test_labels):
    rendered(sweep)
    paths = sorted(sweep.rglob("record.json"))
    done = [p for p in paths if load_record(p)["status"] == "completed"]
    record = load_record(done[0])
    record["metrics"]["test_ts"]["temperature"] = 2.0
    write_record(done[0].parent, record)
    save_predictions(done[1].parent, synthetic_logits(test_labels, 0.5, 7), test_labels)
    resampled.clear()
    before = {p: p.read_bytes() for p in caches(sweep)}
    changed = rendered(sweep)
    assert resampled == {"replicates": 2, "ood_replicates": 2}
    after = {p: p.read_bytes() for p in caches(sweep)}
    rewritten = {p.parent for p in after if after[p] != before[p]}
    assert rewritten == {done[0].parent, done[1].parent}
    resampled.clear()
    assert rendered(sweep) == changed and resampled == {}


@pytest.mark.parametrize("setting", [{"n_boot": N_BOOT + 10}, {"seed": 3}])
def test_a_changed_resampling_setting_recomputes_and_overwrites(sweep, resampled, setting):
    rendered(sweep)
    resampled.clear()
    changed = rendered(sweep, **setting)
    assert resampled == {"replicates": 4, "ood_replicates": 4}
    for path in caches(sweep):
        with np.load(path) as npz:
            inputs = json.loads(str(npz["meta"][()]))["key"]["inputs"]
        assert {k: inputs[k] for k in setting} == setting
    resampled.clear()
    assert rendered(sweep, **setting) == changed and resampled == {}


def test_values_only_are_served_by_a_cache_with_replicates(sweep, monkeypatch):
    rendered(sweep)
    computed = []
    original = significance.run_evidence
    monkeypatch.setattr(
        "calibench.leaderboard.aggregate.run_evidence",
        lambda *a, **k: computed.append(1) or original(*a, **k),
    )
    from_cache = rendered(sweep, n_boot=0)
    assert computed == []
    for path in caches(sweep):
        path.unlink()
    assert rendered(sweep, n_boot=0) == from_cache and len(computed) == 4


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b"not a zip file"),
        lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
        lambda p: np.savez(p, meta=np.asarray("[1, 2]")),
        lambda p: np.savez(p, points=np.zeros(3)),
    ],
    ids=["garbage", "truncated", "meta-not-ours", "no-meta"],
)
def test_a_damaged_cache_is_ignored_and_rewritten(sweep, resampled, damage):
    first = rendered(sweep)
    target = caches(sweep)[0]
    damage(target)
    resampled.clear()
    assert rendered(sweep) == first
    assert resampled == {"replicates": 1, "ood_replicates": 1}
    resampled.clear()
    assert rendered(sweep) == first and resampled == {}


def test_a_read_only_folder_is_computed_in_memory_with_one_note(sweep, monkeypatch, caplog):
    expected = rendered(sweep)
    for path in caches(sweep):
        path.unlink()

    def read_only(path, write):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(cache_module, "atomic_write", read_only)
    with caplog.at_level(logging.WARNING, logger="calibench.leaderboard.cache"):
        assert rendered(sweep) == expected
    assert caches(sweep) == []
    [note] = caplog.records
    assert "4 run folder(s) refused the leaderboard cache" in note.getMessage()
    assert "Read-only file system" in note.getMessage()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anyway")
def test_a_folder_without_write_permission_still_renders(sweep):
    expected = rendered(sweep)
    for path in caches(sweep):
        path.unlink()
    run_dirs = [p.parent for p in sweep.rglob("record.json")]
    for d in run_dirs:
        d.chmod(0o555)
    try:
        assert rendered(sweep) == expected
        assert caches(sweep) == []
    finally:
        for d in run_dirs:
            d.chmod(0o755)


def test_published_versions_hold_no_cache(sweep, tmp_path):
    rendered(sweep)
    result = publish(sweep, root=tmp_path / "leaderboards", n_boot=N_BOOT)
    tables = ["LEADERBOARD.md", "LEADERBOARD.csv", "LEADERBOARD.json", "LEADERBOARD.html"]
    assert sorted(p.name for p in result.path.rglob("*") if p.is_file()) == sorted(
        ["CHANGES.md", "calibration_accuracy.png", "version.json", *tables, *["record.json"] * 5]
    )
    build_leaderboard(result.path / "records", n_boot=N_BOOT)  # records only: nothing to cache
    assert caches(result.path) == []


def test_a_leaderboard_read_from_its_caches_never_loads_torch(sweep):
    """Importing torch costs seconds: a warm rendering needs none of it (run in a fresh
    interpreter, since this one has torch loaded)."""
    rendered(sweep)
    script = (
        "import sys\n"
        "from calibench.leaderboard import RENDERERS, build_leaderboard\n"
        f"board = build_leaderboard({str(sweep)!r}, n_boot={N_BOOT})\n"
        "done = board.table[board.table['n_seeds'] > 0]\n"
        "assert len(done) == 2 and done['ece_ci_low'].notna().all()\n"
        "for render in RENDERERS.values():\n"
        "    render(board)\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
