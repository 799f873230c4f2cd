"""The leaderboard: aggregate run records, render them, publish immutable versions.

``build_leaderboard(results_dir or records, protocol=..., sort="ece", n_boot=1000)`` groups runs
into rows (:mod:`.aggregate`); every value and 95 % interval comes from each run's saved
predictions and OOD scores, and adjacent ranks are compared by Welch's t-test over seeds
(:mod:`.significance`), with no loss imported. :func:`render` writes each format of
:data:`RENDERERS` (:mod:`.render`; the HTML page is a Jinja2 template, :mod:`.html`) from the
text cells of :mod:`.cells`; :func:`publish` writes ``leaderboards/<protocol>/v<N>/``
(:mod:`.versions`).

Importing the renderers loads neither torch nor pandas, so the CLI reads :data:`RENDERERS` at
start-up for its ``--format`` choices; the names of :mod:`.aggregate` and :mod:`.versions` are
imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from calibench.leaderboard.render import FORMATS, RENDERERS, render, render_terminal

if TYPE_CHECKING:
    from calibench.leaderboard.aggregate import Leaderboard, MetricColumn, build_leaderboard
    from calibench.leaderboard.versions import PublishError, PublishResult, publish

_ON_FIRST_USE = {
    "Leaderboard": "aggregate",
    "MetricColumn": "aggregate",
    "build_leaderboard": "aggregate",
    "PublishError": "versions",
    "PublishResult": "versions",
    "publish": "versions",
}

__all__ = [
    "FORMATS",
    "RENDERERS",
    "Leaderboard",
    "MetricColumn",
    "PublishError",
    "PublishResult",
    "build_leaderboard",
    "publish",
    "render",
    "render_terminal",
]


def __getattr__(name: str) -> Any:
    if name not in _ON_FIRST_USE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_ON_FIRST_USE[name]}"), name)
    globals()[name] = value
    return value
