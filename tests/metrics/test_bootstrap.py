"""Bootstrap intervals: the vectorised metrics equal the library metric on each resample."""

from __future__ import annotations

import pytest
import torch

from calibench.errors import UsageError
from calibench.metrics import (
    FAST_METRICS,
    bootstrap_ci,
    bootstrap_distribution,
    calibration_metrics,
)
from calibench.metrics.bootstrap import resample_indices


def case(n: int = 400, k: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(n, k, generator=g, dtype=torch.float64) * 3, dim=1)
    labels = torch.randint(0, k, (n,), generator=g)
    return probs, labels


@pytest.mark.parametrize("n_bins", [3, 15])
def test_fast_metrics_equal_the_metric_on_each_resample(n_bins: int) -> None:
    probs, labels = case()
    probs[0] = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)  # the c = 1.0 pitfall
    dist = bootstrap_distribution(probs, labels, FAST_METRICS, n_boot=6, seed=3, n_bins=n_bins)
    idx = resample_indices(len(labels), 6, seed=3)
    for b in range(6):
        want = calibration_metrics(probs[idx[b]], labels[idx[b]], n_bins=n_bins)
        for name in FAST_METRICS:
            assert dist[name][b].item() == pytest.approx(want[name], abs=1e-12), name


def test_callable_metrics_and_dict_results() -> None:
    probs, labels = case(n=50)
    acc = bootstrap_distribution(
        probs, labels, lambda p, y: float((p.argmax(1) == y).double().mean()), n_boot=20, seed=1
    )
    fast = bootstrap_distribution(probs, labels, "acc", n_boot=20, seed=1)
    assert torch.allclose(acc["value"], fast["acc"])
    both = bootstrap_ci(
        probs, labels, lambda p, y: {"a": 1.0, "b": float(y.double().mean())}, n_boot=20
    )
    assert both["a"]["low"] == both["a"]["high"] == 1.0
    assert both["b"]["low"] <= both["b"]["high"]


def test_interval_shape_and_reproducibility() -> None:
    probs, labels = case(n=2000)
    ci = bootstrap_ci(probs, labels, ["ece", "nll"], n_boot=300, seed=0)
    again = bootstrap_ci(probs, labels, ["ece", "nll"], n_boot=300, seed=0)
    other = bootstrap_ci(probs, labels, ["ece", "nll"], n_boot=300, seed=1)
    assert ci == again
    assert ci != other
    full = calibration_metrics(probs, labels)
    for name in ("ece", "nll"):
        assert ci[name]["low"] < full[name] < ci[name]["high"]
        assert ci[name]["level"] == 0.95 and ci[name]["n_boot"] == 300
    narrow = bootstrap_ci(probs, labels, "nll", n_boot=300, seed=0, level=0.5)["nll"]
    assert ci["nll"]["low"] < narrow["low"] < narrow["high"] < ci["nll"]["high"]


def test_the_interval_covers_the_truth_usually() -> None:
    # labels drawn from the probabilities: true accuracy is E[max p]; 95 % intervals cover it
    probs, _ = case(n=300, seed=5)
    truth = float(probs.max(1).values.mean())
    hits = 0
    for seed in range(20):
        g = torch.Generator().manual_seed(100 + seed)
        labels = torch.multinomial(probs, 1, generator=g).squeeze(1)
        ci = bootstrap_ci(probs, labels, "acc", n_boot=200, seed=seed)["acc"]
        hits += ci["low"] <= truth <= ci["high"]
    assert hits >= 15


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"metric_fn": "smece"}, "no vectorised bootstrap"),
        ({"metric_fn": "ece", "n_boot": 1}, "n_boot"),
        ({"metric_fn": "ece", "level": 1.5}, "level"),
    ],
)
def test_bad_input(kwargs, match) -> None:
    probs, labels = case(n=10)
    with pytest.raises(UsageError, match=match):
        bootstrap_ci(probs, labels, **kwargs)


def test_mismatched_lengths() -> None:
    probs, labels = case(n=10)
    with pytest.raises(UsageError, match="N rows"):
        bootstrap_ci(probs, labels[:5], "ece")
