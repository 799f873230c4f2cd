"""Versioned training protocols, declared as TOML files (``calibench/protocol_files/<name>.toml``).

A protocol fixes everything about how a model is trained and evaluated except the loss, the
backbone and the seed: data split, epochs, batch size, optimizer, LR schedule, augmentation,
gradient clipping, precision, and the evaluation settings. Leaderboards are published per
protocol version, so a protocol's content may not change silently: each file records
``content_hash = "sha256:<hex>"``, the SHA-256 of the canonical JSON (``calibench.spec.canonical_json``)
of every other field after validation (so ``0`` and ``0.0``, key order, comments and whitespace
do not matter). :func:`load_protocol` recomputes it and refuses a file whose content changed
without a version bump; ``calibench protocols hash FILE [--write]`` prints it or fills it in.

The dataclasses below are the file format. Every field is a key of the file, in the file's
order; a nested section is a TOML table; a field's check (a function returning an error text or
``None``) sits in its ``metadata``, and checks across fields in the section's ``__post_init__``.
A field with a default is optional (keyword-only in Python) unless it is one of the keys that
apply only to one kind of section (``only_for``: e.g. the milestones of a ``multistep``
schedule, required there and refused elsewhere).

A few keys were added after version-1 protocols were published; they are optional, their
default (:data:`DEFAULTS`) is what every protocol meant before the key existed, and the hash
leaves a key out when it holds its default. So a file written before the key existed keeps its
content hash, and spelling the default out does not change it either.

Where protocols are found, first match wins:

1. each directory in ``$CALIBENCH_PROTOCOLS`` (``os.pathsep``-separated), for user protocols;
2. ``calibench/protocol_files/``, the shipped protocols (package data, so installed wheels have
   them too).

``load_protocol`` also accepts a path to a ``.toml`` file.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import itertools
import math
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from calibench.atomic import atomic_write_bytes
from calibench.errors import ProtocolError
from calibench.spec import canonical_json

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "DEFAULTS",
    "LOSS_REDUCTIONS",
    "OVERRIDES",
    "PRECISIONS",
    "PROTOCOLS_ENV",
    "SHIPPED_DIR",
    "AugmentSection",
    "DataSection",
    "EvalSection",
    "OptimizerSection",
    "Protocol",
    "ScheduleSection",
    "TrainSection",
    "compute_content_hash",
    "file_content_hash",
    "list_protocols",
    "load_protocol",
    "protocol_dirs",
    "write_content_hash",
]

PROTOCOLS_ENV = "CALIBENCH_PROTOCOLS"
SHIPPED_DIR = Path(__file__).resolve().parent / "protocol_files"
"""The shipped protocols: package data (``[tool.setuptools.package-data]`` in pyproject.toml)."""
PRECISIONS = ("bf16", "fp32")
"""``"bf16"``: bf16 autocast on CUDA (fp32 on CPU); ``"fp32"``: fp32 everywhere."""
OPTIMIZERS = ("sgd",)
SCHEDULES = ("multistep", "cosine")
LOSS_REDUCTIONS = ("mean", "sum")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
_PLACEHOLDER_HASH = "sha256:" + "0" * 64


# -- checks: each returns an error text, or None when the value is fine -----------------------
Check = Callable[[Any], "str | None"]


def _at_least(low: float) -> Check:
    return lambda v: None if v >= low else f"must be >= {low}"


def _greater(low: float) -> Check:
    return lambda v: None if v > low else f"must be > {low}"


def _one_of(options: tuple[str, ...]) -> Check:
    return lambda v: None if v in options else f"must be one of {', '.join(options)}"


def _unit_interval(v: float) -> str | None:
    return None if 0.0 <= v < 1.0 else "must be in [0, 1)"


def _decay_factor(v: float) -> str | None:
    return None if 0.0 < v <= 1.0 else "must be in (0, 1]"


def _increasing(v: Sequence[int]) -> str | None:
    if any(m < 1 for m in v) or any(b <= a for a, b in itertools.pairwise(v)):
        return "must be strictly increasing positive epochs"
    return None


def _registry_names(v: Sequence[str]) -> str | None:
    if any(not s.strip() for s in v) or len(set(v)) != len(v):
        return "must be distinct non-empty names"
    return None


def _name(v: str) -> str | None:
    return None if _NAME.match(v) else "must be lowercase letters, digits, '-' or '_'"


def _content_hash(v: str) -> str | None:
    return None if _HASH.match(v) else 'must look like "sha256:<64 hex digits>"'


def _nonempty(v: str) -> str | None:
    return None if v.strip() else "must not be empty"


def _key(
    check: Check | None = None, *, default: Any = dataclasses.MISSING, only_for: str | None = None
) -> Any:
    """A key of the protocol file: a dataclass field carrying its check.

    ``default``: the key is optional (a keyword-only field, so it can sit in the file's order).
    ``only_for``: the key applies only when the section's ``name`` is this value; there it is
    required, elsewhere refused, and the field holds ``default``.
    """
    return dataclasses.field(
        default=default,
        kw_only=default is not dataclasses.MISSING,
        metadata={"check": check, "only_for": only_for},
    )


# -- sections ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataSection:
    """``[data]``: default dataset, size of the seeded stratified val split, training subset."""

    dataset: str = _key(_nonempty)
    val_size: int = _key(_at_least(0))
    # 0 = the whole training split; else a class-stratified subset of this size
    train_subset: int = _key(_at_least(0))


@dataclass(frozen=True)
class OptimizerSection:
    """``[train.optimizer]``: SGD hyper-parameters (weight decay applies to every parameter)."""

    name: str = _key(_one_of(OPTIMIZERS))
    lr: float = _key(_greater(0.0))
    momentum: float = _key(_unit_interval)
    nesterov: bool = _key()
    weight_decay: float = _key(_at_least(0.0))

    def __post_init__(self) -> None:
        if self.nesterov and self.momentum == 0.0:
            raise ProtocolError("'train.optimizer.nesterov' needs momentum > 0")


@dataclass(frozen=True)
class ScheduleSection:
    """``[train.schedule]``: per-epoch LR factor, ``multistep`` or ``cosine``, with linear warmup."""

    name: str = _key(_one_of(SCHEDULES))
    warmup_epochs: int = _key(_at_least(0))
    milestones: tuple[int, ...] = _key(_increasing, default=(), only_for="multistep")
    gamma: float | None = _key(_decay_factor, default=None, only_for="multistep")

    def lr_factor(self, epoch: int, epochs: int) -> float:
        r"""Multiplier of the base LR during 0-based ``epoch`` of ``epochs``.

        Warmup (``w = warmup_epochs``): :math:`(e + 1) / w` for :math:`e < w`. Then
        ``multistep``: :math:`\gamma^{|\{m \in milestones : m \le e\}|}` (milestones are absolute
        epochs, as in ``torch.optim.lr_scheduler.MultiStepLR``); ``cosine``:
        :math:`\tfrac12 (1 + \cos(\pi (e - w) / (E - w)))`, the closed form of
        ``CosineAnnealingLR`` with ``eta_min = 0`` (Loshchilov & Hutter 2017).
        """
        w = self.warmup_epochs
        if epoch < w:
            return (epoch + 1) / w
        if self.name == "multistep":
            assert self.gamma is not None
            return self.gamma ** sum(1 for m in self.milestones if m <= epoch)
        span = max(epochs - w, 1)
        return 0.5 * (1.0 + math.cos(math.pi * (epoch - w) / span))


@dataclass(frozen=True)
class AugmentSection:
    """``[train.augment]``: random crop of the zero-padded image, horizontal flip."""

    crop_padding: int = _key(_at_least(0))
    flip: bool = _key()


@dataclass(frozen=True)
class TrainSection:
    """``[train]``: epochs, batch size, precision, gradient clipping, loss reduction, sub-sections.

    ``precision`` is one of :data:`PRECISIONS`. ``grad_clip`` is the max global L2 norm of the
    gradient, 0 = off. ``loss_reduction`` is what the optimizer minimises per batch: ``"mean"``
    the loss's batch mean, ``"sum"`` the batch mean times the batch size (the per-sample sum for
    losses that are a mean of per-sample terms; Mukhoti et al.'s training code). Every training
    batch is full (the last partial batch is dropped), so ``"sum"`` scales the gradient by
    exactly the batch size before clipping. Optional in files, default ``"mean"``.
    """

    epochs: int = _key(_at_least(1))
    batch_size: int = _key(_at_least(1))
    precision: str = _key(_one_of(PRECISIONS))
    grad_clip: float = _key(_at_least(0.0))
    loss_reduction: str = _key(_one_of(LOSS_REDUCTIONS), default="mean")
    optimizer: OptimizerSection
    schedule: ScheduleSection
    augment: AugmentSection

    def __post_init__(self) -> None:
        if self.schedule.warmup_epochs >= self.epochs:
            raise ProtocolError(
                f"'train.schedule.warmup_epochs' ({self.schedule.warmup_epochs}) "
                f"must be smaller than 'train.epochs' ({self.epochs})"
            )


@dataclass(frozen=True)
class EvalSection:
    """``[eval]``: evaluation batch size, ECE bins, OOD sets, temperature scaling, size cap, and
    the distribution-shift suites with their per-cell image cap (optional, default: none).

    ``shift`` lists shift suites (CIFAR-10-C style: corruptions x severities of the test split,
    :mod:`calibench.data.shift`); a run evaluates the suite named ``<its dataset>-c`` if listed
    (a CIFAR-100 run of a protocol listing only ``cifar10-c`` evaluates none).
    ``shift_max_images`` caps the images per (corruption, severity) cell, 0 = every image.
    """

    batch_size: int = _key(_at_least(1))
    ece_bins: int = _key(_at_least(1))
    ood: tuple[str, ...] = _key(_registry_names)
    temperature_scaling: bool = _key()
    # 0 = every image; else evaluate at most this many per test / OOD set
    max_images: int = _key(_at_least(0))
    # shift suites (registry kind "shift", e.g. "cifar10-c"); a run evaluates the one of its
    # dataset, "<dataset>-c"; none listed = no shift evaluation
    shift: tuple[str, ...] = _key(_registry_names, default=())
    # 0 = the full grid; else at most this many images per (corruption, severity): the same
    # class-stratified subset of the test split in every cell
    shift_max_images: int = _key(_at_least(0), default=0)

    def __post_init__(self) -> None:
        if self.shift_max_images and not self.shift:
            raise ProtocolError("'eval.shift_max_images' applies only with 'eval.shift' suites")


# -- the protocol -----------------------------------------------------------------------------
_OVERRIDE_PLACES: dict[str, tuple[str, ...]] = {
    "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"),
    "train_subset": ("data", "train_subset"),
    "lr": ("train", "optimizer", "lr"),
    "precision": ("train", "precision"),
    "loss_reduction": ("train", "loss_reduction"),
    "eval_max_images": ("eval", "max_images"),
}
"""What a run may override (the CLI's ``--epochs`` etc.): override name -> place in the file."""
OVERRIDES = tuple(_OVERRIDE_PLACES)


@dataclass(frozen=True)
class Protocol:
    """One validated protocol. Build it with :func:`load_protocol`."""

    name: str = _key(_name)
    version: int = _key(_at_least(1))
    content_hash: str = _key(_content_hash)
    description: str = _key(_nonempty)
    reference: str = _key(_nonempty)
    data: DataSection
    train: TrainSection
    eval: EvalSection
    path: Path | None = dataclasses.field(
        default=None, compare=False, kw_only=True, metadata={"in_file": False}
    )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, path: Path | None = None) -> Protocol:
        """Validate ``d`` (a parsed TOML file) and check its content hash."""
        where = f"protocol file {path}" if path is not None else "protocol"
        protocol = _parse_protocol(d, where, path)
        actual = _hash(protocol)
        if protocol.content_hash != actual:
            raise ProtocolError(
                f"{where}: its content changed but content_hash was not updated "
                f"(recorded {protocol.content_hash}, content gives {actual}). A protocol's "
                f"content may only change with a new version: bump the version (now "
                f"{protocol.version}) and update content_hash (`calibench protocols hash "
                f"--write {path or 'FILE'}` fills it in; with the current version it is "
                f'"{actual}")'
            )
        return protocol

    def to_dict(self) -> dict[str, Any]:
        """The protocol as plain data, in the file's layout (tuples as lists)."""
        return _plain(self)

    @property
    def label(self) -> str:
        """``standard@v2``: how records and leaderboards name a protocol version."""
        return f"{self.name}@v{self.version}"

    def with_overrides(self, **overrides: Any) -> tuple[Protocol, dict[str, Any]]:
        """This protocol with run overrides applied, and the deviations they make.

        Override names are :data:`OVERRIDES` (``epochs=``, ``lr=``, ...). ``None`` means "keep the protocol's value"; a value equal to the protocol's is not a
        deviation. The returned protocol keeps its name, version and hash (they identify the
        base protocol); the deviations dict (override name -> new value) belongs in the
        ``RunSpec``, and ``protocol.with_overrides(**spec.deviations)`` rebuilds the effective
        protocol. Milestones of a ``multistep`` schedule stay at their absolute epochs.
        """
        unknown = [key for key in overrides if key not in _OVERRIDE_PLACES]
        if unknown:
            raise ProtocolError(
                f"unknown protocol override(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(OVERRIDES)}"
            )
        given = {key: value for key, value in overrides.items() if value is not None}
        original = self.to_dict()
        d = self.to_dict()
        for key, value in given.items():
            *parents, leaf = _OVERRIDE_PLACES[key]
            _get(d, parents)[leaf] = value
        changed = _parse_protocol(d, f"override of protocol {self.name}", self.path)
        new = changed.to_dict()
        deviations = {
            key: _get(new, _OVERRIDE_PLACES[key])
            for key in given
            if _get(new, _OVERRIDE_PLACES[key]) != _get(original, _OVERRIDE_PLACES[key])
        }
        if not deviations:
            return self, {}
        return changed, dict(sorted(deviations.items()))


# -- reading a file's tables into the dataclasses ---------------------------------------------
_Section = TypeVar("_Section")


def _keys(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("in_file", True)]


@functools.cache
def _types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _parse_protocol(raw: Any, where: str, path: Path | None) -> Protocol:
    if not isinstance(raw, Mapping):
        raise ProtocolError(f"{where}: a protocol must be a TOML table, got {type(raw).__name__}")
    protocol = _parse(Protocol, raw, where, "")
    return dataclasses.replace(protocol, path=path) if path is not None else protocol


def _parse(cls: type[_Section], raw: Mapping[str, Any], where: str, prefix: str) -> _Section:
    """``raw`` (one TOML table) validated into ``cls``; ``prefix`` is the table's dotted place."""
    section = f"[{prefix.rstrip('.')}]" if prefix else "top level"
    expected = {f.name: f for f in _keys(cls)}
    types = _types(cls)
    conditional = [f for f in expected.values() if f.metadata.get("only_for") is not None]
    if conditional and "name" in raw:
        kind = _value(expected["name"], types["name"], raw["name"], where, prefix)
        for f in conditional:
            if kind != f.metadata.get("only_for"):
                del expected[f.name]
                if f.name in raw:
                    raise ProtocolError(
                        f"{where}: {section} key '{f.name}' only applies to "
                        f"{prefix.rstrip('.').rsplit('.', 1)[-1]} '{f.metadata['only_for']}', "
                        f"not '{kind}'; remove it"
                    )
    unknown = [k for k in raw if k not in expected]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(expected), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ProtocolError(
            f"{where}: unknown key '{prefix}{key}' in {section}{hint}; "
            f"allowed keys: {', '.join(expected)}"
        )
    missing = [
        name
        for name, f in expected.items()
        if name not in raw and (f.default is dataclasses.MISSING or f.metadata.get("only_for"))
    ]
    if missing:
        raise ProtocolError(
            f"{where}: {section} is missing key(s) {', '.join(prefix + k for k in missing)}; "
            "every field must be given explicitly"
        )
    values = {
        name: _value(f, types[name], raw[name], where, prefix)
        for name, f in expected.items()
        if name in raw
    }
    try:
        return cls(**values)
    except ProtocolError as exc:  # a check across fields, in __post_init__
        raise ProtocolError(f"{where}: {exc}") from None


def _value(f: dataclasses.Field[Any], t: Any, value: Any, where: str, prefix: str) -> Any:
    """``value`` of key ``f`` (annotated type ``t``) converted and checked."""
    key = prefix + f.name
    if dataclasses.is_dataclass(t):
        if not isinstance(value, Mapping):
            raise ProtocolError(
                f"{where}: '{key}' must be a table [{key}], got {type(value).__name__}"
            )
        return _parse(t, value, where, key + ".")
    try:
        converted = _coerce(value, t)
    except TypeError:
        raise ProtocolError(
            f"{where}: '{key}' must be {_type_name(t)}, got {value!r} ({type(value).__name__})"
        ) from None
    check = f.metadata.get("check")
    problem = check(converted) if check is not None else None
    if problem:
        raise ProtocolError(f"{where}: '{key}' {problem}, got {converted!r}")
    return tuple(converted) if isinstance(converted, list) else converted


def _scalar(t: Any) -> Any:
    """``float`` for ``float | None`` (``None`` only stands for a key that does not apply)."""
    if isinstance(t, types.UnionType):
        (t,) = (a for a in t.__args__ if a is not type(None))
    return t


def _type_name(t: Any) -> str:
    t = _scalar(t)
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if t in names:
        return names[t]
    return "a list of integers" if t.__args__[0] is int else "a list of strings"


def _coerce(value: Any, t: Any) -> Any:
    """``value`` as type ``t`` (an int is a number; a sequence stays a list), or TypeError."""
    t = _scalar(t)
    if t is bool:
        if isinstance(value, bool):
            return value
    elif t is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif t is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif t is str:
        if isinstance(value, str):
            return value
    elif isinstance(value, (list, tuple)):  # tuple[X, ...]
        return [_coerce(v, t.__args__[0]) for v in value]
    raise TypeError


def _plain(section: Any) -> dict[str, Any]:
    """A section as the file's plain data: keys that do not apply left out, tuples as lists."""
    out: dict[str, Any] = {}
    for f in _keys(type(section)):
        only_for = f.metadata.get("only_for")
        if only_for is not None and section.name != only_for:
            continue
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            value = _plain(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def _optional_keys(cls: type, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in _keys(cls):
        t = _types(cls)[f.name]
        if dataclasses.is_dataclass(t):
            out.update(_optional_keys(t, f"{prefix}{f.name}."))
        elif f.default is not dataclasses.MISSING and f.metadata.get("only_for") is None:
            out[prefix + f.name] = f.default
    return out


DEFAULTS: dict[str, Any] = _optional_keys(Protocol)
"""Optional keys (dotted path -> default), added after v1 protocols were published. A file may
omit them; the content hash omits them when they hold their default (see the module docstring)."""


def _get(d: dict[str, Any], place: Sequence[str]) -> Any:
    for p in place:
        d = d[p]
    return d


# -- the content hash -------------------------------------------------------------------------
def _hash(protocol: Protocol) -> str:
    content = protocol.to_dict()
    del content["content_hash"]
    for dotted, default in DEFAULTS.items():
        *parents, leaf = dotted.split(".")
        table = _get(content, parents)
        if table[leaf] == (list(default) if isinstance(default, tuple) else default):
            del table[leaf]
    return "sha256:" + hashlib.sha256(canonical_json(content).encode()).hexdigest()


def compute_content_hash(content: Mapping[str, Any]) -> str:
    """``"sha256:<hex>"`` of the canonical JSON of every field except ``content_hash``.

    The content is validated and normalised first (numbers where floats are expected become
    floats), so the hash depends on what the protocol means, not on how the file spells it.
    Optional keys holding their default (:data:`DEFAULTS`) are left out, so files written
    before such a key existed keep their hash. A ``content_hash`` key, if present, is ignored
    (it may be a placeholder or missing).
    """
    return _content_hash_of(content, "protocol")


def _content_hash_of(content: Mapping[str, Any], where: str) -> str:
    if not isinstance(content, Mapping):
        raise ProtocolError(
            f"{where}: a protocol must be a TOML table, got {type(content).__name__}"
        )
    return _hash(_parse_protocol({**content, "content_hash": _PLACEHOLDER_HASH}, where, None))


def file_content_hash(path: str | os.PathLike[str]) -> tuple[str | None, str]:
    """``(recorded, actual)`` for the protocol file ``path``: the ``content_hash`` it records
    (``None`` if none) and the hash of its content (validated; the version is not checked)."""
    path = Path(path)
    return _recorded_and_actual(_load_toml(path), path)


def _recorded_and_actual(raw: dict[str, Any], path: Path) -> tuple[str | None, str]:
    recorded = raw.get("content_hash")
    actual = _content_hash_of(raw, f"protocol file {path}")
    return (str(recorded) if recorded is not None else None), actual


_TABLE_HEADER = re.compile(r"^[ \t]*\[", re.M)
_HASH_LINE = re.compile(r"^([ \t]*content_hash[ \t]*=[ \t]*)(\"[^\"\n]*\"|'[^'\n]*')", re.M)
_VERSION_LINE = re.compile(r"^[ \t]*version[ \t]*=.*$", re.M)


def write_content_hash(path: str | os.PathLike[str]) -> tuple[str | None, str]:
    """Fill in or replace the ``content_hash`` of the protocol file ``path`` (atomically).

    Returns ``(recorded, actual)``: the hash the file recorded (``None`` if it had none) and
    the hash of its content, now in the file. Only the value of the top-level
    ``content_hash = "..."`` line changes (a missing line is added after ``version``); comments
    and layout stay. The file is rewritten only when the hash changes.
    """
    path = Path(path)
    raw = _load_toml(path)
    recorded, actual = _recorded_and_actual(raw, path)
    if recorded == actual:
        return recorded, actual
    text = path.read_text(encoding="utf-8")
    header = _TABLE_HEADER.search(text)
    top_end = header.start() if header else len(text)
    line = _HASH_LINE.search(text, 0, top_end)
    if line is not None:
        new = text[: line.start(2)] + f'"{actual}"' + text[line.end(2) :]
    else:
        version = _VERSION_LINE.search(text, 0, top_end)
        at = version.end() + 1 if version is not None else top_end
        new = text[:at] + f'content_hash = "{actual}"\n' + text[at:]
    try:
        reread = tomllib.loads(new)
    except tomllib.TOMLDecodeError:
        reread = {}
    placed = reread.pop("content_hash", None) == actual
    if not placed or reread != {k: v for k, v in raw.items() if k != "content_hash"}:
        raise ProtocolError(
            f"protocol file {path}: could not place content_hash in it; write "
            f'content_hash = "{actual}" at its top level (before the first [table])'
        )
    atomic_write_bytes(path, new.encode("utf-8"))
    return recorded, actual


# -- finding and loading ----------------------------------------------------------------------
def protocol_dirs() -> list[Path]:
    """The directories searched for ``<name>.toml``, in order (see the module docstring)."""
    dirs = [Path(p) for p in os.environ.get(PROTOCOLS_ENV, "").split(os.pathsep) if p.strip()]
    dirs.append(SHIPPED_DIR)
    seen: set[Path] = set()
    unique = []
    for d in dirs:
        key = d.resolve() if d.exists() else d
        if d.is_dir() and key not in seen:
            seen.add(key)
            unique.append(d)
    return unique


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ProtocolError(f"cannot read protocol file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolError(f"protocol file {path} is not valid TOML: {exc}") from None


def _find(name: str) -> Path | None:
    for d in protocol_dirs():
        candidate = d / f"{name}.toml"
        if candidate.is_file():
            return candidate
    return None


def load_protocol(name_or_path: str | os.PathLike[str]) -> Protocol:
    """The protocol named ``name_or_path`` (searched in :func:`protocol_dirs`) or in that file.

    Raises :class:`~calibench.errors.ProtocolError` for an unknown name, an unreadable or
    malformed file (unknown key, wrong type, bad value), a ``name`` field that differs from the
    file name, or content that changed without a version bump.
    """
    text = os.fspath(name_or_path)
    looks_like_path = text.endswith(".toml") or os.sep in text or "/" in text
    if looks_like_path:
        path = Path(text).expanduser()
        if not path.is_file():
            raise ProtocolError(f"protocol file {path} does not exist")
        return Protocol.from_dict(_load_toml(path), path=path)
    if not _NAME.match(text):
        raise ProtocolError(f"invalid protocol name {text!r}: give a protocol name or a .toml path")
    path = _find(text)
    if path is None:
        known = sorted({p.stem for d in protocol_dirs() for p in d.glob("*.toml")})
        close = difflib.get_close_matches(text, known, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ProtocolError(
            f"unknown protocol '{text}'.{hint} Known protocols: {', '.join(known) or 'none'} "
            f"(searched {', '.join(str(d) for d in protocol_dirs())}; add directories with "
            f"${PROTOCOLS_ENV})"
        )
    protocol = Protocol.from_dict(_load_toml(path), path=path)
    if protocol.name != path.stem:
        raise ProtocolError(
            f"protocol file {path} declares name '{protocol.name}'; "
            f"the name must match the file name '{path.stem}'"
        )
    return protocol


def make_findable(protocol: Protocol) -> None:
    """Let this process and the processes it starts load ``protocol`` by its name.

    A run spec names its protocol, and every run (in a worker process, on Ray or SLURM too)
    loads it by that name. For a protocol read from a ``.toml`` file outside
    :func:`protocol_dirs`, this prepends the file's folder to ``$CALIBENCH_PROTOCOLS`` in
    ``os.environ`` (inherited by child processes). Raises
    :class:`~calibench.errors.ProtocolError` if the file is not named after the protocol.
    """
    path = protocol.path
    if path is None:
        return
    if path.stem != protocol.name:
        raise ProtocolError(
            f"protocol file {path} declares name '{protocol.name}'; runs look their protocol "
            f"up by name, so name the file '{protocol.name}.toml'"
        )
    found = _find(protocol.name)
    if found is not None and found.resolve() == path.resolve():
        return
    dirs = [str(path.parent.resolve()), os.environ.get(PROTOCOLS_ENV, "")]
    os.environ[PROTOCOLS_ENV] = os.pathsep.join(d for d in dirs if d)


def list_protocols() -> list[Protocol]:
    """Every protocol found in :func:`protocol_dirs`, sorted by name (first directory wins)."""
    found: dict[str, Path] = {}
    for d in protocol_dirs():
        for path in sorted(d.glob("*.toml")):
            found.setdefault(path.stem, path)
    return [load_protocol(name) for name in sorted(found)]
