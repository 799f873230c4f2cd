"""Two small helpers every layer shares: the UTC timestamp and conversion to plain JSON.

Standard library only, so ``import calibench`` stays light.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["to_jsonable", "utc_now"]


def utc_now(timespec: str = "milliseconds") -> str:
    """The current UTC time as ISO 8601 with a ``Z``: ``2026-11-29T10:00:00.123Z``.

    ``timespec`` is ``"milliseconds"`` or ``"seconds"`` (``2026-11-29T10:00:00Z``).
    """
    now = _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)
    return now.isoformat(timespec=timespec) + "Z"


def to_jsonable(
    value: Any, *, fallback: Callable[[Any], Any] | None = None, where: str = "value"
) -> Any:
    """``value`` as plain JSON data: mappings to dicts with string keys, tuples to lists, numpy and
    torch scalars to Python numbers, NaN / inf / ``pd.NA`` to ``None``.

    Anything else goes through ``fallback`` (for example ``repr``); without one it raises
    :class:`TypeError` naming the place (``where``, extended with keys and indices).
    """
    if isinstance(value, Mapping):
        return {
            str(k): to_jsonable(v, fallback=fallback, where=f"{where}.{k}")
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [
            to_jsonable(v, fallback=fallback, where=f"{where}[{i}]") for i, v in enumerate(value)
        ]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:  # numpy / torch scalars
        value = value.item()
        if isinstance(value, (bool, int)):
            return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if type(value).__name__ == "NAType":  # pandas.NA, without importing pandas
        return None
    if fallback is not None:
        return fallback(value)
    raise TypeError(f"{where} has a value of type {type(value).__name__}: {value!r}")
