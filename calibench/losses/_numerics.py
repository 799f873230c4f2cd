"""Numerically safe building blocks shared by several losses (float32 and float64)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: Below this argument ``log(softplus(x)) = x - exp(x)/2 + ...`` equals ``x`` to float64 precision
#: well before float32's ``softplus`` would underflow (about -104).
_LOG_SOFTPLUS_LINEAR_BELOW = -40.0

#: ``exp(-v)`` is followed exactly for ``v >= -EXP_FLOOR`` and along its tangent below: a value
#: of at most ``e**40 ~ 2.4e17`` per unit of ``v``, so values, gradients and their squares
#: (optimiser statistics) stay finite in float32.
EXP_FLOOR = 40.0


def log_softplus(x: torch.Tensor) -> torch.Tensor:
    """``log(softplus(x)) = log(log(1 + e^x))``, finite with a finite gradient for every finite x."""
    linear = x < _LOG_SOFTPLUS_LINEAR_BELOW
    safe = x.clamp_min(_LOG_SOFTPLUS_LINEAR_BELOW)
    return torch.where(linear, x, torch.log(F.softplus(safe)))


def exp_neg_floored(v: torch.Tensor) -> torch.Tensor:
    """``exp(-v)`` for ``v >= -EXP_FLOOR``; below, its tangent ``e^F (1 - F - v)`` (C^1, convex)."""
    below = v < -EXP_FLOOR
    safe = v.clamp_min(-EXP_FLOOR)
    return torch.where(below, math.exp(EXP_FLOOR) * (1.0 - EXP_FLOOR - v), torch.exp(-safe))


def one_minus_exp(log_p: torch.Tensor) -> torch.Tensor:
    """``1 - p`` from ``log p`` without cancellation when ``p`` is close to 1."""
    return -torch.expm1(log_p)


def focal_weight(one_minus_p: torch.Tensor, gamma: torch.Tensor | float) -> torch.Tensor:
    """``(1 - p)^gamma`` with a finite gradient at ``p = 1`` for every ``gamma >= 0``.

    ``(1 - p)`` is floored at the smallest normal float: for ``0 < gamma < 1`` the derivative
    ``gamma (1 - p)^(gamma - 1)`` is infinite at ``p = 1``, and ``0 * inf`` would give NaN.
    """
    tiny = torch.finfo(one_minus_p.dtype).tiny
    return one_minus_p.clamp_min(tiny) ** gamma


def target_log_probs(log_p: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``log_p[i, targets[i]]`` as a vector of length N."""
    return log_p.gather(1, targets.unsqueeze(1)).squeeze(1)
