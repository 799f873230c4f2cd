"""Calibration metrics: oracle tests (slow obvious references, torch-uncertainty), hand cases,
known pitfalls (confidence 1.0, bin edges, ties) and hypothesis properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from calibench.errors import UsageError
from calibench.metrics import CALIBRATION_KEYS, calibration_metrics, logit_metrics
from calibench.metrics.calibration import adaptive_ece, binned_ece, classwise_ece


def reference_ece(conf: list[float], correct: list[float], n_bins: int) -> float:
    """Slow, obvious ECE: bin k holds k/M <= c < (k+1)/M, the last bin also holds c = 1."""
    total = 0.0
    n = len(conf)
    for k in range(n_bins):
        lo, hi = k / n_bins, (k + 1) / n_bins
        members = [i for i, c in enumerate(conf) if lo <= c < hi or (k == n_bins - 1 and c == 1.0)]
        if members:
            acc = sum(correct[i] for i in members) / len(members)
            avg = sum(conf[i] for i in members) / len(members)
            total += len(members) / n * abs(acc - avg)
    return total


def reference_adaece(conf: list[float], correct: list[float], n_bins: int) -> float:
    order = sorted(range(len(conf)), key=lambda i: conf[i])  # Python's sort is stable
    n = len(conf)
    n_bins = min(n_bins, n)
    sizes = [n // n_bins + (1 if b < n % n_bins else 0) for b in range(n_bins)]
    total, start = 0.0, 0
    for size in sizes:
        members = order[start : start + size]
        start += size
        acc = sum(correct[i] for i in members) / size
        avg = sum(conf[i] for i in members) / size
        total += size / n * abs(acc - avg)
    return total


def reference_metrics(probs: torch.Tensor, labels: torch.Tensor, n_bins: int) -> dict[str, float]:
    rows, ys = probs.tolist(), labels.tolist()
    conf = [max(r) for r in rows]
    correct = [1.0 if r.index(max(r)) == y else 0.0 for r, y in zip(rows, ys, strict=True)]
    k = len(rows[0])
    cw = [
        reference_ece([r[c] for r in rows], [1.0 if y == c else 0.0 for y in ys], n_bins)
        for c in range(k)
    ]
    return {
        "acc": sum(correct) / len(ys),
        "ece": reference_ece(conf, correct, n_bins),
        "adaece": reference_adaece(conf, correct, n_bins),
        "cwece": sum(cw) / k,
        "nll": -sum(math.log(r[y]) for r, y in zip(rows, ys, strict=True)) / len(ys),
        "brier": sum(
            sum((p - (1.0 if c == y else 0.0)) ** 2 for c, p in enumerate(r))
            for r, y in zip(rows, ys, strict=True)
        )
        / len(ys),
    }


def random_case(seed: int, n: int = 200, k: int = 4, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(n, k, generator=g, dtype=torch.float64) * scale, dim=1)
    labels = torch.randint(0, k, (n,), generator=g)
    return probs, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_bins", [1, 7, 15])
def test_matches_slow_reference(seed: int, n_bins: int) -> None:
    probs, labels = random_case(seed)
    got = calibration_metrics(probs, labels, n_bins=n_bins)
    want = reference_metrics(probs, labels, n_bins)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    assert set(got) == set(CALIBRATION_KEYS)


def test_matches_torch_uncertainty_away_from_the_pitfalls() -> None:
    from torch_uncertainty.metrics import BrierScore, CategoricalNLL, ClasswiseCalibrationError
    from torch_uncertainty.metrics.classification.calibration.adaptive_calibration_error import (
        _ace_compute,
    )
    from torchmetrics.functional.classification import multiclass_calibration_error

    probs, labels = random_case(3, n=500, k=5, scale=1.5)  # no confidence of exactly 1.0, no ties
    got = calibration_metrics(probs, labels)
    conf, pred = probs.max(dim=1)
    assert got["ece"] == pytest.approx(
        float(multiclass_calibration_error(probs, labels, num_classes=5, n_bins=15)), abs=1e-6
    )
    assert got["adaece"] == pytest.approx(
        float(_ace_compute(conf, (pred == labels).double(), 15)), abs=1e-12
    )
    cw = ClasswiseCalibrationError(num_classes=5, num_bins=15)
    cw.update(probs, labels)
    assert got["cwece"] == pytest.approx(float(cw.compute()), abs=1e-6)
    nll = CategoricalNLL()
    nll.update(probs, labels)
    assert got["nll"] == pytest.approx(float(nll.compute()), abs=1e-6)  # float32 state
    brier = BrierScore(num_classes=5)
    brier.update(probs, labels)
    assert got["brier"] == pytest.approx(float(brier.compute()), abs=1e-6)


def test_confidence_of_exactly_one_lands_in_the_last_bin() -> None:
    # torchmetrics #3510 puts c = 1.0 in an extra 16th bin, giving 0.5 * 0.05 + 0.5 * 1 = 0.525.
    probs = torch.tensor([[1.0, 0.0], [0.95, 0.05]], dtype=torch.float64)
    labels = torch.tensor([1, 0])  # the confident one is wrong, the 0.95 one right
    # one bin [14/15, 1]: accuracy 0.5, confidence 0.975
    assert calibration_metrics(probs, labels)["ece"] == pytest.approx(0.475, abs=1e-12)
    # classwise: class 0 bin [14/15, 1] holds p0 = 1.0, 0.95 with frequency 0.5 -> 0.475;
    # class 1 bin [0, 1/15) holds p1 = 0.0, 0.05 with frequency 0.5 -> 0.475
    assert calibration_metrics(probs, labels)["cwece"] == pytest.approx(0.475, abs=1e-12)


def test_a_confidence_on_an_edge_opens_the_next_bin() -> None:
    probs = torch.tensor([[0.4, 0.3, 0.3], [0.5, 0.25, 0.25]], dtype=torch.float64)
    labels = torch.tensor([0, 1])
    # bins of width 0.2: both in [0.4, 0.6): accuracy 0.5, confidence 0.45
    assert calibration_metrics(probs, labels, n_bins=5)["ece"] == pytest.approx(0.05, abs=1e-12)


def test_hand_computed_case() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 1])
    m = calibration_metrics(probs, labels, n_bins=2)
    # confidences 0.9 (right), 0.8 (wrong), 0.7 (right), 0.6 (wrong): one bin [0.5, 1]
    assert m["acc"] == 0.5
    assert m["ece"] == pytest.approx(abs(0.5 - 0.75), abs=1e-12)
    # equal mass: {0.6, 0.7} acc 0.5 conf 0.65, {0.8, 0.9} acc 0.5 conf 0.85
    assert m["adaece"] == pytest.approx(0.5 * 0.15 + 0.5 * 0.35, abs=1e-12)
    assert m["nll"] == pytest.approx(
        -(math.log(0.9) + math.log(0.2) + math.log(0.7) + math.log(0.4)) / 4
    )
    assert m["brier"] == pytest.approx((0.02 + 1.28 + 0.18 + 0.72) / 4)


def test_adaece_splits_tied_confidences_by_sample_order() -> None:
    probs = torch.tensor([[0.5, 0.5]] * 4, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])  # the first class is the prediction on a tie
    conf, correct = (torch.tensor(v, dtype=torch.float64) for v in _top(probs, labels))
    assert adaptive_ece(conf, correct, 2) == pytest.approx(0.5)
    assert binned_ece(conf, correct, 2) == pytest.approx(0.0)


def test_more_bins_than_samples_is_finite() -> None:
    probs, labels = random_case(4, n=5)
    m = calibration_metrics(probs, labels, n_bins=15)
    assert all(math.isfinite(v) for v in m.values())
    assert m["adaece"] == pytest.approx(reference_adaece(*_top(probs, labels), 15), abs=1e-12)


def _top(probs, labels):
    conf, pred = probs.max(dim=1)
    return conf.tolist(), (pred == labels).double().tolist()


def test_nll_from_probabilities_has_no_floor() -> None:
    probs = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert calibration_metrics(probs, torch.tensor([1]))["nll"] == math.inf
    # -log(1e-14) is beyond the old 1e-12 floor (27.6)
    probs = torch.tensor([[1.0 - 1e-14, 1e-14]], dtype=torch.float64)
    assert calibration_metrics(probs, torch.tensor([1]))["nll"] == pytest.approx(14 * math.log(10))


def reference_nll(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """-mean log softmax(s)_y, in pure Python with the max subtracted first."""
    total = 0.0
    for row, y in zip(logits.tolist(), labels.tolist(), strict=True):
        top = max(row)
        total += top + math.log(math.fsum(math.exp(v - top) for v in row)) - row[y]
    return total / len(labels)


@pytest.mark.parametrize("seed", [0, 1])
def test_logit_metrics_are_the_metrics_of_softmax_with_an_exact_nll(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(300, 5, generator=g, dtype=torch.float64) * 4
    labels = torch.randint(0, 5, (300,), generator=g)
    got = logit_metrics(logits, labels, n_bins=10)
    want = calibration_metrics(torch.softmax(logits, 1), labels, n_bins=10)
    assert set(got) == set(CALIBRATION_KEYS)
    for key in CALIBRATION_KEYS:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    assert got["nll"] == pytest.approx(reference_nll(logits, labels), rel=1e-12)


def test_logit_nll_is_exact_far_beyond_the_old_floor() -> None:
    # wrong by margins 40 and 800: the old floor gave 27.63 for both; softmax(800) underflows
    logits = torch.tensor([[0.0, 40.0], [0.0, 800.0], [3.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0])
    got = logit_metrics(logits, labels)["nll"]
    assert got == pytest.approx(reference_nll(logits, labels), rel=1e-12)
    assert got == pytest.approx((40 + 800 + math.log1p(math.exp(-3))) / 3, rel=1e-9)
    assert calibration_metrics(torch.softmax(logits, 1), labels)["nll"] == math.inf


def test_logit_metrics_accept_float32_and_are_shift_invariant() -> None:
    g = torch.Generator().manual_seed(7)
    logits = (torch.randn(200, 4, generator=g) * 3).float()
    labels = torch.randint(0, 4, (200,), generator=g)
    a = logit_metrics(logits, labels)
    b = logit_metrics(logits.double() + 1000.0, labels)
    for key in CALIBRATION_KEYS:
        assert a[key] == pytest.approx(b[key], abs=1e-9), key


@pytest.mark.parametrize(
    ("logits", "labels", "match"),
    [
        (torch.ones(3), torch.zeros(3, dtype=torch.long), "shape"),
        (torch.zeros(2, 2), torch.zeros(3, dtype=torch.long), "labels must have shape"),
        (torch.tensor([[float("inf"), 1.0]]), torch.zeros(1, dtype=torch.long), "NaN or inf"),
        (torch.zeros(1, 2), torch.tensor([2]), r"\[0, 2\)"),
        (torch.zeros(1, 2), torch.tensor([0.0]), "integer"),
        (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), "empty"),
        (torch.ones(1, 2, dtype=torch.long), torch.zeros(1, dtype=torch.long), "floating"),
    ],
)
def test_logit_metrics_bad_input_is_a_usage_error(logits, labels, match) -> None:
    with pytest.raises(UsageError, match=match):
        logit_metrics(logits, labels)


def test_float32_input_matches_float64() -> None:
    probs, labels = random_case(5, n=300)
    a = calibration_metrics(probs.float(), labels)
    b = calibration_metrics(probs.float().double(), labels)
    assert a == b


def test_smooth_ece_on_a_constant_gap_and_a_calibrated_sample() -> None:
    n = 1000
    probs = torch.tensor([[0.9, 0.1]] * n, dtype=torch.float64)
    labels = (torch.arange(n) % 2).long()  # accuracy 0.5 at confidence 0.9
    assert calibration_metrics(probs, labels)["smece"] == pytest.approx(0.4, abs=2e-3)
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(20000, 5, generator=g, dtype=torch.float64) * 2, dim=1)
    labels = torch.multinomial(probs, 1, generator=g).squeeze(1)  # calibrated by construction
    m = calibration_metrics(probs, labels)
    assert m["smece"] < 0.03
    assert m["ece"] < 0.03


probs_rows = st.integers(min_value=2, max_value=5).flatmap(
    lambda k: st.lists(
        st.lists(st.floats(0.0, 10.0, allow_nan=False), min_size=k, max_size=k).filter(
            lambda r: sum(r) > 1e-3
        ),
        min_size=1,
        max_size=40,
    )
)


def _case(rows: list[list[float]], seed: int):
    probs = torch.tensor(rows, dtype=torch.float64)
    probs = probs / probs.sum(dim=1, keepdim=True)
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, probs.shape[1], (probs.shape[0],), generator=g)
    return probs, labels


@settings(max_examples=60, deadline=None)
@given(rows=probs_rows, seed=st.integers(0, 1000), n_bins=st.integers(1, 20))
def test_binned_properties(rows: list[list[float]], seed: int, n_bins: int) -> None:
    probs, labels = _case(rows, seed)
    conf, correct = (torch.tensor(v, dtype=torch.float64) for v in _top(probs, labels))
    ece = binned_ece(conf, correct, n_bins)
    assert 0.0 <= ece <= 1.0
    assert 0.0 <= adaptive_ece(conf, correct, n_bins) <= 1.0
    cw = classwise_ece(probs, labels, n_bins)
    assert 0.0 <= cw <= 1.0
    assert ece == pytest.approx(reference_ece(conf.tolist(), correct.tolist(), n_bins), abs=1e-12)
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    assert binned_ece(conf[perm], correct[perm], n_bins) == pytest.approx(ece, abs=1e-12)
    assert classwise_ece(probs[perm], labels[perm], n_bins) == pytest.approx(cw, abs=1e-12)


@settings(max_examples=8, deadline=None)
@given(rows=probs_rows, seed=st.integers(0, 1000))
def test_all_metrics_in_range_and_permutation_invariant(rows: list[list[float]], seed: int) -> None:
    probs, labels = _case(rows, seed)
    m = calibration_metrics(probs, labels)
    for key in ("acc", "ece", "adaece", "cwece", "smece"):
        assert 0.0 <= m[key] <= 1.0 + 1e-9, key
    assert 0.0 <= m["brier"] <= 2.0 + 1e-9
    assert m["nll"] >= 0.0
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    permuted = calibration_metrics(probs[perm], labels[perm])
    for key in ("acc", "ece", "cwece", "smece", "nll", "brier"):
        assert permuted[key] == pytest.approx(m[key], abs=1e-6), key


@settings(max_examples=30, deadline=None)
@given(
    tenths=st.lists(st.integers(5, 10), min_size=1, max_size=6),
    reps=st.integers(1, 4),
    n_bins=st.sampled_from([1, 2, 5, 10, 15]),
)
def test_ece_is_zero_for_an_exactly_calibrated_construction(
    tenths: list[int], reps: int, n_bins: int
) -> None:
    # for each confidence c = t/10, 10*reps samples of which exactly c * 10 * reps are right
    rows, labels = [], []
    for t in tenths:
        c = t / 10
        for i in range(10 * reps):
            rows.append([c, 1 - c])
            labels.append(0 if i < t * reps else 1)
    conf = torch.tensor([r[0] for r in rows], dtype=torch.float64)
    correct = (torch.tensor(labels) == 0).double()
    assert binned_ece(conf, correct, n_bins) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("probs", "labels", "match"),
    [
        (torch.ones(3), torch.zeros(3, dtype=torch.long), "shape"),
        (torch.full((2, 2), 0.5), torch.zeros(3, dtype=torch.long), "labels must have shape"),
        (torch.tensor([[2.0, -1.0]]), torch.zeros(1, dtype=torch.long), r"\[0, 1\]"),
        (torch.tensor([[0.5, 0.6]]), torch.zeros(1, dtype=torch.long), "sum to 1"),
        (torch.tensor([[float("nan"), 1.0]]), torch.zeros(1, dtype=torch.long), "NaN"),
        (torch.full((1, 2), 0.5), torch.tensor([2]), r"\[0, 2\)"),
        (torch.full((1, 2), 0.5), torch.tensor([0.0]), "integer"),
        (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), "empty"),
        (torch.ones(1, 2, dtype=torch.long), torch.zeros(1, dtype=torch.long), "floating"),
    ],
)
def test_bad_input_is_a_usage_error(probs, labels, match) -> None:
    with pytest.raises(UsageError, match=match):
        calibration_metrics(probs, labels)


@pytest.mark.parametrize("n_bins", [0, -1, 2.5, True])
def test_bad_n_bins(n_bins) -> None:
    with pytest.raises(UsageError, match="n_bins"):
        calibration_metrics(
            torch.full((1, 2), 0.5), torch.zeros(1, dtype=torch.long), n_bins=n_bins
        )
