"""The optional shift grid of a record: valid with and without it, malformed grids refused."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from calibench.errors import RecordError
from calibench.records import build_record, validate_record
from calibench.spec import RunSpec

KEYS = ("acc", "ece", "adaece", "nll", "acc_ts", "ece_ts", "adaece_ts", "nll_ts")
CODE = {"calibench_version": "0.1.0", "git_sha": None, "git_dirty": None}
ENV = dict.fromkeys(("python", "torch", "cuda", "timm", "torch_uncertainty", "device"))


def shift() -> dict[str, Any]:
    def cell() -> dict[str, float]:
        return dict.fromkeys(KEYS, 0.25)

    return {
        "suite": "cifar10-c",
        "source": {"kind": "generated", "generator": "x", "seed": 0},
        "max_images": 20,
        "n_images": 20,
        "corruptions": ["fog", "snow"],
        "severities": [1, 2],
        "grid": {"fog": {"1": cell(), "2": cell()}, "snow": {"1": cell(), "2": cell()}},
        "summary": {"by_severity": {"1": cell(), "2": cell()}, "mean": cell()},
    }


def record(metrics_shift: Any = None) -> dict[str, Any]:
    metrics: dict[str, Any] = {"test": {"acc": 0.9, "ece": 0.05}, "test_ts": None, "ood": {}}
    if metrics_shift is not None:
        metrics["shift"] = metrics_shift
    spec = RunSpec("smoke", 2, "sha256:x", "ce", "resnet20", "cifar10", 0)
    return build_record(
        spec,
        status="completed",
        metrics=metrics,
        loss_source={"type": "builtin"},
        code=CODE,
        env=ENV,
        epoch=2,
    )


def test_a_record_is_valid_with_and_without_a_shift_grid() -> None:
    assert "shift" not in record()["metrics"]
    rec = record(shift())
    assert rec["metrics"]["shift"]["grid"]["fog"]["2"]["ece_ts"] == 0.25
    full = shift()
    full["max_images"] = None  # the full grid
    full["grid"]["fog"]["1"]["nll_ts"] = float("nan")  # not computable: stored as null
    full["source"] = {"kind": "official", "files": {"fog.npy": "sha256:ab"}}
    rec = record(full)
    assert rec["metrics"]["shift"]["grid"]["fog"]["1"]["nll_ts"] is None


def _bad(edit) -> dict[str, Any]:
    s = shift()
    edit(s)
    return s


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (lambda s: s["source"].update(kind="copied"), "metrics/shift/source/kind"),
        (lambda s: s["source"].pop("kind"), "metrics/shift/source"),
        (lambda s: s["grid"]["fog"].update({"0": s["grid"]["fog"]["1"]}), "metrics/shift/grid/fog"),
        (lambda s: s["grid"]["fog"]["1"].pop("ece_ts"), "metrics/shift/grid/fog/1"),
        (lambda s: s["grid"]["fog"]["1"].update(ece="high"), "metrics/shift/grid/fog/1/ece"),
        (lambda s: s.pop("summary"), "metrics/shift"),
        (lambda s: s["summary"].pop("mean"), "metrics/shift/summary"),
        (lambda s: s.update(max_images=0), "metrics/shift/max_images"),
        (lambda s: s.update(grid={}), "metrics/shift/grid"),
        (lambda s: s.update(extra=1), "metrics/shift"),
    ],
)  # fmt: skip
def test_a_malformed_grid_is_refused(edit, where: str) -> None:
    good = record(shift())
    bad = copy.deepcopy(good)
    bad["metrics"]["shift"] = _bad(edit)
    with pytest.raises(RecordError, match=f"invalid record at '{where}'"):
        validate_record(bad)
