"""Built-in losses. Importing this package registers each of them (see ``calibench.registry``)."""

from __future__ import annotations

from calibench.losses import ce
from calibench.losses.base import CalibrationLoss, LossInputError, check_inputs

__all__ = ["CalibrationLoss", "LossInputError", "ce", "check_inputs"]
