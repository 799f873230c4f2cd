"""The Student-t interval over seeds of the shift columns: coverage by simulation, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from calibench.errors import UsageError
from calibench.metrics.intervals import SEED_T_CONVENTION, seed_t_interval


@pytest.mark.parametrize("n_seeds", [2, 3, 5])
def test_coverage_of_the_seed_mean_is_95_percent(n_seeds: int) -> None:
    """Normal seed values around an expected grid mean of 0.12 (sd 0.02): the interval holds
    the expected value in 95 % of 20,000 rows (binomial sd 0.15 %; tolerance 0.6 %)."""
    rng = np.random.default_rng(n_seeds)
    truth = 0.12
    values = rng.normal(truth, 0.02, size=(20_000, n_seeds))
    lo, hi = seed_t_interval(values)
    coverage = float(np.mean((lo <= truth) & (truth <= hi)))
    assert abs(coverage - 0.95) < 0.006, coverage
    # A normal-quantile interval (z instead of t) under-covers with few seeds: t matters here.
    half = stats.norm.ppf(0.975) * values.std(axis=1, ddof=1) / np.sqrt(n_seeds)
    mean = values.mean(axis=1)
    z_coverage = float(np.mean(np.abs(mean - truth) <= half))
    assert z_coverage < coverage - 0.01


def test_one_seed_gives_no_interval_and_the_bounds_are_the_formula() -> None:
    lo, hi = seed_t_interval(np.array([[0.3]]))
    assert np.isnan(lo).all() and np.isnan(hi).all()
    v = np.array([0.10, 0.14, 0.12])
    lo, hi = seed_t_interval(v)
    half = stats.t.ppf(0.975, 2) * np.std(v, ddof=1) / np.sqrt(3)
    assert (float(lo), float(hi)) == pytest.approx((0.12 - half, 0.12 + half), rel=1e-12)
    assert float(lo) < 0.12 < float(hi)
    with pytest.raises(UsageError, match="level"):
        seed_t_interval(v, level=1.0)
    assert "seed-to-seed" in SEED_T_CONVENTION and "blank for one seed" in SEED_T_CONVENTION
