"""Transitional: :mod:`calibench.cli.leaderboard_cmd` imports :func:`default_results_dir` from
here; once it imports it from :mod:`calibench.runner.plan`, this module goes."""

from __future__ import annotations

from calibench.runner.plan import default_results_dir

__all__ = ["default_results_dir"]
