"""Entry-point plugins: where a registered entry comes from, and the loop that loads plugins.

Written like pluggy's ``load_setuptools_entrypoints``: one short loop over the entry points of a
group that loads each one and records ``(entry point, distribution)``. A plugin's distribution
reaches the registry explicitly: before loading an entry point the loop names the plugin's
top-level package and its :class:`Source` (:func:`claim_package`), and every decorator that runs
in that package registers with that source. An entry point whose object was not registered by a
decorator is registered under the entry point's name with the same source.

A plugin that fails to import or registers a clashing name becomes a :class:`PluginStatus` with
``status="error"``; it never breaks another command, and the built-in keeps its name.
``CALIBENCH_DISABLE_PLUGINS=1`` turns discovery off.

This module imports only the standard library, so ``import calibench`` stays light.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any, Protocol

__all__ = [
    "BUILTIN",
    "DISABLE_ENV",
    "PluginStatus",
    "PluginWarning",
    "Source",
    "claim_package",
    "load_plugins",
    "plugins_disabled",
    "source_of",
]

DISABLE_ENV = "CALIBENCH_DISABLE_PLUGINS"


class PluginWarning(UserWarning):
    """A plugin failed to load or registered a clashing name."""


@dataclass(frozen=True)
class Source:
    """Where a registered entry comes from: calibench itself, a plugin distribution, or local code."""

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
        return asdict(self)


#: Top-level package of a plugin -> its source, named by :func:`load_plugins` before loading it.
_PLUGIN_PACKAGES: dict[str, Source] = {}


def claim_package(package: str, source: Source) -> None:
    """Attribute every entry registered from ``package`` (top level) to ``source``."""
    _PLUGIN_PACKAGES[package.partition(".")[0]] = source


def source_of(factory: Callable[..., Any]) -> Source:
    """The source of a factory registered by a decorator: a claimed plugin package, calibench
    itself (built-in), or the user's own code (local)."""
    module = getattr(factory, "__module__", None) or ""
    top = module.partition(".")[0]
    if top in _PLUGIN_PACKAGES:
        return _PLUGIN_PACKAGES[top]
    if top == "calibench":
        return BUILTIN
    return Source("local", entry_point=module or None)


def plugins_disabled() -> bool:
    """Whether ``$CALIBENCH_DISABLE_PLUGINS`` turns discovery off."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class _Target(Protocol):
    """What the loop needs of a registry (:class:`calibench.registry.Registry`)."""

    def register(self, name: str, *, source: Source | None = None) -> Callable[[Any], Any]: ...


def _entry_points(group: str) -> Iterator[metadata.EntryPoint]:
    seen: set[tuple[str, str]] = set()
    for ep in metadata.entry_points(group=group):
        if (ep.name, ep.value) not in seen:  # the same distribution on sys.path twice
            seen.add((ep.name, ep.value))
            yield ep


def load_plugins(
    group: str, registry: _Target, registered: Callable[[], set[str]]
) -> list[PluginStatus]:
    """Load every entry point of ``group`` into ``registry``; one status per entry point.

    ``registered()`` lists what every registry holds (``"kind:name"``), so that a status can say
    what its entry point added, in whichever registry.
    """
    statuses = []
    for ep in _entry_points(group):
        dist = ep.dist
        name = dist.metadata["Name"] if dist is not None else ep.value.split(":")[0]
        version = dist.version if dist is not None else None
        source = Source("plugin", name, version, f"{ep.name} = {ep.value}")
        status = PluginStatus(group, ep.name, ep.value, name, version)
        before = registered()
        try:
            claim_package(ep.module, source)
            obj = ep.load()
            if not inspect.ismodule(obj) and not registered() - before:
                if not callable(obj):
                    raise TypeError(
                        f"entry point {ep.name} = {ep.value} is neither a module nor a factory"
                    )
                registry.register(ep.name, source=source)(obj)
        except Exception as exc:  # a plugin must never break another command
            status.status = "error"
            status.error = f"{type(exc).__name__}: {exc}"
        status.registered = sorted(registered() - before)
        statuses.append(status)
    return statuses
