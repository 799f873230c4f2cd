"""Parse the command line's selections: ``--losses 'ce,focal(gamma=2)'``, seeds, name lists.

Every name is resolved in its registry and every loss parameter is checked against the loss's
signature (and by building the loss once) before any run starts, so a typo fails the whole
command at once, with close matches, instead of after hours of training.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any

from calibench.errors import UsageError
from calibench.registry import Entry, get_registry
from calibench.spec import format_params

_ITEM = re.compile(r"^(?P<name>[^()\s,]+)\s*(?:\((?P<params>.*)\))?$", re.DOTALL)
_OPEN = {"(": ")", "[": "]", "{": "}"}


@dataclass(frozen=True)
class LossChoice:
    """One loss of the sweep: its registry name and explicit parameters."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``focal`` or ``focal(gamma=2)``: the form used in run tables and leaderboard rows."""
        return f"{self.name}({format_params(self.params)})" if self.params else self.name


def split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets or quotes: ``a,b(x=1,y=2)`` -> 2 items."""
    items: list[str] = []
    stack: list[str] = []
    quote: str | None = None
    start = 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote and text[i - 1] != "\\":
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in _OPEN:
            stack.append(_OPEN[ch])
        elif ch in ")]}":
            if not stack or stack.pop() != ch:
                raise UsageError(f"unbalanced '{ch}' at position {i + 1} in {text!r}")
        elif ch == "," and not stack:
            items.append(text[start:i])
            start = i + 1
    if stack or quote:
        raise UsageError(f"unclosed {'quote' if quote else repr(stack[-1])} in {text!r}")
    items.append(text[start:])
    return [item.strip() for item in items]


def parse_params(text: str, where: str) -> dict[str, Any]:
    """``gamma=2, alpha=0.5`` -> ``{"gamma": 2, "alpha": 0.5}``; values are Python literals only."""
    if not text.strip():
        return {}
    try:
        call = ast.parse(f"f({text})", mode="eval").body
    except SyntaxError:
        raise UsageError(
            f"cannot parse the parameters of {where}: write them as name=value, e.g. focal(gamma=2)"
        ) from None
    assert isinstance(call, ast.Call)
    if call.args or any(kw.arg is None for kw in call.keywords):
        raise UsageError(
            f"parameters of {where} must be given by name, e.g. focal(gamma=2), got ({text})"
        )
    params: dict[str, Any] = {}
    for kw in call.keywords:
        try:
            params[kw.arg] = ast.literal_eval(kw.value)
        except (ValueError, SyntaxError, TypeError):
            raise UsageError(
                f"parameter {kw.arg} of {where} must be a literal (number, string, bool, list), "
                f"got {ast.unparse(kw.value)}"
            ) from None
        if isinstance(params[kw.arg], (set, dict, bytes, complex)):
            raise UsageError(
                f"parameter {kw.arg} of {where} must be a number, string, bool or list"
            )
    return params


def parse_losses(text: str) -> list[LossChoice]:
    """Resolve ``--losses``: ``all`` (every registered loss, plugins included) or a list of
    ``NAME`` / ``NAME(param=value, ...)``. Raises :class:`UsageError` on the first bad item."""
    registry = get_registry("losses")
    items = [item for item in split_top_level(text) if item]
    if not items:
        raise UsageError("--losses is empty: give loss names such as 'ce,focal' or 'all'")
    choices: list[LossChoice] = []
    for item in items:
        if item == "all":
            choices.extend(LossChoice(name) for name in registry.entries(families=False))
            continue
        match = _ITEM.match(item)
        if match is None:
            raise UsageError(f"cannot parse loss {item!r}: write NAME or NAME(param=value, ...)")
        entry = registry.get(match["name"])
        params = parse_params(match["params"] or "", f"loss '{match['name']}'")
        choices.append(LossChoice(_typed_name(registry, entry), params))
    for choice in choices:
        check_loss(choice)
    unique: dict[str, LossChoice] = {}
    for choice in choices:
        unique.setdefault(choice.label, choice)
    return list(unique.values())


def _typed_name(registry: Any, entry: Entry) -> str:
    """The name a user sees in ``calibench list losses``: plain unless a plugin clashes."""
    try:
        if registry.get(entry.name) is entry:
            return entry.name
    except UsageError:
        pass
    return entry.qualified_name


def check_loss(choice: LossChoice) -> None:
    """Check parameters against the signature, then build the loss once to validate values."""
    entry = get_registry("losses").get(choice.name)
    entry.check_params(choice.params)
    try:
        entry.create(**choice.params)
    except UsageError as exc:
        raise UsageError(f"loss {choice.label}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise UsageError(f"loss {choice.label} rejects its parameters: {exc}") from None


def parse_names(values: list[str] | str, kind: str, option: str) -> list[str]:
    """Names from a repeatable, comma-separated option, each resolved in the ``kind`` registry."""
    raw = [values] if isinstance(values, str) else list(values)
    names = [n.strip() for v in raw for n in v.split(",") if n.strip()]
    registry = get_registry(kind)
    for name in names:
        registry.get(name)
    if not names:
        raise UsageError(f"{option} is empty")
    return list(dict.fromkeys(names))


def parse_seeds(text: str) -> list[int]:
    """``0,1,2`` or a range ``0-4`` (inclusive) -> sorted distinct non-negative seeds."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            if sep:
                seeds.extend(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise UsageError(
                f"--seeds must be integers such as 0,1,2 or a range 0-4, got {part!r}"
            ) from None
    if not seeds or any(s < 0 for s in seeds):
        raise UsageError(f"--seeds must be non-negative integers, got {text!r}")
    return list(dict.fromkeys(seeds))
