"""Built-in losses. Importing this package registers each of them (see ``calibench.registry``)."""

from __future__ import annotations

from calibench.losses import (
    acls,
    adafocal,
    brier,
    cals,
    ce,
    confidence_penalty,
    focal,
    iq,
    iq_reference,
    label_smoothing,
    logitnorm,
    maxsup,
    mbls,
    mdca,
    mmce,
    poly,
)
from calibench.losses.base import CalibrationLoss, LossInputError, check_inputs

__all__ = [
    "CalibrationLoss",
    "LossInputError",
    "acls",
    "adafocal",
    "brier",
    "cals",
    "ce",
    "check_inputs",
    "confidence_penalty",
    "focal",
    "iq",
    "iq_reference",
    "label_smoothing",
    "logitnorm",
    "maxsup",
    "mbls",
    "mdca",
    "mmce",
    "poly",
]
