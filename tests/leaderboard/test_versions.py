"""Publishing immutable versions: v1, then v2 with a correct CHANGES.md; refusals."""

from __future__ import annotations

import base64
import json
import shutil
from importlib import metadata

import numpy as np
import pytest

from calibench.errors import UsageError
from calibench.leaderboard import PublishError, build_leaderboard, publish
from calibench.leaderboard import versions as publish_module
from calibench.leaderboard.versions import rendering_differences, rendering_packages, verify
from calibench.records import load_record, write_record


def metrics(ece: float) -> dict:
    return {"test": {"acc": 0.9, "ece": ece, "adaece": ece, "nll": 0.5}, "ood": {}}


def section(changes: str, title: str) -> list[str]:
    """The bullet lines under ``## title (n)``."""
    lines = changes.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"## {title} ("))
    out = []
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        if line.startswith("- "):
            out.append(line[2:])
    return out


def test_publish_v1_then_v2_with_changes(make_run, tmp_path):
    results, root = tmp_path / "results", tmp_path / "leaderboards"
    ce0 = make_run(loss="ce", seed=0, metrics=metrics(0.05))
    make_run(loss="ce", seed=1, metrics=metrics(0.07))
    gone = make_run(loss="mmce", seed=0, metrics=metrics(0.04))

    v1 = publish(results, root=root, n_boot=0)
    assert v1.version == 1 and v1.path == root / "smoke" / "v1"
    assert sorted(p.name for p in v1.path.iterdir()) == [
        "CHANGES.md",
        "LEADERBOARD.csv",
        "LEADERBOARD.html",
        "LEADERBOARD.json",
        "LEADERBOARD.md",
        "calibration_accuracy.png",
        "records",
        "version.json",
    ]
    assert len(list((v1.path / "records").glob("*/record.json"))) == 3
    assert "first version" in v1.changes
    assert len(section(v1.changes, "Rows added")) == 2
    assert len(section(v1.changes, "Runs added")) == 3
    md = (v1.path / "LEADERBOARD.md").read_text()
    assert md.startswith("# smoke leaderboard v1") and "| mmce" in md

    # v2: a new loss, a third ce seed that diverged, a changed ce seed-0 record, mmce removed
    make_run(loss="focal", params={"gamma": 3}, seed=0, metrics=metrics(0.03))
    make_run(loss="ce", seed=2, status="diverged")
    rec = load_record(ce0)
    rec["metrics"]["test"]["ece"] = 0.09
    write_record(ce0, rec)
    shutil.rmtree(gone.parent)

    v2 = publish(results, root=root, n_boot=0)
    assert v2.version == 2 and v2.path == root / "smoke" / "v2"
    changes = (v2.path / "CHANGES.md").read_text()
    assert changes == v2.changes
    assert changes.startswith("# smoke leaderboard v2: changes since v1")
    added = section(changes, "Rows added")
    assert len(added) == 1 and added[0].startswith("focal(gamma=3) · cifar10 · resnet20")
    removed = section(changes, "Rows removed")
    assert len(removed) == 1 and removed[0].startswith("mmce")
    changed = section(changes, "Rows whose metrics changed")
    assert len(changed) == 1 and changed[0].startswith("ce ·")
    assert "status 2 completed → 2 completed, 1 diverged" in changed[0]
    assert "ECE % 6.00 ± 1.41 → 8.00 ± 1.41" in changed[0]  # mean of (5, 7) -> (9, 7)
    assert "ECE %" in changed[0] and "acc %" not in changed[0]  # acc did not change
    assert len(section(changes, "Runs added")) == 2
    assert len(section(changes, "Runs removed")) == 1
    run_changed = section(changes, "Runs whose record changed")
    assert len(run_changed) == 1 and "test.ece 0.05 → 0.09" in run_changed[0]
    # v1 is untouched
    assert len(list((v1.path / "records").glob("*/record.json"))) == 3
    assert (v1.path / "CHANGES.md").read_text() == v1.changes


def test_refuses_to_publish_nothing_new(make_run, tmp_path):
    make_run(loss="ce", seed=0, metrics=metrics(0.05))
    publish(tmp_path / "results", root=tmp_path / "lb", n_boot=0)
    with pytest.raises(PublishError, match="nothing changed since v1"):
        publish(tmp_path / "results", root=tmp_path / "lb", n_boot=0)
    assert sorted(p.name for p in (tmp_path / "lb" / "smoke").iterdir()) == ["v1"]
    again = publish(tmp_path / "results", root=tmp_path / "lb", n_boot=0, allow_unchanged=True)
    assert again.version == 2 and "None." in again.changes


def test_refuses_to_overwrite_an_existing_version(make_run, tmp_path, monkeypatch):
    make_run(loss="ce", seed=0, metrics=metrics(0.05))
    existing = tmp_path / "lb" / "smoke" / "v1"
    existing.mkdir(parents=True)
    (existing / "LEADERBOARD.md").write_text("published earlier")
    monkeypatch.setattr(publish_module, "existing_versions", lambda _: [])  # a racing publisher
    with pytest.raises(
        PublishError, match="already exists; published versions are never overwritten"
    ):
        publish(tmp_path / "results", root=tmp_path / "lb", n_boot=0)
    assert (existing / "LEADERBOARD.md").read_text() == "published earlier"


def test_a_failed_publish_leaves_nothing_behind(make_run, tmp_path, monkeypatch):
    make_run(loss="ce", seed=0, metrics=metrics(0.05))

    def boom(board):
        raise RuntimeError("disk full")

    monkeypatch.setattr(publish_module, "render_csv", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        publish(tmp_path / "results", root=tmp_path / "lb", n_boot=0)
    folder = tmp_path / "lb" / "smoke"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_malformed_records_block_publishing_unless_skipped(make_run, tmp_path):
    make_run(loss="ce", seed=0, metrics=metrics(0.05))
    bad = tmp_path / "results" / "smoke" / "bad" / "record.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(json.dumps({"schema_version": 1}))
    with pytest.raises(PublishError, match=r"1 malformed record.*--skip-invalid"):
        publish(tmp_path / "results", root=tmp_path / "lb", n_boot=0)
    v1 = publish(tmp_path / "results", root=tmp_path / "lb", n_boot=0, skip_invalid=True)
    md = (v1.path / "LEADERBOARD.md").read_text()
    assert "1 malformed record(s) were skipped" in md and str(bad) not in md


def test_several_protocols_need_a_choice(make_run, tmp_path):
    make_run(loss="ce", seed=0, metrics=metrics(0.05))
    make_run(loss="ce", seed=0, metrics=metrics(0.05), protocol="fast")
    with pytest.raises(PublishError, match=r"several protocols .*--protocol"):
        publish(tmp_path / "results", root=tmp_path / "lb", n_boot=0)
    v1 = publish(tmp_path / "results", root=tmp_path / "lb", protocol="fast", n_boot=0)
    assert v1.path == tmp_path / "lb" / "fast" / "v1" and v1.n_records == 1
    assert [p.name for p in (v1.path / "records").iterdir()] == [
        load_record(p)["run_id"] for p in (tmp_path / "results" / "fast").glob("*/record.json")
    ]


def test_a_protocol_without_records_publishes_nothing(make_run, tmp_path):
    make_run(loss="ce", seed=0, metrics=metrics(0.05))
    with pytest.raises(UsageError, match=r"no records for protocol 'standard'.*smoke"):
        publish(tmp_path / "results", root=tmp_path / "lb", protocol="standard", n_boot=0)
    assert not (tmp_path / "lb").exists()


PNG = b"\x89PNG\r\n\x1a\n"


def test_a_published_version_re_renders_byte_for_byte(make_run, tmp_path):
    """``verify`` renders a version again from the run folders and finds it identical; any
    edit of a rendered file, a record or a run's predictions is reported."""
    results, root = tmp_path / "results", tmp_path / "lb"
    for seed in (1, 0):
        for loss in ("ce", "focal"):
            plots = {"reliability": PNG + f"{loss}{seed}".encode(), "reliability_ts": PNG + b"ts"}
            make_run(loss=loss, seed=seed, plots=plots, ood_sets=("gaussian",))
    v1 = publish(results, root=root, n_boot=20)
    assert verify(v1.path, results) == []
    assert (v1.path / "reliability" / "ce.png").read_bytes() == PNG + b"ce0"  # the lowest seed
    assert (v1.path / "reliability" / "focal_ts.png").read_bytes() == PNG + b"ts"
    html = (v1.path / "LEADERBOARD.html").read_text()
    for loss in ("ce", "focal"):  # one diagram per row: the lowest seed's
        assert base64.b64encode(PNG + f"{loss}0".encode()).decode() in html
        assert base64.b64encode(PNG + f"{loss}1".encode()).decode() not in html
    md = (v1.path / "LEADERBOARD.md").read_text()
    assert "(reliability/ce.png)" in md and "OOD sets: gaussian (synthetic noise only" in md
    assert (v1.path / "calibration_accuracy.png").read_bytes().startswith(PNG)
    assert "(calibration_accuracy.png)" in md
    meta = json.loads((v1.path / "version.json").read_text())
    assert meta["n_boot"] == 20 and meta["sort"] == "ece"
    assert meta["rendered_with"] == rendering_packages()
    assert meta["rendered_with"]["matplotlib"] == metadata.version("matplotlib")

    csv = v1.path / "LEADERBOARD.csv"
    csv.write_bytes(csv.read_bytes() + b"\n")
    assert verify(v1.path, results) == ["LEADERBOARD.csv: differs from a fresh rendering"]
    csv.write_bytes(csv.read_bytes()[:-1])

    predictions = next(results.rglob("test_predictions.npz"))
    with np.load(predictions) as z:
        logits, labels = z["logits"].copy(), z["labels"]
    logits[:50] = logits[:50, ::-1]
    np.savez(predictions, logits=logits, labels=labels)
    diffs = verify(v1.path, results)
    assert "LEADERBOARD.md: differs from a fresh rendering" in diffs

    record = next((v1.path / "records").rglob("record.json"))
    record.write_bytes(record.read_bytes().replace(b'"completed"', b'"complete"', 1))
    assert any("malformed published record" in d for d in verify(v1.path, results))


def test_verify_names_the_package_versions_that_differ(make_run, tmp_path):
    make_run(loss="ce", seed=0)
    results = tmp_path / "results"
    v1 = publish(results, root=tmp_path / "boards", n_boot=20)
    meta_path = v1.path / "version.json"
    meta = json.loads(meta_path.read_text())
    meta["rendered_with"]["matplotlib"] = "0.0.1"
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    assert rendering_differences(meta) == [
        f"matplotlib 0.0.1 there, {metadata.version('matplotlib')} here"
    ]
    assert verify(v1.path, results) == []  # the bytes still match: no hint needed
    md = v1.path / "LEADERBOARD.md"
    md.write_bytes(md.read_bytes() + b"\n")
    diffs = verify(v1.path, results)
    assert diffs[0] == "LEADERBOARD.md: differs from a fresh rendering"
    assert "matplotlib 0.0.1 there" in diffs[-1] and "rendered_with" in diffs[-1]


def test_verify_refuses_a_folder_that_is_not_a_version(tmp_path):
    with pytest.raises(PublishError, match="not a published version"):
        verify(tmp_path, tmp_path)


def test_the_caption_names_a_known_lossy_data_copy(make_run, tmp_path):
    from calibench.data.known_files import KNOWN_FILES
    from calibench.leaderboard.cells import caption_lines

    sha = next(iter(KNOWN_FILES))
    path = make_run(loss="ce", seed=0)
    rec = load_record(path)
    rec["data"] = {"files": [{"path": "cifar10.npz", "bytes": 1, "sha256": sha}]}
    write_record(path, rec)
    lines = caption_lines(build_leaderboard(tmp_path / "results", n_boot=0))
    data = [line for line in lines if line.startswith("Data: cifar10.npz")]
    assert len(data) == 1 and "JPEG" in data[0] and "not digit-for-digit comparable" in data[0]


def test_calibration_accuracy_points_are_the_tables_means_and_intervals(make_run, tmp_path):
    from calibench.leaderboard.aggregate import calibration_accuracy_points

    for seed in (0, 1):
        make_run(loss="ce", seed=seed)
    make_run(loss="focal", seed=0, status="diverged")
    board = build_leaderboard(tmp_path / "results", n_boot=20)
    (section,) = calibration_accuracy_points(board).values()
    assert list(section) == ["ce"]  # a row without a completed run has no point
    row = board.table[board.table["loss"] == "ce"].iloc[0]
    for key in ("acc", "ece", "ece_ts"):
        mean, lo, hi = section["ce"][key]
        assert (mean, lo, hi) == (row[f"{key}_mean"], row[f"{key}_ci_low"], row[f"{key}_ci_high"])
        assert lo <= mean <= hi
