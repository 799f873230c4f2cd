"""The loss contract shared by every built-in and plugin loss.

``loss(logits, targets)`` takes logits ``(N, K)`` (floating) and targets ``(N,)`` (int64 class
indices) and returns the batch **mean** as a 0-dim tensor.

``loss.predictive_logits(logits)`` returns the ``(N, K)`` vector ``s`` whose softmax is the
predictive distribution that the loss's model implies, and ``loss.probabilities(logits)`` is
exactly ``softmax(s)``. Every metric, temperature scaling (``softmax(s / T)``, Guo et al. 2017)
and every OOD score is computed from ``s``; :func:`predictive_logits_of` gives ``s`` for any
loss, including a plugin that defines only ``probabilities`` (then ``s = log(probabilities)``).
Bad input raises :class:`ValueError` with a clear message, never a device-side assert.

Input checks read values back from the device (a host sync). They are on by default; the
trainer turns them off (``loss.validate_inputs = False``) because its targets were checked once
when the dataset was loaded and it detects a non-finite loss itself, at the end of each epoch.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
from torch import nn

from calibench.errors import LossInputError, UsageError
from calibench.util import to_jsonable


def check_inputs(logits: torch.Tensor, targets: torch.Tensor, *, values: bool = True) -> None:
    """Raise :class:`LossInputError` unless ``logits`` is ``(N, K)`` float and ``targets`` ``(N,)`` int64.

    With ``values=True`` also check that targets lie in ``[0, K)`` and logits are finite.
    """
    if not isinstance(logits, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise LossInputError("logits and targets must be torch tensors")
    if logits.dim() != 2:
        raise LossInputError(f"logits must have shape (N, K), got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise LossInputError(f"logits must be floating point, got {logits.dtype}")
    if logits.shape[1] < 2:
        raise LossInputError(f"logits need at least 2 classes, got K={logits.shape[1]}")
    if targets.dtype != torch.int64:
        raise LossInputError(
            f"targets must be int64 class indices, got {targets.dtype}; "
            "one-hot or soft targets are not supported"
        )
    if targets.shape != (logits.shape[0],):
        raise LossInputError(
            f"targets must have shape (N,) = ({logits.shape[0]},), got {tuple(targets.shape)}"
        )
    if not values or targets.numel() == 0:
        return
    k = logits.shape[1]
    lo, hi = torch.aminmax(targets)
    if int(lo) < 0 or int(hi) >= k:
        raise LossInputError(
            f"targets must lie in [0, {k}) for K={k} classes, got values in [{int(lo)}, {int(hi)}]"
        )
    if not bool(torch.isfinite(logits).all()):
        raise LossInputError(
            "logits contain NaN or inf; the model has diverged or the input is bad"
        )


def float_logits(logits: torch.Tensor) -> torch.Tensor:
    """``logits`` in at least float32: half and bfloat16 are upcast, float64 is kept."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def _autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except RuntimeError:  # a device type autocast does not know (meta, ...)
        enabled = False
    return torch.autocast(device_type, enabled=False) if enabled else contextlib.nullcontext()


def check_param(
    name: str, value: float, *, low: float | None = None, strict: bool = False
) -> float:
    """Validate a scalar loss parameter: a number (not a bool), finite, ``> low`` or ``>= low``."""
    if isinstance(value, bool):
        raise UsageError(f"parameter {name} must be a number, got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"parameter {name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise UsageError(f"parameter {name} must be finite, got {value}")
    if low is not None and (value <= low if strict else value < low):
        op = ">" if strict else ">="
        raise UsageError(f"parameter {name} must be {op} {low}, got {value}")
    return value


def check_int_param(name: str, value: int, *, low: int) -> int:
    """Validate an integer loss parameter (not a bool, not a float): ``value >= low``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"parameter {name} must be an integer >= {low}, got {value!r}")
    if value < low:
        raise UsageError(f"parameter {name} must be an integer >= {low}, got {value}")
    return value


def loss_state(loss: nn.Module) -> dict[str, Any]:
    """The readable form of ``loss.state_dict()``: every tensor as ``tensor.tolist()``.

    ``{}`` for a stateless loss. Non-finite floats become ``None`` so the result is plain JSON
    (it goes into the run's record and ``loss_state.json``).
    """
    state = {
        key: value.tolist() if isinstance(value, torch.Tensor) else value
        for key, value in loss.state_dict().items()
    }
    return to_jsonable(state, where="loss state")


def predictive_logits_of(loss: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """The predictive logits of any loss: ``loss.predictive_logits(z)`` when it defines them,
    else ``log(loss.probabilities(z))`` (a plugin module with only ``probabilities``), else ``z``.

    The result is at least float32 (float64 input stays float64).
    """
    fn = getattr(loss, "predictive_logits", None)
    if callable(fn):
        return float_logits(fn(logits))
    probs = getattr(loss, "probabilities", None)
    if callable(probs):
        return float_logits(probs(logits)).log()
    return float_logits(logits)


class CalibrationLoss(nn.Module):
    """Base class: validates inputs, then calls :meth:`compute` for the batch-mean loss.

    Subclasses implement ``compute(logits, targets) -> 0-dim tensor`` and may override
    :meth:`predictive_logits` (default: the logits themselves). ``probabilities`` is
    ``softmax(predictive_logits)``; a subclass that overrides only ``probabilities`` gets
    ``log(probabilities)`` as its predictive logits.
    """

    validate_inputs: bool = True

    def __init__(self) -> None:
        # An explicit signature: the registry reads a loss's parameters from it, and
        # nn.Module.__init__(*args, **kwargs) would accept (and then reject) anything.
        super().__init__()

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        check_inputs(logits, targets, values=self.validate_inputs)
        # Losses are computed in float32 or better, also inside a bf16/fp16 autocast region.
        with _autocast_off(logits.device.type):
            return self.compute(logits, targets)

    def compute(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predictive_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The vector whose softmax is the predictive distribution (default ``logits``).

        At least float32; float64 input stays float64.
        """
        if type(self).probabilities is not CalibrationLoss.probabilities:
            return float_logits(self.probabilities(logits)).log()
        return float_logits(logits)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Predictive distribution ``softmax(predictive_logits(logits))``, at least float32."""
        return torch.softmax(float_logits(self.predictive_logits(logits)), dim=-1)
