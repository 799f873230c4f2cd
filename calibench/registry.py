"""One generic registry for every pluggable kind: losses, backbones, datasets, OOD sets and
distribution-shift suites.

Modelled on timm's ``_registry.py``: a decorator registers a factory (class or function) by name,
``list_*`` filters with :func:`fnmatch.fnmatchcase`, one ``create_*`` factory builds by name.

Built-ins register themselves when their module (``calibench.losses`` and so on) is imported.
Plugins are discovered lazily, on the first lookup of a kind, from the entry-point group
``calibench.<kind>`` by :func:`calibench.plugins.load_plugins`, which passes each plugin's
distribution to :meth:`Registry.register`. A plugin that fails to import or registers a clashing
name is recorded as an error, reported by ``calibench plugins`` and as one warning, and never
breaks another command: the built-in keeps its name. ``DIST:NAME`` selects a plugin's entry
explicitly.

This module imports only the standard library, so ``import calibench`` stays light.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import importlib
import inspect
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from calibench.errors import RegistrationError, UnknownNameError, UnknownParameterError
from calibench.plugins import PluginStatus, PluginWarning, Source, load_plugins, plugins_disabled
from calibench.plugins import source_of as _source_of
from calibench.util import to_jsonable

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
    "create_shift",
    "get_registry",
    "list_backbones",
    "list_datasets",
    "list_losses",
    "list_ood",
    "list_shift",
    "plugin_statuses",
    "register_backbone",
    "register_backbone_family",
    "register_dataset",
    "register_loss",
    "register_ood",
    "register_shift",
]

F = TypeVar("F", bound=Callable[..., Any])


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
            "defaults": to_jsonable(self.defaults, fallback=repr),
            "required": list(self.required),
            "source": self.source.as_dict(),
            **({"metadata": to_jsonable(self.metadata, fallback=repr)} if self.metadata else {}),
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


_SINGULAR = {
    "losses": "loss",
    "backbones": "backbone",
    "datasets": "dataset",
    "ood": "OOD set",
    "shift": "shift suite",
}


def _singular(kind: str) -> str:
    return _SINGULAR.get(kind, kind)


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
        self._statuses: list[PluginStatus] | None = None  # None: plugins not loaded yet
        self._builtins_loaded = False

    # -- registration -------------------------------------------------------------------------
    def register(
        self,
        name: str,
        *,
        summary: str | None = None,
        reference: str = "",
        source: Source | None = None,
        **metadata_: Any,
    ) -> Callable[[F], F]:
        """Decorator that registers a class or factory function under ``name``.

        ``source`` is the plugin distribution when :func:`calibench.plugins.load_plugins`
        registers an entry point's object; by default it follows the factory's package
        (:func:`calibench.plugins.source_of`).
        """
        if not name or not isinstance(name, str) or ":" in name or name != name.strip():
            raise RegistrationError(
                f"invalid {_singular(self.kind)} name {name!r}: use a non-empty name without ':'"
            )

        def decorator(factory: F) -> F:
            entry = self._make_entry(name, factory, summary, reference, metadata_, source)
            self._add(entry)
            return factory

        return decorator

    def register_family(
        self, prefix: str, *, summary: str | None = None, reference: str = "", **metadata_: Any
    ) -> Callable[[F], F]:
        """Decorator that registers a factory for every name ``prefix:<rest>``."""

        def decorator(factory: F) -> F:
            if prefix in self._families:
                raise RegistrationError(f"{self.kind} family '{prefix}:' is registered twice")
            entry = self._make_entry(f"{prefix}:<name>", factory, summary, reference, metadata_)
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
        source: Source | None = None,
    ) -> Entry:
        defaults, required, accepts_any = _describe_signature(factory)
        return Entry(
            name=name,
            kind=self.kind,
            factory=factory,
            summary=summary or _first_line(factory.__doc__),
            reference=reference,
            defaults=defaults,
            required=required,
            accepts_any=accepts_any,
            source=source or _source_of(factory),
            metadata=dict(metadata_),
        )

    def _add(self, entry: Entry) -> None:
        if not entry.source.is_plugin:
            if entry.name in self._builtins:
                raise RegistrationError(
                    f"{_singular(self.kind)} '{entry.name}' is registered twice "
                    f"(first by {self._builtins[entry.name].source.label()})"
                )
            self._builtins[entry.name] = entry
            return
        self._ensure_builtins()
        key = (_normalize_dist(entry.source.distribution or ""), entry.name)
        if key in self._plugins:
            raise RegistrationError(
                f"{entry.source.distribution} registers {_singular(self.kind)} '{entry.name}' twice"
            )
        self._plugins[key] = entry
        if entry.name in self._builtins:
            raise RegistrationError(
                f"{_singular(self.kind)} '{entry.name}' clashes with a built-in; the built-in "
                f"keeps the name, the plugin's is reachable as '{entry.qualified_name}'"
            )

    # -- discovery -----------------------------------------------------------------------------
    def _ensure_builtins(self) -> None:
        if not self._builtins_loaded:
            self._builtins_loaded = True
            importlib.import_module(self.builtin_module)

    def _ensure_plugins(self) -> None:
        self._ensure_builtins()
        if self._statuses is not None:
            return
        self._statuses = [] if plugins_disabled() else load_plugins(self.group, self, _registered)
        failed = [s for s in self._statuses if s.status == "error"]
        if failed:
            names = ", ".join(f"{s.name} ({s.distribution})" for s in failed)
            warnings.warn(
                f"{len(failed)} {self.kind} plugin(s) failed: {names}; "
                "run 'calibench plugins' for details",
                PluginWarning,
                stacklevel=4,
            )

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

    def entries(self, pattern: str = "*", *, families: bool = True) -> dict[str, Entry]:
        """``{name as typed: entry}`` for names matching the fnmatch ``pattern``, sorted by name.

        A family is listed as ``prefix:<name>`` (left out with ``families=False``).
        """
        items = dict(self._visible())
        if families:
            items.update({f"{p}:<name>": family for p, family in self._families.items()})
        return {n: items[n] for n in sorted(items) if fnmatch.fnmatchcase(n, pattern)}

    def create(self, name: str, **params: Any) -> Any:
        """Build ``name`` with ``params``, checked against the factory's signature."""
        return self.get(name).create(**params)

    def plugin_statuses(self) -> list[PluginStatus]:
        self._ensure_plugins()
        return list(self._statuses or [])


LOSSES = Registry("losses", "calibench.losses", "calibench.losses")
BACKBONES = Registry("backbones", "calibench.backbones", "calibench.backbones")
DATASETS = Registry("datasets", "calibench.data.datasets", "calibench.datasets")
OOD = Registry("ood", "calibench.data.ood", "calibench.ood")
SHIFT = Registry("shift", "calibench.data.shift", "calibench.shift")

_REGISTRIES = {r.kind: r for r in (LOSSES, BACKBONES, DATASETS, OOD, SHIFT)}
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


def _registered() -> set[str]:
    """``"kind:name"`` of every plugin entry in every registry (what a plugin's loading added)."""
    return {f"{r.kind}:{name}" for r in _REGISTRIES.values() for _, name in r._plugins}


def plugin_statuses() -> list[PluginStatus]:
    """The load status of every discovered entry point, across all kinds."""
    return [s for r in _REGISTRIES.values() for s in r.plugin_statuses()]


register_loss = LOSSES.register
register_backbone = BACKBONES.register
register_backbone_family = BACKBONES.register_family
register_dataset = DATASETS.register
register_ood = OOD.register
register_shift = SHIFT.register
create_loss = LOSSES.create
create_backbone = BACKBONES.create
create_dataset = DATASETS.create
create_ood = OOD.create
create_shift = SHIFT.create


def _lister(registry: Registry) -> Callable[[str], list[Entry]]:
    def list_entries(pattern: str = "*") -> list[Entry]:
        """Registered entries whose name matches the fnmatch ``pattern``, sorted; families too."""
        return list(registry.entries(pattern).values())

    list_entries.__name__ = f"list_{registry.kind}"
    return list_entries


list_losses = _lister(LOSSES)
list_backbones = _lister(BACKBONES)
list_datasets = _lister(DATASETS)
list_ood = _lister(OOD)
list_shift = _lister(SHIFT)
