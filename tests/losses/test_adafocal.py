"""adafocal against a transcription of the official code (3mcloud/adafocal) and a hand-computed run.

The oracle follows, step by step, ``losses/adafocal.py`` (``bin_stats`` as a dict of bins,
``get_gamma_per_sample``'s per-sample loop over the bins, ``forward``'s
``-(1 - sign * pt + 1e-20) ** |gamma| * logpt`` with the gammas in a float32 tensor,
``update_bin_stats``), the val confidences of ``utils/metrics.py``
``test_classification_net_adafocal`` (``max`` of ``log_softmax``, then ``exp``) and the
equal-mass bins of ``adaECE_error_mukhoti`` (``np.interp`` edges, ``np.histogram``,
``conf > lower & conf <= upper`` on a float32 tensor). The oracle's loss is a sum (as the
official); calibench's is the mean, so the oracle's value is divided by the batch size.
"""

from __future__ import annotations

import collections
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from calibench import create_loss
from calibench.errors import UsageError
from calibench.losses.adafocal import equal_mass_edges, next_gamma
from calibench.losses.base import loss_state
from calibench.registry import get_registry

from .conftest import random_batch, value_and_grad

OFFICIAL_DEFAULTS = {  # main.py parseArgs, lines 53-58
    "num_bins": 15,
    "lam": 1.0,
    "gamma_initial": 1.0,
    "switch_pt": 0.2,
    "gamma_max": 20.0,
    "gamma_min": -2.0,
}


class OracleAdaFocal:
    """The official ``AdaFocal`` module, transcribed (no file output, no args object)."""

    def __init__(self, num_bins, lam, gamma_initial, switch_pt, gamma_max, gamma_min) -> None:
        self.num_bins, self.lam, self.switch_pt = num_bins, lam, switch_pt
        self.gamma_max, self.gamma_min = gamma_max, gamma_min
        self.bin_stats = collections.defaultdict(dict)
        for b in range(num_bins):
            self.bin_stats[b]["lower_boundary"] = b * (1 / num_bins)
            self.bin_stats[b]["upper_boundary"] = (b + 1) * (1 / num_bins)
            self.bin_stats[b]["gamma"] = gamma_initial

    def update_bin_stats(self, val_adabin_dict) -> None:
        for b in range(self.num_bins):
            prev = self.bin_stats[b]["gamma"]
            gap = val_adabin_dict[b]["calibration_gap"]
            if prev > 0:  # noqa: SIM108 (their branches, as written)
                new = prev * math.exp(self.lam * gap)
            else:
                new = prev * math.exp(-self.lam * gap)
            if abs(new) < self.switch_pt:
                new = -self.switch_pt if new > 0 else self.switch_pt
            self.bin_stats[b]["gamma"] = max(min(new, self.gamma_max), self.gamma_min)
            self.bin_stats[b]["lower_boundary"] = val_adabin_dict[b]["lower_bound"]
            self.bin_stats[b]["upper_boundary"] = val_adabin_dict[b]["upper_bound"]

    def get_gamma_per_sample(self, pt: torch.Tensor) -> torch.Tensor:
        gammas = []
        for i in range(pt.shape[0]):
            value = pt[i].item()
            for b, stats in self.bin_stats.items():  # their branches, as written
                if b == 0 and value < stats["upper_boundary"]:  # noqa: SIM114
                    break
                elif b == self.num_bins - 1 and value >= stats["lower_boundary"]:  # noqa: SIM114
                    break
                elif stats["lower_boundary"] <= value < stats["upper_boundary"]:
                    break
            gammas.append(stats["gamma"])
        return torch.tensor(gammas)

    def forward_sum(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logpt = F.log_softmax(logits, dim=1).gather(1, target.view(-1, 1)).view(-1)
        pt = logpt.exp()
        gamma = self.get_gamma_per_sample(pt)
        pt = torch.sign(gamma) * pt
        return (-1 * (1 - pt + 1e-20) ** torch.abs(gamma) * logpt).sum()


def oracle_val_bins(logits: torch.Tensor, labels: torch.Tensor, num_bins: int) -> dict:
    """``evaluate_dataset``'s ``val_adabin_dict``: confidences as the official test loop
    computes them, then ``adaECE_error_mukhoti``'s bins (its ECE sum is not needed)."""
    log_conf, predictions = torch.max(F.log_softmax(logits, dim=1), dim=1)
    confs = log_conf.exp().numpy().tolist()
    preds, labs = predictions.numpy().tolist(), labels.numpy().tolist()

    def histedges_equal_n(x):
        npt = len(x)
        return np.interp(np.linspace(0, npt, num_bins + 1), np.arange(npt), np.sort(x))

    confidences = torch.FloatTensor(confs)
    accuracies = torch.FloatTensor(preds).eq(torch.FloatTensor(labs))
    _, boundaries = np.histogram(confidences, histedges_equal_n(confidences))
    bins = collections.defaultdict(dict)
    for b, (lower, upper) in enumerate(itertools.pairwise(boundaries)):
        in_bin = confidences.gt(lower.item()) * confidences.le(upper.item())
        if in_bin.float().mean().item() > 0:
            acc = accuracies[in_bin].float().mean().item()
            conf = confidences[in_bin].mean().item()
        else:
            acc = conf = 0.0
        bins[b].update(lower_bound=lower, upper_bound=upper, calibration_gap=conf - acc)
    return bins


def val_split(seed: int, n: int = 600, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Val logits (float32) and labels drawn from a tempered softmax of them: underconfident
    where the logits are small (labels from ``softmax(3 z)``), overconfident where they are
    large (``softmax(0.4 z)``), so the bins' gaps take both signs."""
    g = torch.Generator().manual_seed(seed)
    scale = 0.5 + 3.5 * torch.rand(n, 1, generator=g)
    logits = scale * torch.randn(n, k, generator=g)
    sharpness = torch.where(scale < 1.5, 3.0, 0.4)
    labels = torch.multinomial(torch.softmax(sharpness * logits, dim=1), 1, generator=g)
    return logits, labels.squeeze(1)


def test_defaults_are_the_official_main_py_settings() -> None:
    assert get_registry("losses").get("adafocal").defaults == OFFICIAL_DEFAULTS


def test_equal_mass_edges_are_numpy_interp_to_the_bit() -> None:
    g = torch.Generator().manual_seed(0)
    for n, bins in [(5000, 15), (500, 15), (7, 15), (1, 3), (100, 1), (33, 4)]:
        x = torch.rand(n, generator=g).float()
        x[: n // 3] = x[0]  # ties, as saturated confidences give
        expected = np.interp(np.linspace(0, n, bins + 1), np.arange(n), np.sort(x.numpy()))
        assert equal_mass_edges(x, bins).numpy().tobytes() == expected.tobytes(), (n, bins)


@pytest.mark.parametrize("params", [{}, {"num_bins": 5, "lam": 4.0, "gamma_max": 6.0}])
def test_three_val_updates_match_the_official_update_bin_stats_exactly(params) -> None:
    settings = {**OFFICIAL_DEFAULTS, **params}
    ours, theirs = create_loss("adafocal", **params), OracleAdaFocal(**settings)
    for epoch, seed in enumerate([1, 2, 3], start=1):
        logits, labels = val_split(seed)
        ours.on_epoch_end(epoch, logits, labels)
        theirs.update_bin_stats(oracle_val_bins(logits, labels, settings["num_bins"]))
        b = settings["num_bins"]
        assert ours.gammas.tolist() == [theirs.bin_stats[i]["gamma"] for i in range(b)]
        edges = [theirs.bin_stats[i]["lower_boundary"] for i in range(b)]
        assert ours.bin_edges.tolist() == [*edges, theirs.bin_stats[b - 1]["upper_boundary"]]
    assert (ours.gammas < 1).any() and (ours.gammas > 1).any()  # moved both ways


@pytest.mark.parametrize(("seed", "scale"), [(0, 1.0), (1, 3.0), (2, 8.0)])
def test_forward_matches_the_official_forward_after_updates(seed: int, scale: float) -> None:
    """Values and gradients, float64 and float32, once the bins carry focal and inverse-focal
    gammas (lambda 8 pushes them to both signs and to the clips)."""
    params = {"lam": 8.0}
    ours, theirs = (
        create_loss("adafocal", **params),
        OracleAdaFocal(**{**OFFICIAL_DEFAULTS, **params}),
    )
    for epoch, val_seed in enumerate([10 + seed, 20 + seed], start=1):
        logits, labels = val_split(val_seed)
        ours.on_epoch_end(epoch, logits, labels)
        theirs.update_bin_stats(oracle_val_bins(logits, labels, 15))
    assert (ours.gammas < 0).any() and (ours.gammas > 0).any()
    z, y = random_batch(seed, 64, 10, scale)
    n = len(y)
    mine, my_grad = value_and_grad(ours, z, y)
    ref, ref_grad = value_and_grad(lambda a, b: theirs.forward_sum(a, b) / n, z, y)
    assert mine.dtype == torch.float64
    torch.testing.assert_close(mine, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(my_grad, ref_grad, rtol=0, atol=1e-12)
    z32 = z.float()
    mine32, grad32 = value_and_grad(ours, z32, y)
    ref32, ref_grad32 = value_and_grad(lambda a, b: theirs.forward_sum(a, b) / n, z32, y)
    torch.testing.assert_close(mine32, ref32, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(grad32, ref_grad32, rtol=1e-5, atol=1e-7)


def test_sample_gamma_is_the_official_bin_lookup_at_and_between_edges() -> None:
    loss = create_loss("adafocal", num_bins=4)
    loss.bin_edges.copy_(torch.tensor([0.1, 0.3, 0.3, 0.7, 0.9], dtype=torch.float64))
    loss.gammas.copy_(torch.tensor([1.0, 2.0, 3.0, -0.5], dtype=torch.float64))
    oracle = OracleAdaFocal(4, 1.0, 1.0, 0.2, 20.0, -2.0)
    for b in range(4):
        oracle.bin_stats[b].update(
            lower_boundary=float(loss.bin_edges[b]),
            upper_boundary=float(loss.bin_edges[b + 1]),
            gamma=float(loss.gammas[b]),
        )
    p = torch.tensor(
        [0.0, 0.05, 0.1, 0.29, 0.3, 0.5, 0.7, 0.71, 0.9, 0.95, 1.0], dtype=torch.float64
    )
    assert loss.sample_gammas(p).tolist() == oracle.get_gamma_per_sample(p).tolist()
    # bin 0 below 0.3; the empty [0.3, 0.3) is skipped; the last bin from 0.7 on
    assert loss.sample_gammas(p).tolist() == [1, 1, 1, 1, 3, 3, -0.5, -0.5, -0.5, -0.5, -0.5]


def test_the_bin_is_chosen_by_the_true_class_probability_not_the_confidence() -> None:
    loss = create_loss("adafocal", num_bins=2)
    loss.bin_edges.copy_(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    loss.gammas.copy_(torch.tensor([-1.0, 2.0], dtype=torch.float64))
    z = torch.tensor([[2.0, 0.0]], dtype=torch.float64)  # confidence 0.88 (class 0)
    p1 = torch.softmax(z, dim=1)[0, 1]  # the true class 1 has p = 0.12: bin 0, gamma -1
    expected = -((1 + p1) ** 1.0) * torch.log(p1)  # inverse focal
    torch.testing.assert_close(loss(z, torch.tensor([1])), expected)


def crafted_val(confidences: list[float], wrong: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-class val logits ``[logit(c), 0]`` (top-label confidence c, class 0 predicted); the
    samples in ``wrong`` are labelled 1."""
    c = torch.tensor(confidences, dtype=torch.float64)
    logits = torch.stack([torch.log(c / (1 - c)), torch.zeros_like(c)], dim=1).float()
    labels = torch.zeros(len(confidences), dtype=torch.int64)
    labels[wrong] = 1
    return logits, labels


def test_a_hand_computed_three_epoch_sequence_with_sign_switches_and_clipping() -> None:
    """Two bins, lambda 5, switch point 0.2, gammas clipped to [-0.5, 3].

    Five val samples per epoch; the equal-mass edges are x0, x2 + (x3 - x2) / 2, x4 of the
    sorted confidences, and the least confident sample x0 is in no bin (``conf > lower``).

    epoch 1: bin 0 = {0.55, 0.65} right: gap 0.60 - 1 = -0.4; 1 * e^(5 * -0.4) = 0.1353 < 0.2,
             positive -> -0.2 (inverse focal). bin 1 = {0.75, 0.85} one wrong: gap 0.8 - 0.5 =
             +0.3; 1 * e^1.5 = 4.48 -> clipped to 3.
    epoch 2: bin 0 = {0.75, 0.85} right: gap -0.2; gamma < 0 so -0.2 * e^(-5 * -0.2) =
             -0.2 e = -0.5437 -> clipped to -0.5. bin 1 = {0.88, 0.92} right: gap -0.1;
             3 e^-0.5 = 1.8195919791.
    epoch 3: bin 0 = {0.65, 0.75} one wrong: gap 0.7 - 0.5 = +0.2; -0.5 e^-1 = -0.1839, |.| < 0.2
             and negative -> +0.2 (focal again). bin 1 = {0.78, 0.82} right: gap -0.2;
             1.8195919791 e^-1 = 0.6693904804.
    """
    loss = create_loss("adafocal", num_bins=2, lam=5.0, gamma_max=3.0, gamma_min=-0.5)
    epochs = [
        ([0.52, 0.55, 0.65, 0.75, 0.85], [3], [-0.2, 3.0], 0.70),
        ([0.60, 0.75, 0.85, 0.88, 0.92], [], [-0.5, 1.8195919791], 0.865),
        ([0.55, 0.65, 0.75, 0.78, 0.82], [1], [0.2, 0.6693904804], 0.765),
    ]
    for epoch, (confidences, wrong, gammas, middle) in enumerate(epochs, start=1):
        logits, labels = crafted_val(confidences, wrong)
        loss.on_epoch_end(epoch, logits, labels)
        torch.testing.assert_close(loss.gammas.tolist(), gammas, rtol=2e-6, atol=0)
        edges = [confidences[0], middle, confidences[-1]]
        torch.testing.assert_close(loss.bin_edges.tolist(), edges, rtol=0, atol=1e-6)
    state = loss_state(loss)
    assert set(state) == {"gammas", "bin_edges"} and state["gammas"] == loss.gammas.tolist()
    # the training samples now take the epoch-3 gammas by their bin
    z = torch.tensor([[math.log(0.6 / 0.4), 0.0], [math.log(0.9 / 0.1), 0.0]], dtype=torch.float64)
    p = torch.tensor([0.6, 0.9], dtype=torch.float64)
    per_sample = -torch.stack([(1 - p[0]) ** 0.2, (1 - p[1]) ** 0.6693904804]) * torch.log(p)
    torch.testing.assert_close(loss(z, torch.tensor([0, 0])), per_sample.mean(), rtol=2e-6, atol=0)


@pytest.mark.parametrize(
    ("gamma", "gap", "expected"),
    [
        (1.0, 0.1, math.exp(0.1)),  # overconfident: more focal
        (1.0, -0.1, math.exp(-0.1)),  # underconfident: less focal
        (-1.0, 0.1, -math.exp(-0.1)),  # inverse focal, overconfident: weaker inverse focal
        (-1.0, -0.1, -math.exp(0.1)),  # inverse focal, underconfident: stronger inverse focal
        (0.21, -0.1, -0.2),  # below the switch point: to inverse focal
        (-0.21, 0.1, 0.2),  # back to focal
        (19.0, 0.5, 20.0),  # clipped
        (-1.9, -0.5, -2.0),
    ],
)
def test_next_gamma_is_sign_aware_switches_and_clips(gamma, gap, expected) -> None:
    assert next_gamma(gamma, gap, 1.0, 0.2, -2.0, 20.0) == pytest.approx(expected, rel=1e-15)


def test_state_dict_carries_gammas_and_edges_and_restores_them() -> None:
    loss = create_loss("adafocal")
    logits, labels = val_split(5)
    loss.on_epoch_end(1, logits, labels)
    fresh = create_loss("adafocal")
    fresh.load_state_dict(loss.state_dict())
    assert torch.equal(fresh.gammas, loss.gammas) and torch.equal(fresh.bin_edges, loss.bin_edges)
    assert loss_state(fresh) == loss_state(loss)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"num_bins": 0}, "num_bins must be an integer >= 1"),
        ({"num_bins": 2.5}, "num_bins must be an integer"),
        ({"lam": -1.0}, "lam must be >= 0"),
        ({"switch_pt": -0.1}, "switch_pt must be >= 0"),
        ({"gamma_min": 3.0, "gamma_max": 2.0}, "gamma_min must be <= gamma_max"),
    ],
)
def test_rejects_bad_parameters(params: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        create_loss("adafocal", **params)


def test_an_empty_val_split_is_refused() -> None:
    with pytest.raises(UsageError, match="val split"):
        create_loss("adafocal").on_epoch_end(
            1, torch.zeros(0, 10), torch.zeros(0, dtype=torch.int64)
        )
