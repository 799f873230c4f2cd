"""Versioned training protocols, declared as TOML files (``registry/protocols/<name>.toml``).

A protocol fixes everything about how a model is trained and evaluated except the loss, the
backbone and the seed: data split, epochs, batch size, optimizer, LR schedule, augmentation,
gradient clipping, precision, and the evaluation settings. Leaderboards are published per
protocol version, so a protocol's content may not change silently: each file records
``content_hash = "sha256:<hex>"``, the SHA-256 of the canonical JSON (``calibench.spec.canonical_json``)
of every other field after validation (so ``0`` and ``0.0``, key order, comments and whitespace
do not matter). :func:`load_protocol` recomputes it and refuses a file whose content changed
without a version bump.

A few keys were added after version-1 protocols were published; they are optional, their
default (:data:`DEFAULTS`) is what every protocol meant before the key existed, and the hash
leaves a key out when it holds its default. So a file written before the key existed keeps its
content hash, and spelling the default out does not change it either.

Where protocols are found, first match wins:

1. each directory in ``$CALIBENCH_PROTOCOLS`` (``os.pathsep``-separated), for user protocols;
2. ``calibench/_protocols/`` inside the installed package. In the repository this is a symlink to
   ``registry/protocols/`` (the one canonical copy), and setuptools copies the files it points at
   into wheels and sdists as package data, so a non-editable install finds them too;
3. ``<repo>/registry/protocols`` next to the package, for checkouts where the symlink is missing
   (for instance git on Windows without symlink support).

``load_protocol`` also accepts a path to a ``.toml`` file.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from calibench.errors import ProtocolError
from calibench.spec import canonical_json

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "DEFAULTS",
    "LOSS_REDUCTIONS",
    "PROTOCOLS_ENV",
    "AugmentSection",
    "DataSection",
    "EvalSection",
    "OptimizerSection",
    "Protocol",
    "ScheduleSection",
    "TrainSection",
    "compute_content_hash",
    "list_protocols",
    "load_protocol",
    "protocol_dirs",
]

PROTOCOLS_ENV = "CALIBENCH_PROTOCOLS"
PRECISIONS = ("bf16", "fp32")
OPTIMIZERS = ("sgd",)
SCHEDULES = ("multistep", "cosine")
LOSS_REDUCTIONS = ("mean", "sum")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")


# -- sections ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataSection:
    """``[data]``: default dataset, size of the seeded stratified val split, training subset."""

    dataset: str
    val_size: int
    train_subset: int  # 0 = the whole training split; else a class-stratified subset of this size


@dataclass(frozen=True)
class OptimizerSection:
    """``[train.optimizer]``: SGD hyper-parameters (weight decay applies to every parameter)."""

    name: str
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float


@dataclass(frozen=True)
class ScheduleSection:
    """``[train.schedule]``: per-epoch LR factor, ``multistep`` or ``cosine``, with linear warmup."""

    name: str
    warmup_epochs: int
    milestones: tuple[int, ...] = ()
    gamma: float | None = None

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

    crop_padding: int
    flip: bool


@dataclass(frozen=True)
class TrainSection:
    """``[train]``: epochs, batch size, precision, gradient clipping, loss reduction, sub-sections.

    ``loss_reduction`` is what the optimizer minimises per batch: ``"mean"`` the loss's batch
    mean, ``"sum"`` the batch mean times the batch size (the per-sample sum for losses that are
    a mean of per-sample terms; Mukhoti et al.'s training code). Every training batch is full
    (the last partial batch is dropped), so ``"sum"`` scales the gradient by exactly the batch
    size before clipping. Optional in files, default ``"mean"``.
    """

    epochs: int
    batch_size: int
    precision: str  # "bf16": bf16 autocast on CUDA (fp32 on CPU); "fp32": fp32 everywhere
    grad_clip: float  # max global L2 norm of the gradient; 0 = off
    optimizer: OptimizerSection
    schedule: ScheduleSection
    augment: AugmentSection
    loss_reduction: str = "mean"


@dataclass(frozen=True)
class EvalSection:
    """``[eval]``: evaluation batch size, ECE bins, OOD sets, temperature scaling, size cap."""

    batch_size: int
    ece_bins: int
    ood: tuple[str, ...]
    temperature_scaling: bool
    max_images: int  # 0 = every image; else evaluate at most this many per test / OOD set


# -- schema -----------------------------------------------------------------------------------
# A field is (python type, check returning an error text or None). Sections are nested dicts.
Check = Callable[[Any], "str | None"]


def _at_least(low: float) -> Check:
    return lambda v: None if v >= low else f"must be >= {low}"


def _greater(low: float) -> Check:
    return lambda v: None if v > low else f"must be > {low}"


def _one_of(options: tuple[str, ...]) -> Check:
    return lambda v: None if v in options else f"must be one of {', '.join(options)}"


def _unit_interval(v: float) -> str | None:
    return None if 0.0 <= v < 1.0 else "must be in [0, 1)"


def _increasing(v: list[int]) -> str | None:
    if any(m < 1 for m in v) or any(b <= a for a, b in itertools.pairwise(v)):
        return "must be strictly increasing positive epochs"
    return None


def _registry_names(v: list[str]) -> str | None:
    if any(not s.strip() for s in v) or len(set(v)) != len(v):
        return "must be distinct non-empty names"
    return None


def _name(v: str) -> str | None:
    return None if _NAME.match(v) else "must be lowercase letters, digits, '-' or '_'"


def _content_hash(v: str) -> str | None:
    return None if _HASH.match(v) else 'must look like "sha256:<64 hex digits>"'


def _nonempty(v: str) -> str | None:
    return None if v.strip() else "must not be empty"


SCHEMA: dict[str, Any] = {
    "name": (str, _name),
    "version": (int, _at_least(1)),
    "content_hash": (str, _content_hash),
    "description": (str, _nonempty),
    "reference": (str, _nonempty),
    "data": {
        "dataset": (str, _nonempty),
        "val_size": (int, _at_least(0)),
        "train_subset": (int, _at_least(0)),
    },
    "train": {
        "epochs": (int, _at_least(1)),
        "batch_size": (int, _at_least(1)),
        "precision": (str, _one_of(PRECISIONS)),
        "grad_clip": (float, _at_least(0.0)),
        "loss_reduction": (str, _one_of(LOSS_REDUCTIONS)),
        "optimizer": {
            "name": (str, _one_of(OPTIMIZERS)),
            "lr": (float, _greater(0.0)),
            "momentum": (float, _unit_interval),
            "nesterov": (bool, None),
            "weight_decay": (float, _at_least(0.0)),
        },
        "schedule": {
            "name": (str, _one_of(SCHEDULES)),
            "warmup_epochs": (int, _at_least(0)),
            "milestones": (list[int], _increasing),
            "gamma": (float, lambda v: None if 0.0 < v <= 1.0 else "must be in (0, 1]"),
        },
        "augment": {
            "crop_padding": (int, _at_least(0)),
            "flip": (bool, None),
        },
    },
    "eval": {
        "batch_size": (int, _at_least(1)),
        "ece_bins": (int, _at_least(1)),
        "ood": (list[str], _registry_names),
        "temperature_scaling": (bool, None),
        "max_images": (int, _at_least(0)),
    },
}
# Keys present only for some values of a sibling: schedule "multistep" needs these, "cosine" forbids them.
_MULTISTEP_ONLY = ("milestones", "gamma")
DEFAULTS: dict[str, Any] = {"train.loss_reduction": "mean"}
"""Optional keys (dotted path -> default), added after v1 protocols were published. A file may
omit them; the content hash omits them when they hold their default (see the module docstring)."""


def _type_name(t: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        t, "a list of integers" if t == list[int] else "a list of strings"
    )


def _coerce(value: Any, t: Any) -> Any:
    """``value`` as type ``t`` (ints are accepted where numbers are), or raise TypeError."""
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
    elif isinstance(value, list):
        (item,) = t.__args__
        return [_coerce(v, item) for v in value]
    raise TypeError


def _normalize(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Validate ``raw`` against :data:`SCHEMA`; return it with canonical types (floats as float)."""
    if not isinstance(raw, Mapping):
        raise ProtocolError(f"{where}: a protocol must be a TOML table, got {type(raw).__name__}")
    return _normalize_table(raw, SCHEMA, where, "")


def _normalize_table(
    raw: Mapping[str, Any], schema: dict[str, Any], where: str, prefix: str
) -> dict[str, Any]:
    section = f"[{prefix.rstrip('.')}]" if prefix else "top level"
    expected = dict(schema)
    if prefix == "train.schedule." and raw.get("name") != "multistep":
        if raw.get("name") not in SCHEDULES:
            raise ProtocolError(
                f"{where}: 'train.schedule.name' must be one of {', '.join(SCHEDULES)}, "
                f"got {raw.get('name')!r}"
            )
        for key in _MULTISTEP_ONLY:
            expected.pop(key)
            if key in raw:
                raise ProtocolError(
                    f"{where}: {section} key '{key}' only applies to schedule 'multistep', "
                    f"not '{raw.get('name')}'; remove it"
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
    missing = [k for k in expected if k not in raw and prefix + k not in DEFAULTS]
    if missing:
        raise ProtocolError(
            f"{where}: {section} is missing key(s) {', '.join(prefix + k for k in missing)}; "
            "every field must be given explicitly"
        )
    out: dict[str, Any] = {}
    for key, spec in expected.items():
        value = raw[key] if key in raw else DEFAULTS[prefix + key]
        if isinstance(spec, dict):
            if not isinstance(value, Mapping):
                raise ProtocolError(
                    f"{where}: '{prefix}{key}' must be a table [{prefix}{key}], "
                    f"got {type(value).__name__}"
                )
            out[key] = _normalize_table(value, spec, where, f"{prefix}{key}.")
            continue
        t, check = spec
        try:
            value = _coerce(value, t)
        except TypeError:
            raise ProtocolError(
                f"{where}: '{prefix}{key}' must be {_type_name(t)}, got {value!r} "
                f"({type(value).__name__})"
            ) from None
        problem = check(value) if check is not None else None
        if problem:
            raise ProtocolError(f"{where}: '{prefix}{key}' {problem}, got {value!r}")
        out[key] = value
    return out


def _check_consistency(d: dict[str, Any], where: str) -> None:
    train = d["train"]
    if train["optimizer"]["nesterov"] and train["optimizer"]["momentum"] == 0.0:
        raise ProtocolError(f"{where}: 'train.optimizer.nesterov' needs momentum > 0")
    if train["schedule"]["warmup_epochs"] >= train["epochs"]:
        raise ProtocolError(
            f"{where}: 'train.schedule.warmup_epochs' ({train['schedule']['warmup_epochs']}) "
            f"must be smaller than 'train.epochs' ({train['epochs']})"
        )


def compute_content_hash(content: Mapping[str, Any]) -> str:
    """``"sha256:<hex>"`` of the canonical JSON of every field except ``content_hash``.

    The content is validated and normalised first (numbers where floats are expected become
    floats), so the hash depends on what the protocol means, not on how the file spells it.
    Optional keys holding their default (:data:`DEFAULTS`) are left out, so files written
    before such a key existed keep their hash. A ``content_hash`` key, if present, is ignored
    (it may be a placeholder).
    """
    d = dict(content)
    d["content_hash"] = "sha256:" + "0" * 64
    normalized = _normalize(d, "protocol")
    del normalized["content_hash"]
    for dotted, default in DEFAULTS.items():
        *parents, leaf = dotted.split(".")
        table = _get(normalized, tuple(parents))
        if table[leaf] == default:
            del table[leaf]
    return "sha256:" + hashlib.sha256(canonical_json(normalized).encode()).hexdigest()


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
OVERRIDES = tuple(_OVERRIDE_PLACES)


@dataclass(frozen=True)
class Protocol:
    """One validated protocol. Build it with :func:`load_protocol`."""

    name: str
    version: int
    content_hash: str
    description: str
    reference: str
    data: DataSection
    train: TrainSection
    eval: EvalSection
    path: Path | None = dataclasses.field(default=None, compare=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, path: Path | None = None) -> Protocol:
        """Validate ``d`` (a parsed TOML file) and check its content hash."""
        where = f"protocol file {path}" if path is not None else "protocol"
        n = _normalize(d, where)
        _check_consistency(n, where)
        actual = compute_content_hash(n)
        if n["content_hash"] != actual:
            raise ProtocolError(
                f"{where}: its content changed but content_hash was not updated "
                f"(recorded {n['content_hash']}, content gives {actual}). A protocol's content "
                f"may only change with a new version: bump the version (now {n['version']}) and "
                f"update content_hash (then recompute with "
                f"calibench.protocols.compute_content_hash; with the current version it is "
                f'"{actual}")'
            )
        return cls._build(n, path)

    @classmethod
    def _build(cls, n: dict[str, Any], path: Path | None) -> Protocol:
        t = n["train"]
        return cls(
            name=n["name"],
            version=n["version"],
            content_hash=n["content_hash"],
            description=n["description"],
            reference=n["reference"],
            data=DataSection(**n["data"]),
            train=TrainSection(
                epochs=t["epochs"],
                batch_size=t["batch_size"],
                precision=t["precision"],
                grad_clip=t["grad_clip"],
                optimizer=OptimizerSection(**t["optimizer"]),
                schedule=ScheduleSection(
                    **{**t["schedule"], "milestones": tuple(t["schedule"].get("milestones", ()))}
                ),
                augment=AugmentSection(**t["augment"]),
                loss_reduction=t["loss_reduction"],
            ),
            eval=EvalSection(**{**n["eval"], "ood": tuple(n["eval"]["ood"])}),
            path=path,
        )

    def to_dict(self) -> dict[str, Any]:
        """The protocol as plain data, in the file's layout (tuples as lists)."""
        d = dataclasses.asdict(self)
        del d["path"]
        schedule = d["train"]["schedule"]
        if schedule["name"] != "multistep":
            for key in _MULTISTEP_ONLY:
                del schedule[key]
        return _lists(d)

    @property
    def label(self) -> str:
        """``standard@v2``: how records and leaderboards name a protocol version."""
        return f"{self.name}@v{self.version}"

    def with_overrides(
        self,
        *,
        epochs: int | None = None,
        batch_size: int | None = None,
        train_subset: int | None = None,
        lr: float | None = None,
        precision: str | None = None,
        loss_reduction: str | None = None,
        eval_max_images: int | None = None,
    ) -> tuple[Protocol, dict[str, Any]]:
        """This protocol with CLI overrides applied, and the deviations they make.

        ``None`` means "keep the protocol's value"; a value equal to the protocol's is not a
        deviation. The returned protocol keeps its name, version and hash (they identify the
        base protocol); the deviations dict (override name -> new value) belongs in the
        ``RunSpec``, and ``protocol.with_overrides(**spec.deviations)`` rebuilds the effective
        protocol. Milestones of a ``multistep`` schedule stay at their absolute epochs.
        """
        given = {
            "epochs": epochs,
            "batch_size": batch_size,
            "train_subset": train_subset,
            "lr": lr,
            "precision": precision,
            "loss_reduction": loss_reduction,
            "eval_max_images": eval_max_images,
        }
        original = self.to_dict()
        d = self.to_dict()
        for key, value in given.items():
            if value is not None:
                *parents, leaf = _OVERRIDE_PLACES[key]
                _get(d, tuple(parents))[leaf] = value
        where = f"override of protocol {self.name}"
        n = _normalize(d, where)
        _check_consistency(n, where)
        deviations = {
            key: _get(n, _OVERRIDE_PLACES[key])
            for key, value in given.items()
            if value is not None
            and _get(n, _OVERRIDE_PLACES[key]) != _get(original, _OVERRIDE_PLACES[key])
        }
        if not deviations:
            return self, {}
        return Protocol._build(n, self.path), dict(sorted(deviations.items()))


def _get(d: dict[str, Any], place: tuple[str, ...]) -> Any:
    for p in place:
        d = d[p]
    return d


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


# -- finding and loading ----------------------------------------------------------------------
def protocol_dirs() -> list[Path]:
    """The directories searched for ``<name>.toml``, in order (see the module docstring)."""
    dirs = [Path(p) for p in os.environ.get(PROTOCOLS_ENV, "").split(os.pathsep) if p.strip()]
    packaged = resources.files("calibench") / "_protocols"
    if isinstance(packaged, Path):
        dirs.append(packaged)
    dirs.append(Path(__file__).resolve().parents[1] / "registry" / "protocols")
    seen: set[Path] = set()
    unique = []
    for d in dirs:
        key = d.resolve() if d.exists() else d
        if d.is_dir() and key not in seen:
            seen.add(key)
            unique.append(d)
    return unique


def _read(path: Path) -> Protocol:
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise ProtocolError(f"cannot read protocol file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolError(f"protocol file {path} is not valid TOML: {exc}") from None
    return Protocol.from_dict(raw, path=path)


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
        return _read(path)
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
    protocol = _read(path)
    if protocol.name != path.stem:
        raise ProtocolError(
            f"protocol file {path} declares name '{protocol.name}'; "
            f"the name must match the file name '{path.stem}'"
        )
    return protocol


def list_protocols() -> list[Protocol]:
    """Every protocol found in :func:`protocol_dirs`, sorted by name (first directory wins)."""
    found: dict[str, Path] = {}
    for d in protocol_dirs():
        for path in sorted(d.glob("*.toml")):
            found.setdefault(path.stem, path)
    return [load_protocol(name) for name in sorted(found)]
