"""Bootstrap replicates and intervals: the vectorised metrics equal the library metric (or a
plain-loop oracle) on each resample; the interval formulas on known replicates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from calibench.errors import UsageError
from calibench.metrics import (
    FAST_METRICS,
    bootstrap_ci,
    bootstrap_distribution,
    calibration_metrics,
    ood_metrics,
)
from calibench.metrics.bootstrap import (
    count_chunks,
    ood_replicates,
    replicates,
    resample_indices,
    stream_seed,
)
from calibench.metrics.calibration import adaptive_ece, binned_ece, top_label
from calibench.metrics.intervals import (
    BinnedReplicates,
    PercentileReplicates,
    binned_error_interval,
)


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


# -- replicates, OOD replicates and the binned interval -------------------------------------------
def residual_masses(conf, correct, n_bins, adaptive):
    """Per-bin residual masses by a plain loop: the oracle for bin_masses."""
    n = len(conf)
    if adaptive:
        order = np.argsort(conf, kind="stable")
        groups = np.array_split(order, min(n_bins, n))
    else:
        bins = np.minimum(np.floor(conf * n_bins).astype(int), n_bins - 1)
        groups = [np.flatnonzero(bins == b) for b in range(n_bins)]
    return np.array([(correct[g] - conf[g]).sum() / n for g in groups])


@pytest.mark.parametrize("adaptive", [False, True])
def test_replicates_match_the_definitions_on_each_resample(adaptive: bool) -> None:
    probs, labels = case(n=300, seed=4)
    conf, correct = top_label(probs, labels)
    idx = resample_indices(300, 5, seed=2)
    rep = replicates(idx, binned={"e": (conf, correct, 7, adaptive)})["e"]
    c, y = conf.numpy(), correct.numpy()
    hat = residual_masses(c, y, 7, adaptive)
    assert rep.point == pytest.approx(np.abs(hat).sum(), abs=1e-12)
    fn = adaptive_ece if adaptive else binned_ece
    assert rep.point == pytest.approx(fn(conf, correct, 7), abs=1e-12)
    for b, i in enumerate(idx.numpy()):
        star = residual_masses(c[i], y[i], 7, adaptive)
        assert rep.deviation[b] == pytest.approx(np.abs(star - hat).sum(), abs=1e-12)
        assert rep.linear[b] == pytest.approx((np.sign(hat) * star).sum(), abs=1e-12)
        assert rep.plugin[b] == pytest.approx(fn(conf[i], correct[i], 7), abs=1e-12)


def test_precomputed_counts_and_leading_axes_give_the_same_replicates() -> None:
    g = torch.Generator().manual_seed(0)
    conf = 0.5 + 0.5 * torch.rand(3, 200, generator=g, dtype=torch.float64)
    correct = (torch.rand(3, 200, generator=g, dtype=torch.float64) < conf).double()
    idx = resample_indices(200, 40, seed=1)
    chunks = list(count_chunks(idx, 200, chunk=16))
    binned = {"ece": (conf, correct, 15, False), "ada": (conf, correct, 15, True)}
    batch = replicates(chunks, binned=binned, means={"acc": correct})
    for r in range(3):
        one = replicates(
            idx,
            binned={
                "ece": (conf[r], correct[r], 15, False),
                "ada": (conf[r], correct[r], 15, True),
            },
            means={"acc": correct[r]},
        )
        np.testing.assert_allclose(batch["ece"].deviation[r], one["ece"].deviation, atol=1e-12)
        np.testing.assert_allclose(batch["ada"].linear[r], one["ada"].linear, atol=1e-12)
        np.testing.assert_allclose(batch["acc"].values[r], one["acc"].values, atol=1e-12)
        assert batch["ada"].point[r] == pytest.approx(one["ada"].point)


def test_an_infinite_term_makes_only_the_resamples_that_draw_it_infinite() -> None:
    terms = torch.tensor([1.0, 2.0, float("inf"), 3.0], dtype=torch.float64)
    idx = resample_indices(4, 50, seed=0)
    values = replicates(idx, means={"nll": terms})["nll"].values
    drawn = (idx == 2).any(dim=1).numpy()
    assert np.isinf(values[drawn]).all() and np.isfinite(values[~drawn]).all()
    assert drawn.any() and not drawn.all()


@pytest.mark.parametrize("ties", [False, True])
def test_ood_replicates_equal_ood_metrics_on_each_resample(ties: bool) -> None:
    g = torch.Generator().manual_seed(3)
    score_id = torch.randn(300, generator=g, dtype=torch.float64) + 1.0
    score_ood = torch.randn(200, generator=g, dtype=torch.float64)
    if ties:  # coarse scores: ties inside and between the two sets
        score_id, score_ood = (score_id * 4).round(), (score_ood * 4).round()
    idx_id = resample_indices(300, 8, seed=0)
    idx_ood = resample_indices(200, 8, seed=stream_seed(0, "svhn"))
    reps = ood_replicates(score_id, score_ood, idx_id, idx_ood)
    for b in range(8):
        want = ood_metrics(score_id[idx_id[b]], score_ood[idx_ood[b]])
        assert reps["auroc"][b] == pytest.approx(want["auroc"], abs=1e-12)
        assert reps["fpr95"][b] == pytest.approx(want["fpr95"], abs=1e-12)


def test_ood_streams_are_reproducible_and_independent() -> None:
    assert stream_seed(0, "svhn") == stream_seed(0, "svhn")
    assert len({stream_seed(0, "svhn"), stream_seed(0, "gaussian"), stream_seed(1, "svhn")}) == 3
    a = resample_indices(100, 5, stream_seed(0, "svhn"))
    assert not torch.equal(a, resample_indices(100, 5, seed=0))


def test_binned_interval_formula_on_known_replicates() -> None:
    deviation = np.arange(1, 1001, dtype=float) / 1000  # 97.5 % quantile: 0.975025
    linear = np.array([-1.0, 1.0] * 500)  # sd (ddof=1): sqrt(1000 / 999)
    lo, hi = binned_error_interval(2.0, deviation, linear)
    assert lo == pytest.approx(2.0 - np.quantile(deviation, 0.975))
    assert hi == pytest.approx(2.0 + 1.959963984540054 * np.sqrt(1000 / 999))
    lo, _ = binned_error_interval(0.5, deviation, linear)
    assert lo == 0.0  # never below 0


def test_bootstrap_ci_uses_the_binned_interval_for_binned_errors() -> None:
    # A calibrated model: labels drawn from the probabilities. The population ECE is 0, the
    # plug-in ECE and all its resamples are > 0; the binned interval reaches 0.
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(4000, 5, generator=g, dtype=torch.float64) * 2, dim=1)
    labels = torch.multinomial(probs, 1, generator=g).squeeze(1)
    ci = bootstrap_ci(probs, labels, ["ece", "adaece", "acc"], n_boot=300)
    dist = bootstrap_distribution(probs, labels, "ece", n_boot=300)["ece"]
    assert float(dist.min()) > 0.0
    for name in ("ece", "adaece"):
        assert ci[name]["method"] == "binned" and ci[name]["low"] == 0.0
        assert ci[name]["low"] <= ci[name]["point"] <= ci[name]["high"]
    assert ci["acc"]["method"] == "percentile"
    assert ci["ece"]["point"] == pytest.approx(calibration_metrics(probs, labels)["ece"])


def test_seed_mean_of_replicates() -> None:
    a = BinnedReplicates(0.1, np.array([1.0, 2.0]), np.array([0.0, 1.0]), np.array([0.2, 0.3]))
    b = BinnedReplicates(0.3, np.array([3.0, 4.0]), np.array([2.0, 3.0]), np.array([0.4, 0.5]))
    m = BinnedReplicates.seed_mean([a, b])
    assert m.point == pytest.approx(0.2)
    np.testing.assert_allclose(m.deviation, [2.0, 3.0])
    np.testing.assert_allclose(m.linear, [1.0, 2.0])
    p = PercentileReplicates.seed_mean(
        [PercentileReplicates(1.0, np.array([0.0, 2.0])), PercentileReplicates(3.0, np.ones(2))]
    )
    assert p.point == 2.0 and p.values.tolist() == [0.5, 1.5]
    with pytest.raises(UsageError, match="same number"):
        PercentileReplicates.seed_mean(
            [PercentileReplicates(1.0, np.zeros(2)), PercentileReplicates(1.0, np.zeros(3))]
        )
