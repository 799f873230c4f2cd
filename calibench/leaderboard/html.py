"""A self-contained HTML leaderboard page: the table, ECE against shift severity (when records
have a shift grid) and each run's reliability diagram.

The page is the Jinja2 template ``templates/leaderboard.html.j2`` (package data), autoescaped:
loss names, deviations and notes come from records. Everything is inline (CSS, a few lines of
JavaScript that sort the table when a header is clicked, and the PNGs as base64 ``data:``
URIs), so the file can be mailed or published as is. Only plots the record names
(``artifacts.plots``), that lie inside the run folder and start with the PNG signature are
embedded; the table shows each diagram as a thumbnail (``THUMB_HEIGHT`` pixels high, twice the
CSS height for high-density screens), the gallery at full size. This module turns a board into
the template's rows of cells; the text of each cell is :mod:`calibench.leaderboard.cells`'.
"""

from __future__ import annotations

import base64
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from calibench.leaderboard.cells import (
    caption_lines,
    display_rows,
    format_cell,
    interval_text,
    missing,
    run_problem_lines,
    shared_identity,
)

if TYPE_CHECKING:
    import jinja2

    from calibench.leaderboard.aggregate import Leaderboard
    from calibench.records import StoredRecord

__all__ = ["TEMPLATE", "render_html"]

TEMPLATE = "leaderboard.html.j2"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PNG_BYTES = 4 * 2**20
RELIABILITY_KEY = "reliability"
THUMB_HEIGHT = 112


@dataclass(frozen=True)
class Plot:
    """One run's reliability diagram, as ``data:`` URIs of the full image and its thumbnail."""

    run_id: str
    seed: int
    uri: str
    thumb: str


@dataclass(frozen=True)
class Cell:
    """A table cell: ``kind`` is ``num`` (a metric, with its interval), ``plots`` (the row's
    diagrams) or ``text``; ``sort`` is the value a header click sorts by."""

    kind: str
    text: str = ""
    sort: str = ""
    interval: str | None = None


@dataclass(frozen=True)
class Row:
    """A table row; ``bad`` when none of its runs completed; ``anchor`` names its gallery."""

    cells: list[Cell]
    plots: list[Plot]
    anchor: str
    bad: bool


@dataclass(frozen=True)
class Section:
    """A row's reliability diagrams in the gallery below the table."""

    anchor: str
    heading: str
    plots: list[Plot]


@functools.cache
def _template() -> jinja2.Template:
    import jinja2  # here, not at the top: listing the formats (the CLI's start-up) skips it

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("calibench.leaderboard", "templates"),
        autoescape=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template(TEMPLATE)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _read_png(record: StoredRecord, relative: str) -> bytes | None:
    path = record.artifact(relative)
    if path is None or path.stat().st_size > MAX_PNG_BYTES:
        return None
    data = path.read_bytes()
    return data if data.startswith(PNG_SIGNATURE) else None


def _thumbnail(png: bytes) -> bytes:
    """``png`` scaled down to ``THUMB_HEIGHT`` pixels high (as is if it is not taller or does
    not decode)."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(png))
        if image.height <= THUMB_HEIGHT:
            return png
        image.thumbnail((image.width, THUMB_HEIGHT), Image.Resampling.LANCZOS)
    except (OSError, UnidentifiedImageError, ValueError):
        return png
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _reliability_plots(board: Leaderboard, run_ids: list[str], limit: int | None) -> list[Plot]:
    """The reliability diagram of each run of a row that has one (the ``limit`` lowest seeds)."""
    out = []
    runs = board.runs.set_index("run_id")
    for run_id in run_ids:
        if run_id not in runs.index:
            continue
        record: StoredRecord = runs.loc[run_id, "record"]
        plots = record.data["artifacts"].get("plots") or {}
        names = sorted(k for k in plots if k.startswith(RELIABILITY_KEY))
        for name in names[:1]:
            png = _read_png(record, plots[name])
            if png:
                seed = int(record.data["spec"]["seed"])
                out.append(Plot(run_id, seed, _data_uri(png), _data_uri(_thumbnail(png))))
    out.sort(key=lambda p: (p.seed, p.run_id))
    return out if limit is None else out[:limit]


def _shift_plot(board: Leaderboard) -> str | None:
    """ECE against shift severity for every row with a shift grid, as a ``data:`` URI."""
    if not any(getattr(c, "interval_kind", None) for c in board.columns):
        return None
    from calibench.leaderboard.aggregate import shift_severity_curves
    from calibench.plots import shift_severity_png

    curves = shift_severity_curves(board)
    if not curves:
        return None
    return _data_uri(shift_severity_png(curves))


def _sort_value(value: object) -> str:
    """What a header click sorts by; a missing value (None, NaN, NA) is ``Infinity``."""
    return "Infinity" if missing(value) else str(value)


def render_html(
    board: Leaderboard, *, title: str = "calibench leaderboard", plots_per_row: int | None = None
) -> str:
    """The page as one string; see the module docstring. ``plots_per_row`` keeps the diagrams
    of that many seeds per row (the lowest), all by default."""
    shown_rows = display_rows(board, ci=False)
    shared = shared_identity(shown_rows)
    headers = [h for h in (shown_rows[0] if shown_rows else []) if h not in shared]
    headers.insert(headers.index("loss") + 1 if "loss" in headers else 0, "reliability")
    metric_titles = {c.title: c for c in board.columns}
    rows: list[Row] = []
    gallery: list[Section] = []
    for (_, row), shown in zip(board.table.iterrows(), shown_rows, strict=True):
        run_ids = [r for r in str(row["run_ids"]).split(",") if r]
        anchor = f"row-{run_ids[0]}" if run_ids else ""
        plots = _reliability_plots(board, run_ids, plots_per_row)
        cells = []
        for h in headers:
            if h in metric_titles:
                c = metric_titles[h]
                text = format_cell(row, c, ci=False)
                sort = _sort_value(row[f"{c.key}_mean"])
                cells.append(Cell("num", text, sort, interval_text(row, c)))
            elif h == "reliability":
                cells.append(Cell("plots"))
            else:
                sort = _sort_value(row["rank"] if h == "rank" else shown[h])
                cells.append(Cell("text", shown[h], sort))
        rows.append(Row(cells, plots, anchor, bad=row["n_completed"] == 0))
        if plots:
            heading = f"{row['loss']} · {row['dataset']} · {row['backbone']}"
            gallery.append(Section(anchor, heading, plots))
    return _template().render(
        shift_plot=_shift_plot(board),
        title=title,
        subtitle=" · ".join(
            f"deviations: {v}" if k == "deviations" else v for k, v in shared.items()
        ),
        captions=caption_lines(board),
        headers=headers,
        rows=rows,
        notes=[*run_problem_lines(board), *(str(p) for p in board.problems), *board.notes],
        gallery=gallery,
    )
