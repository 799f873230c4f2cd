"""One generic registry for every pluggable kind: losses, backbones, datasets and OOD sets.

Modelled on timm's ``_registry.py``: a decorator registers a factory (class or function) by name,
``list_*`` filters with :func:`fnmatch.fnmatchcase`, one ``create_*`` factory builds by name.

Built-ins register themselves when their module (``calibench.losses`` and so on) is imported.
Plugins are discovered lazily, on the first lookup of a kind, from the entry-point group
``calibench.<kind>``. Each entry point names a module or object; importing it runs its
``register_*`` decorators, which are attributed to the plugin's distribution. An entry point
whose object was not registered by a decorator is registered under the entry point's name.
A plugin that fails to import or registers a clashing name is recorded as an error, reported by
``calibench plugins`` and as one warning, and never breaks another command: the built-in keeps
its name. ``DIST:NAME`` selects a plugin's entry explicitly. ``CALIBENCH_DISABLE_PLUGINS=1``
turns discovery off.

This module imports only the standard library, so ``import calibench`` stays light.
"""

from __future__ import annotations

import contextvars
import difflib
import fnmatch
import functools
import importlib
import inspect
import os
import re
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, TypeVar

from calibench.errors import RegistrationError, UnknownNameError, UnknownParameterError

__all__ = [
    "KINDS",
    "Entry",
    "PluginStatus",
    "PluginWarning",
    "Registry",
    "Source",
    "create_backbone",
    "create_dataset",
    "create_loss",
    "create_ood",
    "get_registry",
    "list_backbones",
    "list_datasets",
    "list_losses",
    "list_ood",
    "plugin_statuses",
    "register_backbone",
    "register_backbone_family",
    "register_dataset",
    "register_loss",
    "register_ood",
]

F = TypeVar("F", bound=Callable[..., Any])

DISABLE_ENV = "CALIBENCH_DISABLE_PLUGINS"


class PluginWarning(UserWarning):
    """A plugin failed to load or registered a clashing name."""


@dataclass(frozen=True)
class Source:
    """Where a registered entry comes from: calibench itself, or a plugin distribution."""

    type: str = "builtin"
    distribution: str | None = None
    version: str | None = None
    entry_point: str | None = None

    @property
    def is_builtin(self) -> bool:
        return self.type == "builtin"

    @property
    def is_plugin(self) -> bool:
        return self.type == "plugin"

    def label(self) -> str:
        if self.is_builtin:
            return "built-in"
        if self.type == "local":
            return f"local ({self.entry_point})"
        return f"{self.distribution} {self.version}"

    def as_dict(self) -> dict[str, Any]:
        if self.is_builtin:
            return {"type": "builtin"}
        if self.type == "local":
            return {"type": "local", "module": self.entry_point}
        return {
            "type": "plugin",
            "distribution": self.distribution,
            "version": self.version,
            "entry_point": self.entry_point,
        }


BUILTIN = Source()


@dataclass
class Entry:
    """One registered factory with its documentation and provenance."""

    name: str
    kind: str
    factory: Callable[..., Any]
    summary: str
    reference: str
    defaults: dict[str, Any]
    required: tuple[str, ...]
    accepts_any: bool
    source: Source
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def qualified_name(self) -> str:
        if not self.source.is_plugin:
            return self.name
        return f"{self.source.distribution}:{self.name}"

    @property
    def parameters(self) -> tuple[str, ...]:
        return (*self.required, *self.defaults)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "qualified_name": self.qualified_name,
            "kind": self.kind,
            "summary": self.summary,
            "reference": self.reference,
            "defaults": _jsonable(self.defaults),
            "required": list(self.required),
            "source": self.source.as_dict(),
            **({"metadata": _jsonable(self.metadata)} if self.metadata else {}),
        }

    def check_params(self, params: dict[str, Any]) -> None:
        """Raise :class:`UnknownParameterError` for a parameter the factory does not accept."""
        if not self.accepts_any:
            unknown = sorted(set(params) - set(self.parameters))
            if unknown:
                accepted = ", ".join(self.parameters) or "none"
                raise UnknownParameterError(
                    f"{_singular(self.kind)} '{self.name}' got unknown parameter(s) "
                    f"{', '.join(unknown)}; accepted parameters: {accepted}"
                )
        missing = [p for p in self.required if p not in params]
        if missing:
            raise UnknownParameterError(
                f"{_singular(self.kind)} '{self.name}' needs parameter(s) {', '.join(missing)}"
            )

    def create(self, **params: Any) -> Any:
        self.check_params(params)
        return self.factory(**params)


@dataclass
class PluginStatus:
    """The outcome of loading one entry point."""

    group: str
    name: str
    value: str
    distribution: str | None
    version: str | None
    status: str = "ok"
    error: str | None = None
    registered: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "name": self.name,
            "value": self.value,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "error": self.error,
            "registered": list(self.registered),
        }


_SINGULAR = {"losses": "loss", "backbones": "backbone", "datasets": "dataset", "ood": "OOD set"}


def _singular(kind: str) -> str:
    return _SINGULAR.get(kind, kind)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _normalize_dist(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _describe_signature(
    factory: Callable[..., Any],
) -> tuple[dict[str, Any], tuple[str, ...], bool]:
    """Defaults, required names and whether ``**kwargs`` is accepted, from the signature."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return {}, (), True
    defaults: dict[str, Any] = {}
    required: list[str] = []
    accepts_any = False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            accepts_any = True
        elif p.kind is p.VAR_POSITIONAL:
            continue
        elif p.default is p.empty:
            required.append(p.name)
        else:
            defaults[p.name] = p.default
    return defaults, tuple(required), accepts_any


def _first_line(doc: str | None) -> str:
    for line in (doc or "").strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


_loading: contextvars.ContextVar[tuple[Source, list[tuple[Registry, str]]] | None] = (
    contextvars.ContextVar("calibench_loading_plugin", default=None)
)


class Registry:
    """Named factories of one kind, with built-ins, entry-point plugins and families.

    A *family* handles every name with a given prefix, such as ``timm:<model>``: the part after
    the colon is passed to the family's factory as its first argument.
    """

    def __init__(self, kind: str, builtin_module: str, group: str) -> None:
        self.kind = kind
        self.builtin_module = builtin_module
        self.group = group
        self._builtins: dict[str, Entry] = {}
        self._plugins: dict[tuple[str, str], Entry] = {}
        self._families: dict[str, Entry] = {}
        self._statuses: list[PluginStatus] = []
        self._lock = threading.RLock()
        self._builtins_loaded = False
        self._plugins_loaded = False
        self._warned = False

    # -- registration -------------------------------------------------------------------------
    def register(
        self,
        name: str,
        *,
        summary: str | None = None,
        reference: str = "",
        **metadata_: Any,
    ) -> Callable[[F], F]:
        """Decorator that registers a class or factory function under ``name``."""
        if not name or not isinstance(name, str) or ":" in name or name != name.strip():
            raise RegistrationError(
                f"invalid {_singular(self.kind)} name {name!r}: use a non-empty name without ':'"
            )

        def decorator(factory: F) -> F:
            self._add(self._make_entry(name, factory, summary, reference, metadata_))
            return factory

        return decorator

    def register_family(
        self, prefix: str, *, summary: str | None = None, reference: str = "", **metadata_: Any
    ) -> Callable[[F], F]:
        """Decorator that registers a factory for every name ``prefix:<rest>``."""

        def decorator(factory: F) -> F:
            with self._lock:
                if prefix in self._families:
                    raise RegistrationError(f"{self.kind} family '{prefix}:' is registered twice")
                entry = self._make_entry(f"{prefix}:*", factory, summary, reference, metadata_)
                self._families[prefix] = entry
            return factory

        return decorator

    def _make_entry(
        self,
        name: str,
        factory: Callable[..., Any],
        summary: str | None,
        reference: str,
        metadata_: dict[str, Any],
    ) -> Entry:
        defaults, required, accepts_any = _describe_signature(factory)
        loading = _loading.get()
        if loading is not None:
            source = loading[0]
        elif getattr(factory, "__module__", "").partition(".")[0] == "calibench":
            source = BUILTIN
        else:  # registered at run time by the user's own code
            source = Source("local", entry_point=getattr(factory, "__module__", None))
        return Entry(
            name=name,
            kind=self.kind,
            factory=factory,
            summary=summary or _first_line(factory.__doc__),
            reference=reference,
            defaults=defaults,
            required=required,
            accepts_any=accepts_any,
            source=source,
            metadata=dict(metadata_),
        )

    def _add(self, entry: Entry) -> None:
        if entry.source.is_plugin:
            self._ensure_builtins()
        with self._lock:
            loading = _loading.get()
            if not entry.source.is_plugin:
                if entry.name in self._builtins:
                    raise RegistrationError(
                        f"{_singular(self.kind)} '{entry.name}' is registered twice "
                        f"(first by {self._builtins[entry.name].source.label()})"
                    )
                self._builtins[entry.name] = entry
                return
            key = (_normalize_dist(entry.source.distribution or ""), entry.name)
            if key in self._plugins:
                raise RegistrationError(
                    f"{entry.source.distribution} registers {_singular(self.kind)} "
                    f"'{entry.name}' twice"
                )
            self._plugins[key] = entry
            if loading is not None:
                loading[1].append((self, entry.name))
            if entry.name in self._builtins:
                raise RegistrationError(
                    f"{_singular(self.kind)} '{entry.name}' clashes with a built-in; the built-in "
                    f"keeps the name, the plugin's is reachable as '{entry.qualified_name}'"
                )

    # -- discovery -----------------------------------------------------------------------------
    def _ensure_builtins(self) -> None:
        if self._builtins_loaded:
            return
        with self._lock:
            if not self._builtins_loaded:
                self._builtins_loaded = True
                importlib.import_module(self.builtin_module)

    def _ensure_plugins(self) -> None:
        self._ensure_builtins()
        if self._plugins_loaded:
            return
        with self._lock:
            if self._plugins_loaded:
                return
            self._plugins_loaded = True
            if os.environ.get(DISABLE_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
                return
            for ep in _entry_points(self.group):
                self._statuses.append(self._load_entry_point(ep))
        failed = [s for s in self._statuses if s.status == "error"]
        if failed and not self._warned:
            self._warned = True
            names = ", ".join(f"{s.name} ({s.distribution})" for s in failed)
            warnings.warn(
                f"{len(failed)} {self.kind} plugin(s) failed: {names}; "
                "run 'calibench plugins' for details",
                PluginWarning,
                stacklevel=4,
            )

    def _load_entry_point(self, ep: metadata.EntryPoint) -> PluginStatus:
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else ep.value.split(":")[0]
        version = dist.version if dist is not None else None
        status = PluginStatus(self.group, ep.name, ep.value, dist_name, version)
        source = Source("plugin", dist_name, version, f"{ep.name} = {ep.value}")
        registered: list[tuple[Registry, str]] = []
        token = _loading.set((source, registered))
        try:
            obj = ep.load()
            if not inspect.ismodule(obj) and not any(n == ep.name for _, n in registered):
                if not callable(obj):
                    raise RegistrationError(
                        f"entry point {ep.name} = {ep.value} is neither a module nor a factory"
                    )
                self.register(ep.name)(obj)
        except Exception as exc:  # a plugin must never break another command
            status.status = "error"
            status.error = f"{type(exc).__name__}: {exc}"
        finally:
            _loading.reset(token)
        status.registered = [f"{reg.kind}:{n}" for reg, n in registered]
        return status

    # -- lookup --------------------------------------------------------------------------------
    def _visible(self) -> dict[str, Entry]:
        """Every entry under the name a user types: plain when unique, ``DIST:NAME`` otherwise."""
        self._ensure_plugins()
        visible = dict(self._builtins)
        counts: dict[str, int] = {}
        for _, name in self._plugins:
            counts[name] = counts.get(name, 0) + 1
        for (_, name), entry in self._plugins.items():
            plain = name not in self._builtins and counts[name] == 1
            visible[name if plain else entry.qualified_name] = entry
        return visible

    def get(self, name: str) -> Entry:
        """The entry for ``name``, ``DIST:NAME`` or ``FAMILY:ARG``; clear error if unknown."""
        if not isinstance(name, str) or not name.strip():
            raise UnknownNameError(f"{_singular(self.kind)} name must be a non-empty string")
        name = name.strip()
        visible = self._visible()
        if name in visible:
            return visible[name]
        if ":" in name:
            prefix, _, rest = name.partition(":")
            if prefix in self._families and rest:
                return self._family_entry(prefix, rest)
            entry = self._plugins.get((_normalize_dist(prefix), rest))
            if entry is not None:
                return entry
        candidates = list(visible) + [f"{p}:<name>" for p in self._families]
        close = difflib.get_close_matches(name, list(visible), n=5, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownNameError(
            f"unknown {_singular(self.kind)} '{name}'.{hint} "
            f"Run 'calibench list {self.kind}' to see all {len(candidates)} registered."
        )

    def _family_entry(self, prefix: str, arg: str) -> Entry:
        family = self._families[prefix]
        factory = functools.partial(family.factory, arg)
        defaults, required, accepts_any = _describe_signature(factory)
        return Entry(
            name=f"{prefix}:{arg}",
            kind=self.kind,
            factory=factory,
            summary=family.summary,
            reference=family.reference,
            defaults=defaults,
            required=required,
            accepts_any=accepts_any,
            source=family.source,
            metadata=family.metadata,
        )

    def listing(self, pattern: str = "*") -> list[tuple[str, Entry]]:
        """``(name as typed, entry)`` pairs whose name matches the fnmatch ``pattern``, sorted."""
        items = dict(self._visible())
        for prefix, family in self._families.items():
            items[f"{prefix}:<name>"] = family
        return [(n, items[n]) for n in sorted(items) if fnmatch.fnmatchcase(n, pattern)]

    def list(self, pattern: str = "*") -> list[Entry]:
        """Entries whose name matches the fnmatch ``pattern``, sorted; families included."""
        return [entry for _, entry in self.listing(pattern)]

    def names(self, pattern: str = "*") -> list[str]:
        visible = self._visible()
        return sorted(n for n in visible if fnmatch.fnmatchcase(n, pattern))

    def create(self, name: str, **params: Any) -> Any:
        """Build ``name`` with ``params``, checked against the factory's signature."""
        return self.get(name).create(**params)

    def plugin_statuses(self) -> list[PluginStatus]:
        self._ensure_plugins()
        return list(self._statuses)

    def _reset_for_tests(self) -> None:
        """Forget plugins (not built-ins) so discovery runs again."""
        with self._lock:
            self._plugins.clear()
            self._statuses.clear()
            self._plugins_loaded = False
            self._warned = False


def _entry_points(group: str) -> list[metadata.EntryPoint]:
    seen: set[tuple[str, str]] = set()
    eps = []
    for ep in metadata.entry_points(group=group):
        key = (ep.name, ep.value)
        if key not in seen:  # the same distribution on sys.path twice
            seen.add(key)
            eps.append(ep)
    return eps


LOSSES = Registry("losses", "calibench.losses", "calibench.losses")
BACKBONES = Registry("backbones", "calibench.models", "calibench.backbones")
DATASETS = Registry("datasets", "calibench.data.datasets", "calibench.datasets")
OOD = Registry("ood", "calibench.data.ood", "calibench.ood")

_REGISTRIES = {r.kind: r for r in (LOSSES, BACKBONES, DATASETS, OOD)}
KINDS: tuple[str, ...] = tuple(_REGISTRIES)


def get_registry(kind: str) -> Registry:
    """The registry of ``kind`` (one of :data:`KINDS`)."""
    try:
        return _REGISTRIES[kind]
    except KeyError:
        close = difflib.get_close_matches(kind, KINDS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise UnknownNameError(
            f"unknown kind '{kind}'.{hint} Valid kinds: {', '.join(KINDS)}"
        ) from None


def plugin_statuses() -> list[PluginStatus]:
    """The load status of every discovered entry point, across all kinds."""
    return [s for r in _REGISTRIES.values() for s in r.plugin_statuses()]


register_loss = LOSSES.register
register_backbone = BACKBONES.register
register_backbone_family = BACKBONES.register_family
register_dataset = DATASETS.register
register_ood = OOD.register
create_loss = LOSSES.create
create_backbone = BACKBONES.create
create_dataset = DATASETS.create
create_ood = OOD.create
list_losses = LOSSES.list
list_backbones = BACKBONES.list
list_datasets = DATASETS.list
list_ood = OOD.list
