"""Every leaderboard published in this repository re-renders byte for byte from its runs.

For each ``leaderboards/<protocol>/v<N>/`` (a folder with ``version.json``): every record
validates against the record schema, and :func:`calibench.leaderboard.versions.verify` renders
the version again from the run folders committed beside it (``leaderboards/<protocol>/runs/``:
their saved predictions and plots) and finds every rendered file identical to the published
one. A change to the rendering code, a metric, an interval or a record that would alter a
published number fails here. (Until a version is published the parameter list is empty.)
A version's ``findings_tables.md`` (the comparisons its FINDINGS.md quotes) must come out of
``scripts/findings_tables.sh`` unchanged, and every decimal number its FINDINGS.md quotes must be
in LEADERBOARD.md, in findings_tables.md or in FINDINGS.md's own list of outside sources.

Bytes reproduce only with the package versions that rendered them (``rendered_with`` in
``version.json``): CI installs those (``.ci/constraints.txt``, checked here against every
version); elsewhere, with other versions, the byte comparison is skipped and says why.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from calibench.cli import main
from calibench.leaderboard.versions import (
    RENDERING_PACKAGES,
    VERSION_FILE,
    rendering_differences,
    verify,
)
from calibench.records import validate_record

REPO = Path(__file__).resolve().parents[2]
ROOT = REPO / "leaderboards"
CONSTRAINTS = REPO / ".ci" / "constraints.txt"
VERSIONS = sorted(p.parent for p in ROOT.glob(f"*/v*/{VERSION_FILE}"))
ids = {"ids": lambda p: f"{p.parent.name}/{p.name}"}


def ci_pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line)
            assert match, f"{CONSTRAINTS}: {line!r} is not name==version"
            pins[match.group(1).lower()] = match.group(2)
    return pins


def test_ci_pins_every_rendering_package() -> None:
    assert set(RENDERING_PACKAGES) <= set(ci_pins())


@pytest.mark.parametrize("version", VERSIONS, **ids)
def test_ci_pins_the_packages_that_rendered_each_version(version: Path) -> None:
    meta = json.loads((version / VERSION_FILE).read_text(encoding="utf-8"))
    pins = ci_pins()
    assert {k: pins.get(k) for k in meta["rendered_with"]} == meta["rendered_with"]


@pytest.mark.parametrize("version", VERSIONS, **ids)
def test_every_published_record_validates(version: Path) -> None:
    records = sorted((version / "records").glob("*/record.json"))
    assert records, f"{version} has no records"
    for path in records:
        validate_record(json.loads(path.read_text(encoding="utf-8")), path)


@pytest.mark.parametrize("version", VERSIONS, **ids)
def test_every_published_version_re_renders_byte_for_byte(version: Path) -> None:
    meta = json.loads((version / VERSION_FILE).read_text(encoding="utf-8"))
    differences = rendering_differences(meta)
    if differences:
        pytest.skip(f"rendered with other package versions: {'; '.join(differences)}")
    assert verify(version, version.parent / "runs") == []


FINDINGS_TABLES = "findings_tables.md"
WITH_TABLES = [v for v in VERSIONS if (v / FINDINGS_TABLES).is_file()]


@pytest.mark.parametrize("version", WITH_TABLES, **ids)
def test_findings_tables_regenerate_from_the_published_records(version: Path) -> None:
    """The comparisons FINDINGS.md quotes come from the records, not from an edited file."""
    out = subprocess.run(
        ["bash", "scripts/findings_tables.sh", version.relative_to(REPO).as_posix()],
        cwd=REPO,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == (version / FINDINGS_TABLES).read_text(encoding="utf-8")


FINDINGS = "FINDINGS.md"
#: FINDINGS.md's last section: the numbers it quotes from outside the version, with their sources.
OUTSIDE_SOURCES = "## Sources outside this version"
DECIMAL = re.compile(r"(?<![\w.])[+\-−]?(\d+\.\d+(?:e-\d+)?)")
WITH_FINDINGS = [v for v in VERSIONS if (v / FINDINGS).is_file()]
TABLE_SOURCES = ("LEADERBOARD.md", FINDINGS_TABLES)


def unsourced_numbers(findings: str, *tables: str) -> list[str]:
    """Decimal numbers of ``findings`` (before its sources section) found in no table and not
    in that section. Signs are ignored (the tables write ``-``, prose ``−``)."""
    body, _, outside = findings.partition(OUTSIDE_SOURCES)
    allowed = set().union(*(set(DECIMAL.findall(t)) for t in (*tables, outside)))
    return sorted(set(DECIMAL.findall(body)) - allowed)


def test_unsourced_numbers_finds_a_number_the_tables_do_not_hold() -> None:
    table = "| ce | 18.27 ± 0.61 | -16.30 pt ▲ (q 4.2e-05) |"
    good = "CE 18.27 %; adafocal −16.30 pt (q 4.2e-05); literature 4.35\n"
    assert unsourced_numbers(good + f"{OUTSIDE_SOURCES}\n- CE 4.35 (a paper)\n", table) == []
    assert unsourced_numbers(good, table) == ["4.35"]
    assert unsourced_numbers("CE 18.72 %", table) == ["18.72"]


@pytest.mark.parametrize("version", WITH_FINDINGS, **ids)
def test_every_number_in_findings_is_in_the_tables_or_a_cited_source(version: Path) -> None:
    """A FINDINGS.md claim quotes the published tables, not a number typed from memory."""
    tables = [(version / name).read_text(encoding="utf-8") for name in TABLE_SOURCES]
    missing = unsourced_numbers((version / FINDINGS).read_text(encoding="utf-8"), *tables)
    assert not missing, (
        f"{version / FINDINGS} quotes {missing}, found neither in {' nor '.join(TABLE_SOURCES)} "
        f"nor under '{OUTSIDE_SOURCES}': copy the number from the table, or cite its source there"
    )


SMALL_V1 = ROOT / "small" / "v1"


def table_cells(markdown: str) -> list[list[str]]:
    """The cells of each row of the Markdown tables in ``markdown`` (header rows included)."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]


@pytest.mark.skipif(not SMALL_V1.is_dir(), reason="small v1 is not published")
def test_readme_results_quote_the_published_small_table() -> None:
    """The README's excerpt (rank, loss, acc, ECE, ECE after TS) matches the published rows."""
    published = table_cells((SMALL_V1 / "LEADERBOARD.md").read_text(encoding="utf-8"))
    head = published[0]
    by_loss = {r[head.index("loss")]: r for r in published[2:]}
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Results", 1)[1].split("\n## ", 1)[0]
    excerpt = table_cells(section)
    columns = excerpt[0]
    assert len(excerpt) > 3, "the README's Results section has no rows of the small table"
    for row in excerpt[2:]:
        quoted = dict(zip(columns, row, strict=True))
        assert {c: by_loss[quoted["loss"]][head.index(c)] for c in columns} == quoted


@pytest.mark.skipif(not SMALL_V1.is_dir(), reason="small v1 is not published")
def test_a_checkout_shows_the_published_table_offline(monkeypatch, capsys) -> None:
    """The newcomer's command: no GPU, no dataset, no network, run from the repository root."""
    monkeypatch.chdir(REPO)
    assert main(["leaderboard", "show", "small"]) == 0
    assert capsys.readouterr().out == (SMALL_V1 / "LEADERBOARD.md").read_text(encoding="utf-8")
