"""The end-of-sweep summary: one row per run, then counts per outcome."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from calibench.runner.execute import RunOutcome
from calibench.runner.live import STYLE, _duration
from calibench.status import Outcome


def summary_table(outcomes: Sequence[RunOutcome], *, title: str = "calibench run summary") -> Any:
    from rich.table import Table

    counts = Counter(o.status for o in outcomes)
    caption = ", ".join(f"{counts.get(k, 0)} {k}" for k in Outcome)
    table = Table(title=title, caption=caption)
    for col in ("run id", "run", "outcome", "time", "reason"):
        table.add_column(col, overflow="fold")
    for o in outcomes:
        style = STYLE[o.status]
        ran = o.status is not Outcome.SKIPPED
        status = o.status + (" (resumed)" if o.resumed and ran else "")
        took = _duration(o.seconds) if ran else "-"
        table.add_row(o.run_id, o.label, f"[{style}]{status}[/]", took, o.reason or "")
    return table
