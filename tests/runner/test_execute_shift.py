"""Which shift suite a run evaluates, and the grid's TS values when a protocol turns TS off."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from calibench.data.datasets import Split
from calibench.runner.execute import SHIFT_SEED, _load_shift, record_metrics, shift_suite_name


def test_a_run_evaluates_the_suite_of_its_dataset() -> None:
    names = ("cifar10-c", "cifar100-c")
    assert shift_suite_name(names, "cifar10") == "cifar10-c"
    assert shift_suite_name(names, "cifar100") == "cifar100-c"
    assert shift_suite_name(("cifar10-c",), "cifar100") is None
    assert shift_suite_name((), "cifar10") is None


def test_the_suite_is_loaded_from_the_whole_test_split_with_the_fixed_seed(monkeypatch) -> None:
    calls = []

    def fake_load(name, **kwargs):
        calls.append((name, kwargs))
        return SimpleNamespace(dataset="cifar10")

    import calibench.data.shift as shift_module

    monkeypatch.setattr(shift_module, "load_shift_suite", fake_load)
    test = Split(torch.zeros(30, 32, 32, 3, dtype=torch.uint8), torch.arange(30) % 10)
    dataset = SimpleNamespace(name="cifar10", test=test)
    settings = SimpleNamespace(shift=("cifar10-c",), shift_max_images=0)
    assert _load_shift(settings, dataset, "/data").dataset == "cifar10"
    ((name, kwargs),) = calls
    assert name == "cifar10-c" and kwargs["test_x"] is test.x and kwargs["test_y"] is test.y
    assert kwargs["seed"] == SHIFT_SEED and kwargs["max_images"] is None
    assert kwargs["download"] is False and kwargs["root"] == "/data"
    settings = SimpleNamespace(shift=("cifar10-c",), shift_max_images=20)
    _load_shift(settings, dataset, None)
    assert calls[-1][1]["max_images"] == 20
    other = SimpleNamespace(name="cifar100", test=test)
    assert _load_shift(settings, other, None) is None and len(calls) == 2


def test_without_temperature_scaling_the_grid_keeps_no_ts_values() -> None:
    cell = {"acc": 0.5, "ece": 0.1, "acc_ts": 0.5, "ece_ts": 0.05}
    shift = {
        "suite": "cifar10-c",
        "grid": {"fog": {"1": dict(cell)}},
        "summary": {"by_severity": {"1": dict(cell)}, "mean": dict(cell)},
    }
    metrics = {"test": {"ece": 0.1}, "test_ts": {"temperature": 2.0}, "shift": shift}
    kept = record_metrics(metrics, temperature_scaling=True)
    assert kept["shift"] is shift
    off = record_metrics(metrics, temperature_scaling=False)
    assert off["test_ts"] is None
    assert off["shift"]["grid"]["fog"]["1"] == {
        "acc": 0.5,
        "ece": 0.1,
        "acc_ts": None,
        "ece_ts": None,
    }
    assert off["shift"]["summary"]["mean"]["ece_ts"] is None
    assert off["shift"]["summary"]["by_severity"]["1"]["ece"] == 0.1
    assert metrics["shift"]["grid"]["fog"]["1"]["ece_ts"] == 0.05  # the input is not changed
