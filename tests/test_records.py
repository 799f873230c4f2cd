"""Run records: schema, atomic write, validated load, malformed records reported and skipped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from calibench import records
from calibench.errors import RecordError, UsageError
from calibench.records import (
    build_record,
    iter_records,
    load_ood_scores,
    load_predictions,
    load_record,
    save_ood_scores,
    save_predictions,
    validate_record,
    write_record,
)
from calibench.spec import RunSpec

ENV = {
    "python": "3",
    "torch": "2",
    "cuda": None,
    "timm": None,
    "torch_uncertainty": None,
    "device": "cpu",
}
CODE = {"calibench_version": "0.1.0", "git_sha": None, "git_dirty": None}


def spec(**kw: Any) -> RunSpec:
    base = dict(
        protocol="smoke",
        protocol_version=1,
        protocol_hash="sha256:x",
        loss="ce",
        backbone="resnet20",
        dataset="cifar10",
        seed=0,
        ood=("svhn",),
    )
    return RunSpec(**{**base, **kw})


def record(status: str = "completed", **kw: Any) -> dict[str, Any]:
    metrics = {
        "test": {"acc": 0.9, "ece": np.float32(0.05), "nll": float("nan")},
        "test_ts": {"temperature": 1.3, "ece": 0.02},
        "ood": {"svhn": {"msp": {"auroc": 0.8, "aupr_in": 0.7, "aupr_out": 0.6, "fpr95": 0.5}}},
    }
    args: dict[str, Any] = dict(
        status=status,
        reason=None if status == "completed" else "loss became NaN at epoch 3",
        metrics=metrics if status == "completed" else {},
        loss_source={"type": "builtin"},
        timing={"train_seconds": 12.5, "img_per_s": 400.0},
        epoch=2,
        code=CODE,
        env=ENV,
    )
    args.update(kw)
    return build_record(spec(**args.pop("spec_kw", {})), **args)


def test_build_record_has_every_field_and_round_trips(tmp_path):
    rec = record(spec_kw={"deviations": {"epochs": 1}})
    assert rec["run_id"] == spec(deviations={"epochs": 1}).run_id()
    assert rec["deviations"] == {"epochs": 1} == rec["spec"]["deviations"]
    assert rec["metrics"]["test"]["nll"] is None  # NaN is stored as null
    assert isinstance(rec["metrics"]["test"]["ece"], float)
    assert rec["created_at"].endswith("Z")
    assert rec["loss"] == {"name": "ce", "label": "ce", "params": {}, "source": {"type": "builtin"}}
    path = write_record(tmp_path / "run", rec)
    assert path == tmp_path / "run" / "record.json"
    assert load_record(path) == rec
    assert load_record(path.parent) == rec
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]  # no temporary left
    assert path.stat().st_mode & 0o777 == 0o644


def test_default_provenance_is_filled(tmp_path):
    rec = build_record(spec(), status="failed", reason="out of memory")
    assert rec["loss"]["source"] == {"type": "builtin"}  # from the loss registry
    assert rec["env"]["torch"] and rec["env"]["device"]
    assert rec["code"]["calibench_version"]
    assert rec["conventions"] == {}, "a run that was not evaluated has no metric conventions"


def test_write_is_atomic_on_failure(tmp_path, monkeypatch):
    rec = record()
    path = write_record(tmp_path, rec)

    def boom(*args: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(records.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_record(tmp_path, {**rec, "epoch": 5})
    assert load_record(path)["epoch"] == 2  # the old record is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.pop("timing"), "'timing' is a required property"),
        (lambda r: r.update(status="exploded"), "status"),
        (lambda r: r.update(status="failed"), "reason"),  # failed without a reason
        (lambda r: r["metrics"].pop("test"), "'test' is a required property"),
        (lambda r: r["metrics"]["test"].update(acc="high"), "metrics/test/acc"),
        (lambda r: r.update(run_id="0123456789ab"), "not the hash of the stored spec"),
        (lambda r: r["spec"].update(seed=7), "not the hash of the stored spec"),
        (lambda r: r.update(deviations={"epochs": 3}), "deviations"),
        (lambda r: r.update(schema_version=99), "unsupported schema_version 99"),
        (lambda r: r["artifacts"].update(predictions="../../etc/passwd"), "artifacts/predictions"),
        (lambda r: r["artifacts"].update(predictions="/abs/preds.npz"), "artifacts/predictions"),
        (lambda r: r["artifacts"].update(ood_scores="../scores.npz"), "artifacts/ood_scores"),
        (lambda r: r.update(created_at="yesterday"), "created_at"),
        (lambda r: r.update(extra=1), "extra"),
    ],
)
def test_malformed_records_raise_with_their_path(tmp_path, mutate, message):
    rec = json.loads(json.dumps(record()))
    mutate(rec)
    path = tmp_path / "record.json"
    path.write_text(json.dumps(rec))
    with pytest.raises(RecordError, match=message) as info:
        load_record(path)
    assert str(path) in str(info.value)
    with pytest.raises(RecordError):
        validate_record(rec)


@pytest.mark.parametrize(
    "text", ["{not json", '{"schema_version": 1, "x": NaN}', "[1, 2]", "\xff\xfe"]
)
def test_unparseable_records_raise_record_error(tmp_path, text):
    path = tmp_path / "record.json"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(RecordError, match=str(path)):
        load_record(path)


def test_build_record_refuses_inconsistent_input():
    with pytest.raises(RecordError, match="needs a reason"):
        build_record(spec(), status="diverged", loss_source={"type": "builtin"})
    with pytest.raises(RecordError, match="status must be one of"):
        build_record(spec(), status="done", loss_source={"type": "builtin"})
    with pytest.raises(RecordError, match="metrics"):
        record(metrics={})  # completed without test metrics


def test_iter_records_reports_and_skips_malformed(tmp_path):
    good = write_record(tmp_path / "smoke" / spec().run_id(), record())
    other = write_record(tmp_path / "smoke" / "x" / "record.json", record(spec_kw={"seed": 1}))
    broken = tmp_path / "smoke" / "broken" / "record.json"
    broken.parent.mkdir()
    broken.write_text('{"schema_version": 2}')
    copy = tmp_path / "elsewhere" / "record.json"
    copy.parent.mkdir()
    copy.write_bytes(good.read_bytes())
    hidden = tmp_path / "smoke" / ".tmp-abc" / "record.json"
    hidden.parent.mkdir()
    hidden.write_text("garbage")
    found, problems = iter_records(tmp_path)
    assert sorted(r.path for r in found) == sorted([good, other]) or len(found) == 2
    assert {r.data["spec"]["seed"] for r in found} == {0, 1}
    by_path = {p.path: p.message for p in problems}
    assert broken in by_path and "required property" in by_path[broken]
    duplicate = copy if copy in by_path else good
    assert "duplicate of run" in by_path[duplicate]
    assert hidden not in by_path
    assert len(problems) == 2


def test_iter_records_needs_a_folder(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        iter_records(tmp_path / "nope")


def test_version_1_records_are_refused_with_the_reason(tmp_path):
    rec = json.loads(json.dumps(record()))
    rec["schema_version"] = 1
    path = tmp_path / "run" / "record.json"
    path.parent.mkdir()
    path.write_text(json.dumps(rec))
    with pytest.raises(
        RecordError, match="schema_version 1: written by an older calibench"
    ) as info:
        load_record(path)
    message = str(info.value)
    assert str(path) in message and "saved logits are raw" in message and "re-run" in message
    _, problems = iter_records(tmp_path)
    assert [p.path for p in problems] == [path] and "older calibench" in problems[0].message


def test_build_record_states_the_conventions_and_both_artifacts():
    from calibench.evaluation import CONVENTIONS

    rec = record(conventions={**CONVENTIONS, "n_bins": 15})  # evaluation owns the conventions
    assert rec["schema_version"] == records.SCHEMA_VERSION == 2
    assert rec["artifacts"] == {"predictions": None, "ood_scores": None, "plots": {}}
    assert rec["conventions"] == {**CONVENTIONS, "n_bins": 15}
    for key in ("predictive_logits", "ts", "nll", "ood_score_definitions", "aupr", "fpr95"):
        assert rec["conventions"][key], key
    assert rec["conventions"]["interval"] and rec["conventions"]["significance"]
    arts = {"predictions": "test_predictions.npz", "ood_scores": "ood_scores.npz"}
    assert record(artifacts=arts)["artifacts"] == {**arts, "plots": {}}


def test_loss_state_and_training_round_trip_and_older_records_without_them_validate(tmp_path):
    history = [
        {"epoch": 1, "gammas": [1.5, -0.2], "bin_edges": [0.1, 0.5, 0.9]},
        {"epoch": 2, "gammas": [2.0, float("nan")], "bin_edges": [0.2, 0.6, 1.0]},
    ]
    name = records.save_loss_state(tmp_path / "run", history)
    saved = json.loads((tmp_path / "run" / name).read_text())
    assert name == records.LOSS_STATE_FILENAME and [h["epoch"] for h in saved] == [1, 2]
    assert saved[1]["gammas"] == [2.0, None]  # plain JSON: non-finite values are null
    final = {"gammas": [2.0, None], "bin_edges": [0.2, 0.6, 1.0]}
    rec = record(
        training={"val_used_in_training": True}, loss_state={"final": final, "history": name}
    )
    assert rec["loss_state"] == {"final": final, "history": "loss_state.json"}
    assert load_record(write_record(tmp_path / "run", rec)) == rec
    stateless = record(training={"val_used_in_training": False})
    assert (
        stateless["loss_state"] is None and stateless["training"]["val_used_in_training"] is False
    )
    older = record()  # written before these fields: neither key, still schema version 2
    assert "loss_state" not in older and "training" not in older
    validate_record(older)
    with pytest.raises(RecordError, match="needs training"):
        record(loss_state={"final": final, "history": name})
    for bad in ({"final": final, "history": "../x.json"}, {"final": final}, [1, 2]):
        with pytest.raises(RecordError, match="loss_state"):
            record(training={"val_used_in_training": True}, loss_state=bad)


def test_predictions_round_trip_exactly_as_float32(tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 10)).astype(np.float32) * 30
    logits[0, 3] = 70000.0  # above float16's largest finite value, 65504
    logits[1, 2] = -1e6
    labels = np.arange(50) % 10
    name = save_predictions(tmp_path, logits, labels)
    preds = load_predictions(tmp_path / name)
    assert preds.logits.dtype == np.float32 and preds.labels.dtype == np.int64
    np.testing.assert_array_equal(preds.logits, logits)
    np.testing.assert_array_equal(preds.labels, labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_float64_predictions_are_rounded_to_float32_once(tmp_path):
    import torch

    logits = torch.tensor([[1 / 3, 1e5], [-2.5, 0.1]], dtype=torch.float64)
    preds = load_predictions(tmp_path / save_predictions(tmp_path, logits, torch.tensor([0, 1])))
    np.testing.assert_array_equal(preds.logits, logits.numpy().astype(np.float32))
    with pytest.raises(RecordError, match="finite in float32"):
        save_predictions(tmp_path, np.array([[1e39, 0.0]]), np.array([0]))


def test_predictions_are_never_unpickled(tmp_path):
    path = tmp_path / "test_predictions.npz"
    np.savez(path, logits=np.array([{"evil": 1}], dtype=object), labels=np.array([0]))
    with pytest.raises(RecordError, match="cannot read saved predictions"):
        load_predictions(path)
    with pytest.raises(RecordError, match="do not match"):
        np.savez(path, logits=np.zeros((3, 2), np.float32), labels=np.zeros(4, np.int64))
        load_predictions(path)


def test_float16_predictions_of_older_runs_are_refused(tmp_path):
    path = tmp_path / "test_predictions.npz"
    np.savez(path, logits=np.zeros((3, 2), np.float16), labels=np.zeros(3, np.int64))
    with pytest.raises(RecordError, match=r"float16.*raw logits"):
        load_predictions(path)


def test_ood_scores_round_trip(tmp_path):
    import torch

    rng = np.random.default_rng(1)
    scores = {
        "gaussian": {
            "msp": torch.from_numpy(rng.uniform(size=40)),
            "energy": torch.from_numpy(rng.normal(size=40) * 1e5),
        },
        "svhn": {"msp": rng.uniform(size=25), "maxlogit": rng.normal(size=25)},
    }
    name = save_ood_scores(tmp_path, scores)
    assert name == records.OOD_SCORES_FILENAME == "ood_scores.npz"
    with np.load(tmp_path / name) as npz:
        assert sorted(npz.files) == [
            "gaussian.energy",
            "gaussian.msp",
            "svhn.maxlogit",
            "svhn.msp",
        ]
    loaded = load_ood_scores(tmp_path / name)
    assert {k: sorted(v) for k, v in loaded.items()} == {
        "gaussian": ["energy", "msp"],
        "svhn": ["maxlogit", "msp"],
    }
    for ood_name, per_score in scores.items():
        for score, values in per_score.items():
            got = loaded[ood_name][score]
            assert got.dtype == np.float64
            np.testing.assert_array_equal(got, np.asarray(values))
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize(
    ("scores", "match"),
    [
        ({}, "no OOD scores"),
        ({"svhn": {"msp": np.zeros((2, 2))}}, "1-D"),
        ({"svhn": {"msp": np.array([np.nan])}}, "NaN"),
        ({"svhn": {"msp": np.zeros(3), "energy": np.zeros(4)}}, "differ in length"),
        ({"svhn": {"m.sp": np.zeros(3)}}, "score name"),
        ({"a/b": {"msp": np.zeros(3)}}, "OOD set name"),
    ],
)
def test_bad_ood_scores_are_refused(tmp_path, scores, match):
    with pytest.raises(RecordError, match=match):
        save_ood_scores(tmp_path, scores)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({}, "holds no OOD scores"),
        ({"svhnmsp": np.zeros(3)}, "not '<ood_name>.<score>'"),
        ({"svhn.msp": np.zeros(3, np.float32)}, "float64"),
        ({"svhn.msp": np.array([np.inf])}, "NaN or inf"),
        ({"svhn.msp": np.zeros(3), "svhn.energy": np.zeros(2)}, "differ in length"),
        ({"svhn.msp": np.array([{"evil": 1}], dtype=object)}, "cannot read"),
    ],
)
def test_malformed_ood_score_files_raise_record_error(tmp_path, arrays, match):
    path = tmp_path / "ood_scores.npz"
    np.savez(path, **arrays)
    with pytest.raises(RecordError, match=match):
        load_ood_scores(path)


def test_stored_record_artifacts_stay_inside_the_run_folder(tmp_path):
    (tmp_path / "secret.png").write_bytes(b"x")
    run = tmp_path / "run"
    path = write_record(run, record())
    found, _ = iter_records(run)
    stored = found[0]
    assert stored.path == path and stored.run_dir == run
    assert stored.artifact("../secret.png") is None
    (run / "reliability.png").write_bytes(b"png")
    assert stored.artifact("reliability.png") == (run / "reliability.png").resolve()


def test_schema_file_ships_in_the_package():
    schema = records.record_schema()
    assert schema["properties"]["schema_version"]["const"] == records.SCHEMA_VERSION
    assert Path(records.__file__).with_name("record.schema.json").is_file()
