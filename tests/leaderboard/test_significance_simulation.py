"""Simulation: the adjacent-rank test has its nominal false-positive rate and the power it claims.

A *procedure* (a loss) is over-confident by ``delta``; each seed trains a model whose
over-confidence is ``delta_s ~ Normal(delta, TAU)`` (the seed effect) and is evaluated on a draw
of ``N`` test images (the test-set noise): top-label confidence ``c ~ 0.1 + 0.9 Beta(5, 1.5)``,
correct with probability ``c - delta_s``. A run's value is its plug-in ECE (15 equal-width bins,
calibench's :func:`~calibench.metrics.bootstrap.bin_masses`, equal to the recorded ECE; checked
below), and two rows of 3 seeds are compared by
:func:`calibench.leaderboard.significance.compare_adjacent`, as the leaderboard does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from calibench.leaderboard.significance import compare_adjacent
from calibench.metrics.bootstrap import bin_masses
from calibench.metrics.calibration import binned_ece

REPS = 400
SEEDS = 3
N = 5_000
DELTA = 0.03
TAU = 0.003


def draw_test_sets(
    shape: tuple[int, ...], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Confidences and uniforms ``(*shape, N)``: image ``i`` is correct when ``u_i < c_i - delta``."""
    return 0.1 + 0.9 * rng.beta(5.0, 1.5, (*shape, N)), rng.random((*shape, N))


def eces(deltas: np.ndarray, conf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The ECE of one run per over-confidence in ``deltas`` (any shape), on its own test set."""
    correct = (u < np.clip(conf - deltas[..., None], 0.0, 1.0)).astype(np.float64)
    masses = bin_masses(torch.from_numpy(conf), torch.from_numpy(correct))
    return masses.abs().sum(dim=-1).numpy()


def rows(delta: float, rng: np.random.Generator) -> np.ndarray:
    """``(REPS, SEEDS)`` per-seed ECEs of a procedure: a row of the leaderboard per repetition."""
    return eces(rng.normal(delta, TAU, (REPS, SEEDS)), *draw_test_sets((REPS, SEEDS), rng))


def test_the_simulated_value_is_the_recorded_ece():
    rng = np.random.default_rng(0)
    conf = 0.1 + 0.9 * rng.beta(5.0, 1.5, N)
    correct = (rng.random(N) < conf - DELTA).astype(np.float64)
    masses = bin_masses(torch.from_numpy(conf), torch.from_numpy(correct))
    want = binned_ece(torch.from_numpy(conf), torch.from_numpy(correct))
    assert float(masses.abs().sum()) == pytest.approx(want, abs=1e-12)


@pytest.fixture(scope="module")
def null() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2024)
    return rows(DELTA, rng), rows(DELTA, rng)


def seed_sd(values: np.ndarray) -> float:
    """The seed standard deviation of a procedure's ECE (seed effect and test-set noise)."""
    return float(np.std(values, ddof=1))


def test_null_false_positive_rate_is_at_most_7_percent(null):
    a, b = null
    sd = seed_sd(np.concatenate([a, b]))
    rate = np.mean([compare_adjacent(x, y).different for x, y in zip(a, b, strict=True)])
    print(f"seed sd of ECE {sd * 100:.3f} points; false-positive rate {rate:.4f}")
    assert 0.3e-2 < sd < 1e-2  # the scale of the example (0.46 points)
    assert rate <= 0.07


def test_a_difference_of_four_seed_sds_is_detected(null):
    better = null[0]
    sd = seed_sd(np.concatenate(null))
    # The plug-in ECE's upward bias shrinks as the error grows: find the over-confidence whose
    # mean ECE lies 4 seed sds above the procedure's, on common random numbers.
    grid = DELTA + np.linspace(2.0, 6.0, 9) * sd
    common = draw_test_sets((1_000,), np.random.default_rng(11))
    means = [eces(np.full(1_000, d), *common).mean() for d in grid]
    delta_b = float(np.interp(better.mean() + 4 * sd, means, grid))
    worse = rows(delta_b, np.random.default_rng(7))
    shift = (worse.mean() - better.mean()) / sd
    power = np.mean([compare_adjacent(x, y).different for x, y in zip(better, worse, strict=True)])
    print(f"true difference {shift:.2f} seed sds; detected in {power:.4f}")
    assert 3.8 < shift < 4.2
    assert power >= 0.80
    single = [compare_adjacent(x[:1], y).different for x, y in zip(better, worse, strict=True)]
    assert not any(single)  # a row with one seed is never marked different
