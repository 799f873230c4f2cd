"""Every leaderboard published in this repository re-renders byte for byte from its runs.

For each ``leaderboards/<protocol>/v<N>/`` (a folder with ``version.json``): every record
validates against the record schema, and :func:`calibench.leaderboard.versions.verify` renders
the version again from the run folders committed beside it (``leaderboards/<protocol>/runs/``:
their saved predictions and plots) and finds every rendered file identical to the published
one. A change to the rendering code, a metric, an interval or a record that would alter a
published number fails here. (Until a version is published the parameter list is empty.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from calibench.leaderboard.versions import VERSION_FILE, verify
from calibench.records import validate_record

ROOT = Path(__file__).resolve().parents[2] / "leaderboards"
VERSIONS = sorted(p.parent for p in ROOT.glob(f"*/v*/{VERSION_FILE}"))


@pytest.mark.parametrize("version", VERSIONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_published_record_validates(version: Path) -> None:
    records = sorted((version / "records").glob("*/record.json"))
    assert records, f"{version} has no records"
    for path in records:
        validate_record(json.loads(path.read_text(encoding="utf-8")), path)


@pytest.mark.parametrize("version", VERSIONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_published_version_re_renders_byte_for_byte(version: Path) -> None:
    assert verify(version, version.parent / "runs") == []
