"""cals against a transcription of the official code (by-liu/CALS) and a hand-computed run.

The oracle follows ``calibrate/lagrangian/penalty.py`` (``p2``, ``p3``, ``phr``) and
``calibrate/lagrangian/aug_lagrangian_class.py`` step by step: ``get`` (the training penalty,
added to ``nn.CrossEntropyLoss()`` as ``DistributedLagrangianTrainer.train_epoch`` does), and the
val pass of ``DistributedLagrangianTrainer.eval_epoch``: ``reset_update_lambd``, then
``update_lambd`` per val batch (per-sample clamped derivatives summed, constraints summed), then
``set_lambd`` and ``update_rho``. The official tensors live on CUDA; here on the CPU.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from calibench import create_loss
from calibench.errors import UsageError
from calibench.losses.base import loss_state
from calibench.losses.cals import penalty_lagrangian
from calibench.registry import get_registry

from .conftest import random_batch, value_and_grad

DEFAULTS = {  # configs/lag/aug_lagrangian_class.yaml, README (margin), class signature (rho_max)
    "margin": 10.0,
    "penalty": "phr",
    "lambd_min": 1e-6,
    "lambd_max": 1e6,
    "lambd_step": 1,
    "rho_min": 1.0,
    "rho_max": 10.0,
    "rho_step": 10,
    "gamma": 1.2,
    "tao": 0.9,
    "normalize": True,
}


def oracle_p2(h, lambd, rho):
    y_sup = lambd * h + lambd * rho * (h**2) + 1 / 6 * (rho**2) * (h**3)
    y_inf = lambd * h / (1 - rho * h.clamp(max=0))
    grad_y_sup = lambd + 2 * lambd * rho * h + 1 / 2 * (rho**2) * (h**2)
    grad_y_inf = lambd / (1 - rho * h.clamp(max=0)) ** 2
    sup = h >= 0
    return torch.where(sup, y_sup, y_inf), torch.where(sup, grad_y_sup, grad_y_inf)


def oracle_p3(h, lambd, rho):
    lambd = lambd.unsqueeze(dim=0).expand(h.shape)
    rho = rho.unsqueeze(dim=0).expand(h.shape)
    y_sup = lambd * h + lambd * rho * (h**2)
    y_inf = lambd * h / (1 - rho * h.clamp(max=0))
    grad_y_sup = lambd + 2 * lambd * rho * h
    grad_y_inf = lambd / (1 - rho * h.clamp(max=0)) ** 2
    sup = h >= 0
    return torch.where(sup, y_sup, y_inf), torch.where(sup, grad_y_sup, grad_y_inf)


def oracle_phr(h, lambd, rho):
    x = lambd + rho * h
    y_sup = 1 / (2 * rho) * (x**2 - lambd**2)
    y_inf = -1 / (2 * rho) * (lambd**2)
    grad_y_sup = x
    grad_y_inf = torch.zeros_like(h)
    sup = x >= 0
    return torch.where(sup, y_sup, y_inf), torch.where(sup, grad_y_sup, grad_y_inf)


ORACLE_PENALTIES = {"p2": oracle_p2, "p3": oracle_p3, "phr": oracle_phr}


class OracleAugLagrangianClass:
    """``AugLagrangianClass`` transcribed (CPU tensors)."""

    def __init__(self, num_classes, margin, penalty, lambd_min, lambd_max, lambd_step,
                 rho_min, rho_max, rho_step, gamma, tao, normalize) -> None:  # fmt: skip
        self.num_classes, self.margin = num_classes, margin
        self.penalty_func = ORACLE_PENALTIES[penalty]
        self.lambd_min, self.lambd_max, self.lambd_step = lambd_min, lambd_max, lambd_step
        self.rho_min, self.rho_max = rho_min, rho_max
        self.rho_update, self.rho_step = rho_step > 0, rho_step
        self.gamma, self.tao, self.normalize = gamma, tao, normalize
        self.lambd = self.lambd_min * torch.ones(num_classes, requires_grad=False)
        self.rho = self.rho_min * torch.ones(num_classes, requires_grad=False)
        self.prev_constraints, self.curr_constraints = None, None

    def get_constraints(self, logits):  # AugLagrangian.get_constraints
        max_values = logits.amax(dim=-1, keepdim=True)
        constraints = max_values - logits - self.margin
        if self.normalize:
            constraints = constraints / self.margin
        return constraints

    def get(self, logits):
        logits = logits.movedim(1, -1)
        h = self.get_constraints(logits)
        p, _ = self.penalty_func(h, self.lambd, self.rho)
        return p.mean(), h.mean()

    def reset_update_lambd(self, epoch):
        self.grad_p_sum = torch.zeros_like(self.lambd)
        self.sample_num = 0
        self.curr_constraints = torch.zeros_like(self.rho)

    def update_lambd(self, logits, epoch):
        logits = logits.movedim(1, -1)
        h = self.get_constraints(logits)
        _, grad_p = self.penalty_func(h, self.lambd, self.rho)
        grad_p = torch.clamp(grad_p, min=self.lambd_min, max=self.lambd_max)
        grad_p = grad_p.flatten(start_dim=0, end_dim=-2)
        self.grad_p_sum += grad_p.sum(dim=0)
        self.sample_num += grad_p.shape[0]
        h = h.flatten(start_dim=0, end_dim=-2)
        self.curr_constraints += h.sum(dim=0)

    def set_lambd(self, epoch):
        if (epoch + 1) % self.lambd_step == 0:
            grad_p_mean = self.grad_p_sum / self.sample_num
            self.lambd = torch.clamp(grad_p_mean, min=self.lambd_min, max=self.lambd_max).detach()

    def update_rho(self, epoch):
        if self.rho_update:
            self.curr_constraints = self.curr_constraints / self.sample_num
            if (epoch + 1) % self.rho_step == 0 and self.prev_constraints is not None:
                self.rho = torch.where(
                    self.curr_constraints > (self.prev_constraints.clamp(min=0) * self.tao),
                    self.gamma * self.rho,
                    self.rho,
                )
                self.rho = torch.clamp(self.rho, min=self.rho_min, max=self.rho_max).detach()
            self.prev_constraints = self.curr_constraints

    def val_epoch(self, logits, epoch0, batch_size=250):
        """``eval_epoch(val_loader, epoch, phase="val")``'s multiplier work (0-based epoch)."""
        self.reset_update_lambd(epoch0)
        for start in range(0, len(logits), batch_size):
            self.update_lambd(logits[start : start + batch_size], epoch0)
        self.set_lambd(epoch0)
        self.update_rho(epoch0)


def oracle_training_loss(lagrangian, outputs, targets):
    """``loss_total + penalty`` of ``train_epoch`` with ``loss=ce``."""
    penalty, _ = lagrangian.get(outputs)
    return nn.CrossEntropyLoss()(outputs, targets) + penalty


def test_defaults_are_the_official_class_wise_config() -> None:
    assert get_registry("losses").get("cals").defaults == DEFAULTS


@pytest.mark.parametrize("kind", ["phr", "p2", "p3"])
def test_penalties_match_the_official_functions(kind: str) -> None:
    g = torch.Generator().manual_seed(0)
    h = torch.randn(64, 7, generator=g, dtype=torch.float64) * 2
    h[0, :3] = torch.tensor([0.0, -0.0, 1e-300])
    lambd = torch.rand(7, generator=g, dtype=torch.float64) * 3
    rho = 1 + torch.rand(7, generator=g, dtype=torch.float64) * 4
    value, grad = penalty_lagrangian(h, lambd, rho, kind)
    ref_value, ref_grad = ORACLE_PENALTIES[kind](h, lambd, rho)
    torch.testing.assert_close(value, ref_value, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-14, atol=1e-14)
    # the returned derivative is the value's derivative in h
    hh = h.clone().requires_grad_()
    (auto,) = torch.autograd.grad(penalty_lagrangian(hh, lambd, rho, kind)[0].sum(), hh)
    torch.testing.assert_close(auto, grad, rtol=1e-12, atol=1e-12)


def val_logits(seed: int, n: int = 700, k: int = 10, scale: float = 8.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, k, generator=g) * torch.rand(n, 1, generator=g)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"penalty": "p2", "margin": 3.0, "rho_step": 2, "lambd_max": 2.0},
        {"penalty": "p3", "normalize": False, "margin": 5.0, "rho_step": 1, "gamma": 1.5},
        {"lambd_step": 2, "rho_step": 3, "tao": 0.5, "rho_max": 2.0},
    ],
)
def test_epochs_of_val_updates_and_the_training_loss_match_the_official_code(params) -> None:
    settings = {**DEFAULTS, **params}
    ours = create_loss("cals", **params)
    theirs = OracleAugLagrangianClass(num_classes=10, **settings)
    z, y = random_batch(0, 32, 10, 8.0, dtype=torch.float32)
    ours(z, y)  # sizes the state from the logits
    for epoch in range(1, 7):
        logits = val_logits(epoch)
        ours.on_epoch_end(epoch, logits, torch.zeros(len(logits), dtype=torch.int64))
        theirs.val_epoch(logits, epoch - 1)
        # one sum of all val rows here, per-batch partial sums there: float32 rounding apart
        torch.testing.assert_close(ours.lambd, theirs.lambd, rtol=1e-6, atol=1e-12)
        torch.testing.assert_close(ours.rho, theirs.rho, rtol=1e-6, atol=0)
        torch.testing.assert_close(
            ours.prev_constraint, theirs.prev_constraints, rtol=1e-5, atol=1e-6
        )
        mine, my_grad = value_and_grad(ours, z.double(), y)
        lag64 = OracleAugLagrangianClass(num_classes=10, **settings)
        lag64.lambd, lag64.rho = ours.lambd.double(), ours.rho.double()
        ref, ref_grad = value_and_grad(
            lambda a, b, lag=lag64: oracle_training_loss(lag, a, b), z.double(), y
        )
        torch.testing.assert_close(mine, ref, rtol=0, atol=1e-12)
        torch.testing.assert_close(my_grad, ref_grad, rtol=0, atol=1e-12)
        torch.testing.assert_close(
            ours(z, y), oracle_training_loss(theirs, z, y), rtol=1e-5, atol=1e-6
        )
    assert float(ours.lambd.max()) > 10 * settings["lambd_min"]  # the multipliers moved


def test_a_hand_computed_three_epoch_sequence_of_multipliers_and_rho() -> None:
    """K = 3, two val rows per epoch, margin 2 (h = (max_j z_j - z_k - 2) / 2), PHR
    (derivative max(lambda + rho h, 0)), per-sample derivatives clipped to [1e-6, 1.5], rho
    updated on even epochs by gamma 2 where mean h > 0.9 max(previous mean h, 0).

    epoch 1 (lambda = 1e-6, rho = 1): rows [6, 0, 3] -> h = [-1, 2, .5]; [0, 4, 2] -> h =
        [1, -1, 0]. Derivatives [0, 2.000001, .500001] -> clipped [1e-6, 1.5, .500001];
        [1.000001, 0, 1e-6] -> [1.000001, 1e-6, 1e-6]. lambda = column means
        [.500001, .7500005, .250001]. Odd epoch: rho kept; mean h = [0, .5, .25].
    epoch 2: rows [5, 0, 0] -> h = [-1, 1.5, 1.5]; [3, 3, 0] -> h = [-1, -1, .5]. With the old
        rho = 1: [0, 2.2500005, 1.750001] -> [1e-6, 1.5, 1.5]; [0, 0, .750001] -> [1e-6, 1e-6,
        .750001]. lambda = [1e-6, .7500005, 1.1250005]. mean h = [-1, .25, 1]: only class 2
        grew (1 > .9 * .25; class 1: .25 < .9 * .5), rho = [1, 1, 2].
    epoch 3 (rho = [1, 1, 2]): rows [0, 8, 0] -> h = [3, -1, 3]; [4, 1, 4] -> h = [-1, .5, -1].
        [3.000001, 0, 7.1250005] -> [1.5, 1e-6, 1.5]; [0, 1.2500005, 0] -> [1e-6, 1.2500005,
        1e-6]. lambda = [.7500005, .62500075, .7500005]; odd epoch: rho kept; mean h = [1, -.25,
        1].
    """
    loss = create_loss("cals", margin=2.0, lambd_max=1.5, rho_step=2, gamma=2.0, rho_max=3.0)
    epochs = [
        ([[6, 0, 3], [0, 4, 2]], [0.500001, 0.7500005, 0.250001], [1, 1, 1], [0, 0.5, 0.25]),
        ([[5, 0, 0], [3, 3, 0]], [1e-6, 0.7500005, 1.1250005], [1, 1, 2], [-1, 0.25, 1]),
        ([[0, 8, 0], [4, 1, 4]], [0.7500005, 0.62500075, 0.7500005], [1, 1, 2], [1, -0.25, 1]),
    ]
    for epoch, (rows, lambd, rho, mean_h) in enumerate(epochs, start=1):
        logits = torch.tensor(rows, dtype=torch.float32)
        loss.on_epoch_end(epoch, logits, torch.zeros(2, dtype=torch.int64))
        torch.testing.assert_close(loss.lambd.tolist(), lambd, rtol=1e-6, atol=0)
        assert loss.rho.tolist() == rho
        assert loss.prev_constraint.tolist() == mean_h
    state = loss_state(loss)
    assert set(state) == {"lambd", "rho", "prev_constraint", "has_prev"}
    assert state["has_prev"] is True and state["rho"] == [1.0, 1.0, 2.0]
    # the training loss now uses these multipliers: CE + mean over the 3 classes of PHR
    z = torch.tensor([[4.0, 0.0, 1.0]], dtype=torch.float64)  # h = [-1, 1, .5]
    lam = torch.tensor(lambd, dtype=torch.float64)
    x = lam + torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64) * torch.tensor([-1.0, 1.0, 0.5])
    phr = [-(lam[0] ** 2) / 2, (x[1] ** 2 - lam[1] ** 2) / 2, (x[2] ** 2 - lam[2] ** 2) / 4]
    expected = F.cross_entropy(z, torch.tensor([0])) + sum(phr) / 3
    torch.testing.assert_close(
        loss(z, torch.tensor([0])), expected, rtol=1e-6, atol=0
    )  # lambda is float32


def test_state_is_sized_on_first_use_and_restored_into_a_fresh_loss() -> None:
    loss = create_loss("cals")
    assert all(v.numel() == 0 for k, v in loss.state_dict().items() if k != "has_prev")
    loss.on_epoch_end(1, val_logits(1, k=7), torch.zeros(700, dtype=torch.int64))
    assert loss.lambd.shape == (7,)
    fresh = create_loss("cals")
    fresh.load_state_dict(loss.state_dict())
    assert loss_state(fresh) == loss_state(loss)
    with pytest.raises(UsageError, match="K=7 classes, got logits with K=5"):
        fresh(*random_batch(0, 4, 5, dtype=torch.float32))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"margin": 0.0}, "margin must be > 0"),
        ({"penalty": "relu"}, "penalty must be one of phr, p2, p3"),
        ({"lambd_min": 0.0}, "lambd_min must be > 0"),
        ({"lambd_max": 1e-7}, "lambd_max must be >= 1e-06"),
        ({"lambd_step": 0}, "lambd_step must be an integer >= 1"),
        ({"rho_step": -1}, "rho_step must be an integer >= 0"),
        ({"rho_max": 0.5}, "rho_max must be >= 1.0"),
        ({"normalize": 1}, "normalize must be True or False"),
    ],
)
def test_rejects_bad_parameters(params: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        create_loss("cals", **params)
