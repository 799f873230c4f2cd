"""Helpers shared by the loss tests: seeded random batches, per-sample gather, value and gradient."""

from __future__ import annotations

from collections.abc import Callable

import torch


def random_batch(
    seed: int | torch.Generator,
    n: int,
    k: int,
    scale: float = 3.0,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``scale * N(0, 1)`` of shape ``(n, k)`` in ``dtype`` and uniform int64 targets.

    ``seed`` is a seed or a generator to draw from (to keep drawing after the batch).
    """
    g = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
    z = scale * torch.randn(n, k, generator=g, dtype=dtype)
    return z, torch.randint(0, k, (n,), generator=g)


def at(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x[i, y_i]`` for every row ``i``."""
    return x[torch.arange(len(y)), y]


def value_and_grad(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], z: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn(z, y)`` (detached) and its gradient with respect to ``z``."""
    z = z.detach().clone().requires_grad_()
    value = fn(z, y)
    (grad,) = torch.autograd.grad(value, z)
    return value.detach(), grad
