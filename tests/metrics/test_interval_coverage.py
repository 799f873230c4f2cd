"""Simulation: the 95 % intervals cover the population value they claim to cover.

Synthetic models with a known calibration curve: top-label confidence ``c ~ 0.1 + 0.9 Beta(a,
1.5)`` and ``P(correct | c) = f(c)``, with ``f(c) = c`` (calibrated) or ``f(c) = c^g``, ``g > 1``
(over-confident). The population binned errors ``sum_b |E[(f(c) - c) 1{c in b}]|`` (equal-width
bins; equal-mass bins at the population quantiles of ``c``) and the OOD AUROC
``P(c_id > c_ood)`` against OOD confidences ``0.1 + 0.9 Beta(2, 2)`` are integrals, computed
with ``scipy.integrate.quad``. Each repetition draws a test set (and an OOD set) of size N and
builds the intervals with the code the leaderboard uses
(:func:`calibench.metrics.bootstrap.replicates`, :func:`~calibench.metrics.bootstrap.ood_replicates`,
:mod:`calibench.metrics.intervals`). Resample indices are shared by the repetitions (they depend
only on ``(seed, N, n_boot)``), as by the seeds of a leaderboard row.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from calibench.metrics.bootstrap import (
    count_chunks,
    ood_replicates,
    replicates,
    resample_indices,
    stream_seed,
)
from calibench.metrics.intervals import BinnedReplicates, binned_error_interval, percentile_interval

REPS = 200
N_BOOT = 200
M = 15
OOD_CONF = stats.beta(2.0, 2.0, loc=0.1, scale=0.9)
Curve = Callable[[np.ndarray], np.ndarray]
CURVES: dict[str, Curve] = {"calibrated": lambda c: c, "over-confident": lambda c: c**1.5}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: these are many mid-sized tensor operations, and on a busy 2-core
    machine two threads that wait for each other made this file about 20x slower (measured)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def confidence(a: float = 5.0) -> stats.rv_continuous:
    return stats.beta(a, 1.5, loc=0.1, scale=0.9)


def population_binned_error(f: Curve, conf: stats.rv_continuous, adaptive: bool) -> float:
    edges = conf.ppf(np.arange(M + 1) / M) if adaptive else np.arange(M + 1) / M
    masses = [
        integrate.quad(lambda c: (f(c) - c) * conf.pdf(c), a, b, limit=200)[0]
        for a, b in itertools.pairwise(edges)
    ]
    return float(np.abs(masses).sum())


def shared_resamples(n: int, stream: str = "test") -> list[torch.Tensor]:
    """Count matrices built once: every repetition (and seed) uses the same resamples."""
    return list(count_chunks(resample_indices(n, N_BOOT, stream_seed(0, stream)), n))


def covered(lo: np.ndarray, hi: np.ndarray, truth: float) -> float:
    return float(np.mean((lo <= truth) & (truth <= hi)))


@pytest.mark.parametrize("n", [1_000, 10_000])
@pytest.mark.parametrize("curve", list(CURVES))
def test_binned_error_intervals_cover_the_population_error(curve: str, n: int) -> None:
    f, conf = CURVES[curve], confidence()
    rng = np.random.default_rng(n + len(curve))
    c = conf.rvs(size=(REPS, n), random_state=rng)
    y = (rng.random((REPS, n)) < f(c)).astype(np.float64)
    c, y = torch.from_numpy(c), torch.from_numpy(y)
    reps = replicates(
        shared_resamples(n), binned={"ece": (c, y, M, False), "adaece": (c, y, M, True)}
    )
    for name, adaptive in (("ece", False), ("adaece", True)):
        truth = population_binned_error(f, conf, adaptive)
        r = reps[name]
        assert isinstance(r, BinnedReplicates)
        hits = covered(*binned_error_interval(r.point, r.deviation, r.linear), truth)
        naive = covered(*percentile_interval(r.plugin), truth)
        print(f"{curve} N={n} {name}: population {truth:.5f}, coverage {hits}, percentile {naive}")
        assert hits >= 0.90, (name, hits)
        if curve == "calibrated":
            # The population error is 0 and every resampled plug-in error is > 0: a percentile
            # interval (as any interval made of quantiles of the replicates) cannot cover it.
            assert naive < 0.5, (name, naive)


@pytest.mark.parametrize("n", [1_000, 10_000])
def test_auroc_intervals_cover_the_population_auroc(n: int) -> None:
    conf = confidence()
    truth = integrate.quad(lambda x: OOD_CONF.cdf(x) * conf.pdf(x), 0.1, 1.0, limit=200)[0]
    rng = np.random.default_rng(n)
    score_id = torch.from_numpy(conf.rvs(size=(REPS, n), random_state=rng))
    score_ood = torch.from_numpy(OOD_CONF.rvs(size=(REPS, n), random_state=rng))
    id_counts, ood_counts = shared_resamples(n), shared_resamples(n, "ood")
    auroc = np.stack(
        [
            ood_replicates(i, o, id_counts, ood_counts)["auroc"]
            for i, o in zip(score_id, score_ood, strict=True)
        ]
    )
    hits = covered(*percentile_interval(auroc), truth)
    print(f"N={n} auroc: population {truth:.5f}, coverage {hits}")
    assert hits >= 0.90


@pytest.mark.parametrize("curve", ["calibrated", "over-confident"])
def test_row_of_seeds_covers_the_seed_mean_of_population_errors(curve: str) -> None:
    """Three models on one shared test set of N = 1,000: image ``i`` has latent uniforms
    ``(u_i, v_i)`` shared by the models; model ``s`` has confidence ``F_s^{-1}(u_i)`` and is
    correct when ``v_i < f_s(conf)``. The row interval (seed means of the replicates on shared
    resamples) covers the mean of the three population errors."""
    n = 1_000
    shapes = (4.0, 5.0, 6.5)
    powers = (1.0, 1.0, 1.0) if curve == "calibrated" else (1.3, 1.5, 1.8)
    rng = np.random.default_rng(len(curve))
    u, v = rng.random((REPS, n)), rng.random((REPS, n))
    conf = np.stack([confidence(a).ppf(u) for a in shapes], axis=1)  # (REPS, 3, n)
    correct = (v[:, None, :] < conf ** np.array(powers)[None, :, None]).astype(np.float64)
    c, y = torch.from_numpy(conf), torch.from_numpy(correct)
    reps = replicates(
        shared_resamples(n), binned={"ece": (c, y, M, False), "adaece": (c, y, M, True)}
    )
    for name, adaptive in (("ece", False), ("adaece", True)):
        truth = np.mean(
            [
                population_binned_error(lambda x, g=g: x**g, confidence(a), adaptive)
                for a, g in zip(shapes, powers, strict=True)
            ]
        )
        r = reps[name]
        assert isinstance(r, BinnedReplicates)
        seeds = [
            BinnedReplicates(r.point[:, s], r.deviation[:, s], r.linear[:, s], r.plugin[:, s])
            for s in range(3)
        ]
        row = BinnedReplicates.seed_mean(seeds)  # what a leaderboard row does
        hits = covered(*binned_error_interval(row.point, row.deviation, row.linear), truth)
        print(f"row of 3 seeds, {curve} N={n} {name}: population {truth:.5f}, coverage {hits}")
        assert hits >= 0.90, (name, hits)
