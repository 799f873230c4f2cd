"""Dry run of benchmarks/eval_throughput.py on CPU with tiny sizes (no timing assertions)."""

from __future__ import annotations

import eval_throughput as et
import pytest

import calibench.evaluation as evaluation_module
import calibench.metrics.calibration as calibration_module
from calibench.errors import UsageError


def test_full_evaluation_is_timed_with_its_stages() -> None:
    originals = {n: getattr(evaluation_module, n) for n in et.TIMED[evaluation_module]}
    r = et.benchmark(device="cpu", n_test=120, n_val=60, n_ood=150, batch_size=50, repeats=2)
    assert r["metrics_finite"] and r["eval_seconds"] > 0 and r["stats"]["n"] == 2
    assert (r["n_test"], r["n_val"], r["n_ood"], r["warmup"]) == (120, 60, 150, "tiny")
    stages = r["stages"]
    assert set(stages) == {*et.TIMED[evaluation_module], "smooth_ece"} - {"evaluate_shift"}
    assert stages["predict_logits"] < r["stages_run_seconds"]  # a part of the same run
    assert stages["smooth_ece"] <= stages["logit_metrics"]
    for name, fn in originals.items():  # the timers are removed afterwards
        assert getattr(evaluation_module, name) is fn
    assert calibration_module.smooth_ece.__name__ == "smooth_ece"


def test_a_full_shift_grid_is_evaluated_and_counted() -> None:
    r = et.benchmark(
        device="cpu", n_test=40, n_val=40, n_ood=40, batch_size=100, shift_per_cell=3,
        breakdown=True,
    )  # fmt: skip
    assert (r["n_shift"], r["shift_per_cell"]) == (75 * 3, 3)
    assert 0 < r["stages"]["evaluate_shift"] < r["stages_run_seconds"]
    with pytest.raises(UsageError, match="shift-per-cell"):
        et.make_shift_suite(-1)


def test_sets_have_the_requested_sizes(real_cifar10) -> None:
    dataset, ood = et.make_sets(real_cifar10, n_test=30, n_val=20, n_ood=40)
    assert (len(dataset.test), len(dataset.val), len(ood.x), len(dataset.train)) == (30, 20, 40, 0)
    assert et.SVHN_TEST_SIZE == 26_032


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"n_test": 0}, "n-test"), ({"warmup": "some"}, "warmup"), ({"repeats": 0}, "repeats")],
)
def test_bad_arguments_raise_usage_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        et.benchmark(**{"device": "cpu", "n_test": 10, "n_val": 10, "n_ood": 10, **kwargs})
