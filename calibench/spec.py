"""The run spec: the one description of a run that everything downstream keys on.

spec → run → record → leaderboard. A :class:`RunSpec` names the protocol (with its version and
content hash), the loss and its explicit parameters, the backbone, the dataset, the OOD sets, the
seed and any deviations from the protocol (CLI overrides such as ``--epochs``). Its
:meth:`RunSpec.run_id` is a short content hash of exactly those fields, so the same spec always
maps to the same results folder, and any change makes a new run.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from calibench.errors import UsageError

RUN_ID_LENGTH = 12


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, floats as Python writes them."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def format_params(params: dict[str, Any]) -> str:
    """``gamma=2,alpha=0.5`` with keys sorted, the form used in names like ``focal(gamma=2)``."""
    return ",".join(f"{k}={_format_value(v)}" for k, v in sorted(params.items()))


def _format_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    return repr(v)


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one run. Two runs with equal specs are the same run."""

    protocol: str
    protocol_version: int
    protocol_hash: str
    loss: str
    backbone: str
    dataset: str
    seed: int
    loss_params: dict[str, Any] = field(default_factory=dict)
    ood: tuple[str, ...] = ()
    deviations: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ood", tuple(self.ood))
        object.__setattr__(self, "loss_params", dict(sorted(self.loss_params.items())))
        object.__setattr__(self, "deviations", dict(sorted(self.deviations.items())))
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise UsageError(f"seed must be a non-negative integer, got {self.seed!r}")

    @property
    def loss_label(self) -> str:
        """The leaderboard row name of the loss: ``focal`` or ``focal(gamma=2)``."""
        if not self.loss_params:
            return self.loss
        return f"{self.loss}({format_params(self.loss_params)})"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ood"] = list(self.ood)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise UsageError(f"run spec has unknown field(s): {', '.join(sorted(unknown))}")
        return cls(**{k: v for k, v in d.items()})

    def run_id(self) -> str:
        """Short content hash of the spec (sha256 of its canonical JSON)."""
        digest = hashlib.sha256(canonical_json(self.to_dict()).encode()).hexdigest()
        return digest[:RUN_ID_LENGTH]


_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


def slug(text: str) -> str:
    """A filesystem-safe version of ``text`` (for folder names next to the run id)."""
    return _SLUG.sub("-", text).strip("-") or "x"
