"""A self-contained HTML leaderboard page: the table plus each run's reliability diagram.

Everything is inline (CSS, a few lines of JavaScript that sort the table when a header is
clicked, and the PNGs as base64 ``data:`` URIs), so the file can be mailed or published as is.
Only plots the record names (``artifacts.plots``), that lie inside the run folder and start with
the PNG signature are embedded.
"""

from __future__ import annotations

import base64
import html
import math
from typing import TYPE_CHECKING

import pandas as pd

from calibench.leaderboard.cells import (
    caption_lines,
    display_rows,
    format_cell,
    interval_text,
    run_problem_lines,
    shared_identity,
)

if TYPE_CHECKING:
    from calibench.leaderboard.aggregate import Leaderboard
    from calibench.records import StoredRecord

__all__ = ["render_html"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PNG_BYTES = 4 * 2**20
RELIABILITY_KEY = "reliability"

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px;
       color: #1d2430; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; }
p.meta, ul.notes { color: #5b6472; font-size: 13px; }
table.board { border-collapse: collapse; margin: 12px 0; }
p.sub { font-size: 15px; margin: 0 0 6px; }
table.board th, table.board td { border-bottom: 1px solid #e3e6eb; padding: 5px 7px;
       text-align: left; vertical-align: middle; white-space: nowrap; }
table.board th { background: #f3f5f8; cursor: pointer; user-select: none; position: sticky; top: 0;
       white-space: normal; max-width: 96px; font-size: 13px; vertical-align: bottom; }
table.board th::after { content: " \\2195"; color: #9aa3af; font-size: 11px; }
table.board th.asc::after { content: " \\25B2"; color: #1d2430; }
table.board th.desc::after { content: " \\25BC"; color: #1d2430; }
table.board tr:hover td { background: #f8fafc; }
td.num { font-variant-numeric: tabular-nums; }
td.num small { color: #6b7280; }
tr.bad td { color: #a11d2f; }
img.thumb { height: 56px; border: 1px solid #d8dce3; margin-right: 3px; vertical-align: middle; }
.gallery figure { display: inline-block; margin: 8px 12px 8px 0; text-align: center; }
.gallery img { width: 320px; border: 1px solid #d8dce3; }
.gallery figcaption { font-size: 12px; color: #5b6472; }
"""

_JS = """
document.querySelectorAll('table.board th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var asc = !th.classList.contains('asc');
    th.parentNode.querySelectorAll('th').forEach(function (h) { h.classList.remove('asc', 'desc'); });
    th.classList.add(asc ? 'asc' : 'desc');
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.sort, y = b.cells[col].dataset.sort;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (isNaN(nx) || isNaN(ny)) ? String(x).localeCompare(String(y)) : nx - ny;
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def _png_data_uri(record: StoredRecord, relative: str) -> str | None:
    path = record.artifact(relative)
    if path is None or path.stat().st_size > MAX_PNG_BYTES:
        return None
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _reliability_plots(board: Leaderboard, run_ids: list[str]) -> list[tuple[str, int, str]]:
    """``(run_id, seed, data URI)`` for each run of a row that has a reliability diagram."""
    out = []
    runs = board.runs.set_index("run_id")
    for run_id in run_ids:
        if run_id not in runs.index:
            continue
        record: StoredRecord = runs.loc[run_id, "record"]
        plots = record.data["artifacts"].get("plots") or {}
        names = sorted(k for k in plots if k.startswith(RELIABILITY_KEY))
        for name in names[:1]:
            uri = _png_data_uri(record, plots[name])
            if uri:
                out.append((run_id, int(record.data["spec"]["seed"]), uri))
    return out


def _sort_value(value: object) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "Infinity"
    return html.escape(str(value), quote=True)


def render_html(board: Leaderboard, *, title: str = "calibench leaderboard") -> str:
    """The page as one string; see the module docstring."""
    esc = html.escape
    rows = display_rows(board, ci=False)
    shared = shared_identity(rows)
    headers = [h for h in (rows[0] if rows else []) if h not in shared]
    headers.insert(headers.index("loss") + 1 if "loss" in headers else 0, "reliability")
    subtitle = " · ".join(f"deviations: {v}" if k == "deviations" else v for k, v in shared.items())
    metric_titles = {c.title: c for c in board.columns}
    body: list[str] = []
    gallery: list[str] = []
    for (_, row), shown in zip(board.table.iterrows(), rows, strict=True):
        run_ids = [r for r in str(row["run_ids"]).split(",") if r]
        anchor = f"row-{run_ids[0]}" if run_ids else ""
        plots = _reliability_plots(board, run_ids)
        cells = []
        for h in headers:
            if h in metric_titles:
                c = metric_titles[h]
                interval = interval_text(row, c)
                ci = f"<br><small>{interval}</small>" if interval else ""
                value = esc(format_cell(row, c, ci=False))
                sort = _sort_value(row[f"{c.key}_mean"])
                cells.append(f'<td class="num" data-sort="{sort}">{value}{ci}</td>')
            elif h == "reliability":
                thumbs = "".join(
                    f'<a href="#{anchor}"><img class="thumb" alt="reliability diagram, seed '
                    f'{seed}" title="seed {seed}" src="{uri}"></a>'
                    for _, seed, uri in plots
                )
                cells.append(f'<td class="plots" data-sort="{len(plots)}">{thumbs or "–"}</td>')
            elif h == "rank":
                cells.append(f'<td data-sort="{_sort_value(row["rank"])}">{esc(shown[h])}</td>')
            else:
                cells.append(f'<td data-sort="{_sort_value(shown[h])}">{esc(shown[h])}</td>')
        bad = ' class="bad"' if row["n_completed"] == 0 else ""
        body.append(f"<tr{bad}>{''.join(cells)}</tr>")
        if plots:
            figures = "".join(
                f'<figure><img alt="reliability diagram, seed {seed}" src="{uri}">'
                f"<figcaption>seed {seed} · run {esc(run_id)}</figcaption></figure>"
                for run_id, seed, uri in plots
            )
            gallery.append(
                f'<h3 id="{esc(anchor)}">{esc(str(row["loss"]))} · {esc(str(row["dataset"]))} · '
                f'{esc(str(row["backbone"]))}</h3><div class="gallery">{figures}</div>'
            )
    head = "".join(f"<th>{esc(h)}</th>" for h in headers) if rows else ""
    notes = [*run_problem_lines(board), *(str(p) for p in board.problems), *board.notes]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="sub">{esc(subtitle)}</p>' if subtitle else "",
        "".join(f'<p class="meta">{esc(line)}</p>' for line in caption_lines(board)),
        (
            f'<table class="board"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
            if rows
            else "<p>No run records found.</p>"
        ),
        ('<ul class="notes">' + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
        if notes
        else "",
        ("<h2>Reliability diagrams</h2>" + "".join(gallery)) if gallery else "",
        f"<script>{_JS}</script></body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"
