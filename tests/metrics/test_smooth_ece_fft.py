"""smooth_ece's FFT convolution against torch-uncertainty's direct one (the oracle)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from calibench.metrics.calibration import _fft_reflected_convolve, smooth_ece


def torch_uncertainty_smooth_ece(conf: torch.Tensor, correct: torch.Tensor) -> float:
    from torch_uncertainty.metrics.classification.calibration.smooth_calibration_error import (
        SmoothCalibrationError,
    )

    metric = SmoothCalibrationError(kernel_type="reflected", bandwidth="auto")
    c, a = conf.float(), correct.float()
    return float(metric._compute_smooth_ece(c, a, metric._search_bandwidth(c, a)))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 400),
    sharpness=st.floats(0.5, 500.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_smooth_ece_equals_torch_uncertainty(n: int, sharpness: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    beta = torch.distributions.Beta(torch.tensor(sharpness), torch.tensor(1.0))
    torch.manual_seed(seed)
    conf = beta.sample((n,)).double().clamp(0.1, 1.0)
    correct = (torch.rand(n, generator=g, dtype=torch.float64) < conf).double()
    assert abs(smooth_ece(conf, correct) - torch_uncertainty_smooth_ece(conf, correct)) < 1e-6


def test_well_calibrated_large_sample_matches() -> None:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    conf = torch.distributions.Beta(torch.tensor(300.0), torch.tensor(1.0)).sample((10_000,))
    correct = (torch.rand(10_000, generator=g) < conf).double()
    ours, theirs = smooth_ece(conf.double(), correct), torch_uncertainty_smooth_ece(conf, correct)
    assert ours < 0.01
    assert abs(ours - theirs) < 1e-6


@given(n=st.integers(2, 300).map(lambda k: 2 * k + 1), seed=st.integers(0, 1000))
def test_fft_convolution_equals_conv1d(n: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(n, generator=g)
    kernel = torch.rand(n, generator=g)
    flipped = torch.flip(values, dims=[0])
    ext = torch.cat([flipped[:-1], values, flipped[1:]]).double().view(1, 1, -1)
    direct = torch.nn.functional.conv1d(ext, kernel.double().view(1, 1, -1)).view(-1)
    expected = direct[n // 2 : n // 2 + n]
    torch.testing.assert_close(
        _fft_reflected_convolve(values, kernel).double(), expected, rtol=1e-6, atol=1e-5
    )
