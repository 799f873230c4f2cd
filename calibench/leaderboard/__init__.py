"""The leaderboard: aggregate run records, render them, publish immutable versions.

``build_leaderboard(results_dir or records, protocol=..., sort="ece", n_boot=1000)`` groups runs
into rows (:mod:`.aggregate`); every value and 95 % interval comes from each run's saved
predictions and OOD scores, and adjacent ranks are compared by Welch's t-test over seeds
(:mod:`.significance`), with no loss imported; :func:`render` writes md / csv / json / latex /
html (:mod:`.render`, :mod:`.html`); :func:`publish` writes ``leaderboards/<protocol>/v<N>/``
(:mod:`.versions`).
"""

from __future__ import annotations

from calibench.leaderboard.aggregate import Leaderboard, MetricColumn, build_leaderboard
from calibench.leaderboard.render import FORMATS, render, render_terminal
from calibench.leaderboard.versions import PublishError, PublishResult, publish

__all__ = [
    "FORMATS",
    "Leaderboard",
    "MetricColumn",
    "PublishError",
    "PublishResult",
    "build_leaderboard",
    "publish",
    "render",
    "render_terminal",
]
