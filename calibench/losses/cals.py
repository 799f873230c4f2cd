r"""CALS: class adaptive label smoothing by an augmented Lagrangian (Liu et al., CVPR 2023).

Cross-entropy plus a class-wise penalty-Lagrangian term on the logit distances
``max_j z_j - z_k``, whose multipliers (one per class) are re-estimated on the val split after
every epoch. Written from the official code (by-liu/CALS, ``calibrate/lagrangian/
aug_lagrangian_class.py``, ``calibrate/lagrangian/penalty.py``,
``calibrate/engine/distributed_lagrangian_trainer.py``); see :class:`CALSLoss` and
``docs/losses.md`` for every difference.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from calibench.errors import UsageError
from calibench.losses.base import (
    CalibrationLoss,
    check_inputs,
    check_int_param,
    check_param,
    float_logits,
)
from calibench.registry import register_loss

__all__ = ["PENALTIES", "CALSLoss", "penalty_lagrangian"]

REFERENCE = (
    "Liu, Rony, Galdran, Dolz & Ben Ayed 2023, 'Class Adaptive Network Calibration' (CVPR); "
    "official code by-liu/CALS, calibrate/lagrangian/aug_lagrangian_class.py"
)

PENALTIES = ("phr", "p2", "p3")


def penalty_lagrangian(
    h: torch.Tensor, lambd: torch.Tensor, rho: torch.Tensor, kind: str
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The penalty-Lagrangian :math:`P(h; \lambda, \rho)` and its derivative in :math:`h`.

    Elementwise, ``lambd`` and ``rho`` broadcast over ``h``'s last (class) dimension:

    - ``phr`` (Powell-Hestenes-Rockafellar): :math:`x = \lambda + \rho h`;
      :math:`P = (x^2 - \lambda^2) / (2\rho)`, :math:`P' = x` if :math:`x \ge 0`, else
      :math:`P = -\lambda^2 / (2\rho)`, :math:`P' = 0`.
    - ``p2``: :math:`P = \lambda h + \lambda\rho h^2 + \rho^2 h^3 / 6`,
      :math:`P' = \lambda + 2\lambda\rho h + \rho^2 h^2 / 2` if :math:`h \ge 0`, else
      :math:`P = \lambda h / (1 - \rho h)`, :math:`P' = \lambda / (1 - \rho h)^2`.
    - ``p3``: as ``p2`` without the cubic term (:math:`P' = \lambda + 2\lambda\rho h` for
      :math:`h \ge 0`).

    These are ``calibrate/lagrangian/penalty.py`` of by-liu/CALS.
    """
    if kind == "phr":
        x = lambd + rho * h
        active = x >= 0
        value = torch.where(active, (x * x - lambd * lambd) / (2 * rho), -lambd * lambd / (2 * rho))
        return value, torch.where(active, x, torch.zeros_like(x))
    above = h >= 0
    ratio = 1 - rho * h.clamp(max=0)  # >= 1: finite in both branches of torch.where
    below_value, below_grad = lambd * h / ratio, lambd / ratio**2
    above_value = lambd * h + lambd * rho * h * h
    above_grad = lambd + 2 * lambd * rho * h
    if kind == "p2":
        above_value = above_value + rho * rho * h**3 / 6
        above_grad = above_grad + rho * rho * h * h / 2
    elif kind != "p3":
        raise UsageError(f"unknown penalty {kind!r}; use one of {', '.join(PENALTIES)}")
    return torch.where(above, above_value, below_value), torch.where(above, above_grad, below_grad)


@register_loss(
    "cals",
    summary="CE + mean_{n,k} P((max_j z_nj - z_nk - margin)/margin; lambda_k, rho_k), class-wise "
    "augmented-Lagrangian multipliers re-estimated on the val split after every epoch",
    reference=REFERENCE,
)
class CALSLoss(CalibrationLoss):
    r"""CALS: cross-entropy plus a class-wise augmented-Lagrangian penalty on logit margins.

    With the constraints :math:`h_{nk} = (\max_j z_{nj} - z_{nk} - m) / m` (``normalize``; else
    without the division) and the penalty-Lagrangian :math:`P` of :func:`penalty_lagrangian`,

    .. math:: L = \frac{1}{N}\sum_n -\log p_{ny_n}
              + \frac{1}{NK}\sum_{n,k} P(h_{nk};\ \lambda_k, \rho_k)

    the multipliers :math:`\lambda` and penalty parameters :math:`\rho` (one per class) being
    constants of the step (buffers). ``AugLagrangianClass.get`` of the official code.

    **Update** (:meth:`on_epoch_end`, after every epoch ``e`` (1-based), on the val split's
    predictive logits ``s = z``, labels unused; the official trainer calls ``eval_epoch(val)``
    after each training epoch, which runs ``update_lambd``, ``set_lambd`` and ``update_rho``):

    - if ``e % lambd_step == 0``: :math:`\lambda_k \leftarrow \mathrm{clip}\big(\frac{1}{N}
      \sum_n \mathrm{clip}(P'(h_{nk}; \lambda_k, \rho_k), \lambda_{min}, \lambda_{max}),
      \lambda_{min}, \lambda_{max}\big)`;
    - if ``rho_step > 0``, with :math:`\bar h_k` the val mean of :math:`h_{nk}`: if
      ``e % rho_step == 0`` and an earlier epoch's :math:`\bar h` exists,
      :math:`\rho_k \leftarrow \mathrm{clip}(\gamma\rho_k, \rho_{min}, \rho_{max})` where
      :math:`\bar h_k > \tau \max(\bar h_k^{prev}, 0)` (else kept); then
      :math:`\bar h^{prev} \leftarrow \bar h` (every epoch). :math:`P'` uses the
      :math:`\lambda, \rho` from before the update.

    State (buffers, float32, sized ``K`` from the first logits seen): ``lambd`` (initially
    ``lambd_min``), ``rho`` (initially ``rho_min``), ``prev_constraint`` and ``has_prev``.

    Parameters (defaults: ``configs/lag/aug_lagrangian_class.yaml`` of the official code, except
    ``margin``; the official code has no CIFAR config): ``margin`` > 0 (10: the README's
    training commands pass ``lag.margin=10``; the yaml says 20), ``penalty`` in ``phr``, ``p2``,
    ``p3`` (``phr``), ``lambd_min`` > 0 (1e-6), ``lambd_max`` (1e6), ``lambd_step`` >= 1 (1),
    ``rho_min`` > 0 (1, the yaml's ``rho``), ``rho_max`` (10, ``AugLagrangianClass``'s signature;
    not in the yaml), ``rho_step`` >= 0 (10; 0 turns the rho update off, the official -1),
    ``gamma`` > 0 (1.2), ``tao`` >= 0 (0.9), ``normalize`` (True).
    Predictive logits: ``z``.
    Reference: Liu et al. 2023 (CVPR), by-liu/CALS ``calibrate/lagrangian/aug_lagrangian_class.py``.
    """

    lambd: torch.Tensor
    rho: torch.Tensor
    prev_constraint: torch.Tensor
    has_prev: torch.Tensor

    def __init__(
        self,
        margin: float = 10.0,
        penalty: str = "phr",
        lambd_min: float = 1e-6,
        lambd_max: float = 1e6,
        lambd_step: int = 1,
        rho_min: float = 1.0,
        rho_max: float = 10.0,
        rho_step: int = 10,
        gamma: float = 1.2,
        tao: float = 0.9,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.margin = check_param("margin", margin, low=0.0, strict=True)
        if penalty not in PENALTIES:
            raise UsageError(
                f"parameter penalty must be one of {', '.join(PENALTIES)}, got {penalty!r}"
            )
        self.penalty = penalty
        self.lambd_min = check_param("lambd_min", lambd_min, low=0.0, strict=True)
        self.lambd_max = check_param("lambd_max", lambd_max, low=self.lambd_min)
        self.lambd_step = check_int_param("lambd_step", lambd_step, low=1)
        self.rho_min = check_param("rho_min", rho_min, low=0.0, strict=True)
        self.rho_max = check_param("rho_max", rho_max, low=self.rho_min)
        self.rho_step = check_int_param("rho_step", rho_step, low=0)
        self.gamma = check_param("gamma", gamma, low=0.0, strict=True)
        self.tao = check_param("tao", tao, low=0.0)
        if not isinstance(normalize, bool):
            raise UsageError(f"parameter normalize must be True or False, got {normalize!r}")
        self.normalize = normalize
        for name in ("lambd", "rho", "prev_constraint"):
            self.register_buffer(name, torch.zeros(0))
        self.register_buffer("has_prev", torch.zeros((), dtype=torch.bool))

    def _sized(self, k: int, device: torch.device) -> None:
        """Create the per-class state for ``k`` classes on first use (the loss is built before
        the number of classes is known); refuse logits with another ``k`` later."""
        if self.lambd.numel() == k:
            return
        if self.lambd.numel() != 0:
            raise UsageError(
                f"cals keeps one multiplier per class for K={self.lambd.numel()} classes, got "
                f"logits with K={k}"
            )
        self.lambd = torch.full((k,), self.lambd_min, dtype=torch.float32, device=device)
        self.rho = torch.full((k,), self.rho_min, dtype=torch.float32, device=device)
        self.prev_constraint = torch.zeros(k, dtype=torch.float32, device=device)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        saved = state_dict.get(prefix + "lambd")
        if isinstance(saved, torch.Tensor) and saved.dim() == 1 and self.lambd.numel() == 0:
            self._sized(saved.numel(), self.lambd.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def constraints(self, logits: torch.Tensor) -> torch.Tensor:
        """:math:`h_{nk} = (\\max_j z_{nj} - z_{nk} - m)` (divided by ``m`` if ``normalize``)."""
        h = logits.max(dim=1, keepdim=True).values - logits - self.margin
        return h / self.margin if self.normalize else h

    def compute(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z = float_logits(logits)
        self._sized(z.shape[1], z.device)
        value, _ = penalty_lagrangian(
            self.constraints(z), self.lambd.to(z.dtype), self.rho.to(z.dtype), self.penalty
        )
        return F.cross_entropy(z, targets) + value.mean()

    @torch.no_grad()
    def on_epoch_end(self, epoch: int, val_logits: torch.Tensor, val_labels: torch.Tensor) -> None:
        """Re-estimate the multipliers (and, every ``rho_step`` epochs, rho) on the val split."""
        check_inputs(val_logits, val_labels)
        if val_labels.numel() == 0:
            raise UsageError("cals updates its multipliers on the val split, which is empty")
        z = val_logits.float()
        self._sized(z.shape[1], z.device)
        h = self.constraints(z)
        _, grad = penalty_lagrangian(h, self.lambd, self.rho, self.penalty)
        n = h.shape[0]
        if epoch % self.lambd_step == 0:
            mean_grad = grad.clamp(self.lambd_min, self.lambd_max).sum(dim=0) / n
            self.lambd.copy_(mean_grad.clamp(self.lambd_min, self.lambd_max))
        if self.rho_step > 0:
            current = h.sum(dim=0) / n
            if epoch % self.rho_step == 0 and bool(self.has_prev):
                grow = current > self.prev_constraint.clamp(min=0) * self.tao
                rho = torch.where(grow, self.gamma * self.rho, self.rho)
                self.rho.copy_(rho.clamp(self.rho_min, self.rho_max))
            self.prev_constraint.copy_(current)
            self.has_prev.fill_(True)

    def extra_repr(self) -> str:
        return (
            f"margin={self.margin}, penalty={self.penalty!r}, lambd_min={self.lambd_min}, "
            f"lambd_max={self.lambd_max}, lambd_step={self.lambd_step}, rho_min={self.rho_min}, "
            f"rho_max={self.rho_max}, rho_step={self.rho_step}, gamma={self.gamma}, "
            f"tao={self.tao}, normalize={self.normalize}"
        )
