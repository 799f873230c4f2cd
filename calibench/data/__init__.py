"""Datasets, OOD sets, distribution-shift suites and the device-resident input pipeline.

The shift-suite API (:mod:`calibench.data.shift`) is importable from here; it loads on first use,
so ``import calibench.data.sources`` stays free of torch.
"""

from __future__ import annotations

from typing import Any

_SHIFT_NAMES = ("CORRUPTIONS", "SEVERITIES", "ShiftCell", "ShiftSuite", "load_shift_suite")

__all__ = list(_SHIFT_NAMES)


def __getattr__(name: str) -> Any:
    if name in _SHIFT_NAMES:
        from calibench.data import shift

        return getattr(shift, name)
    raise AttributeError(f"module 'calibench.data' has no attribute {name!r}")
