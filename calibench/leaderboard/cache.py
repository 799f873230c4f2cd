"""Each run's leaderboard statistics, computed once and kept in its folder.

A run's :class:`~calibench.leaderboard.significance.RunEvidence` (its metric values and bootstrap
replicates, :func:`~calibench.leaderboard.significance.run_evidence`) costs seconds per 10k-image
run; the leaderboard of a sweep would redo it for every run at every rendering. The first
rendering writes it to ``<run folder>/leaderboard_cache.npz`` (:data:`CACHE_FILENAME`, written
atomically, no pickle); later renderings read it back when its key matches, which is

- ``version``: :data:`CACHE_VERSION` (raised whenever the computation of the statistics changes)
  and the SHA-256 of :data:`~calibench.metrics.intervals.INTERVAL_CONVENTION`;
- ``record``: the SHA-256 of the bytes of ``record.json`` (temperature, ``n_bins``, artifacts);
- ``files``: the SHA-256 of each file the record's ``artifacts`` names (plots left out), or
  ``null`` for one that is absent;
- ``inputs``: what the leaderboard asks for beside the files (the OOD sets and score), and
  ``n_boot`` and ``seed`` of the resampling.

The cache is written on first read, by the leaderboard (the runner never imports it: records
flow one way, ``tests/test_architecture.py``). A cache whose key differs, or that cannot be read (truncated, not an ``.npz``, not ours), is
recomputed and overwritten. Values only (``n_boot = 0``) are served by any cache of the same
record, files and inputs, since they do not depend on the resampling. Replicates are stored
as the float64 arrays that were computed and values as float64, so a leaderboard built from the
cache is byte-identical to one built without it. A folder where the cache cannot be written
(a read-only mount, a published leaderboard) is computed in memory; the leaderboard logs one
line on stderr, outside its output. Published versions copy only ``record.json``
(:mod:`calibench.leaderboard.versions`), so no cache enters one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibench.atomic import atomic_write
from calibench.leaderboard.significance import Replicates, RunEvidence
from calibench.metrics.intervals import (
    INTERVAL_CONVENTION,
    BinnedReplicates,
    PercentileReplicates,
)
from calibench.records import StoredRecord

__all__ = ["CACHE_FILENAME", "CACHE_VERSION", "EvidenceCache", "evidence_key"]

CACHE_FILENAME = "leaderboard_cache.npz"
CACHE_VERSION = 1
"""Raised whenever :func:`~calibench.leaderboard.significance.run_evidence` computes differently."""

_BINNED_FIELDS = ("deviation", "linear", "plugin")
_UNREADABLE = (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, zlib.error)
_log = logging.getLogger(__name__)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(2**20):
            digest.update(chunk)
    return digest.hexdigest()


def _artifact_names(artifacts: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for name, value in sorted(artifacts.items()):
        if name != "plots" and isinstance(value, str):
            yield name, value


def evidence_key(record: StoredRecord, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The key of ``record``'s statistics for the leaderboard's ``inputs`` (JSON-able).

    ``inputs`` holds ``n_boot`` and ``seed`` and whatever else the statistics depend on beside
    the record and its files (OOD sets, score).
    """
    files = {}
    for name, relative in _artifact_names(record.data.get("artifacts") or {}):
        path = record.artifact(relative)
        files[name] = None if path is None else _sha256(path)
    return {
        "version": CACHE_VERSION,
        "convention": hashlib.sha256(INTERVAL_CONVENTION.encode()).hexdigest(),
        "record": hashlib.sha256(record.path.read_bytes()).hexdigest(),
        "files": files,
        "inputs": json.loads(json.dumps(dict(inputs), sort_keys=True)),
    }


def _encode(key: Mapping[str, Any], evidence: RunEvidence) -> dict[str, np.ndarray]:
    names = sorted(evidence.points)
    arrays = {"points": np.asarray([evidence.points[k] for k in names], dtype=np.float64)}
    kinds: dict[str, list[Any]] = {}
    for k, rep in sorted(evidence.replicates.items()):
        if isinstance(rep, BinnedReplicates):
            kinds[k] = ["binned", float(rep.point)]
            arrays.update({f"{k}.{f}": np.asarray(getattr(rep, f)) for f in _BINNED_FIELDS})
        else:
            kinds[k] = ["percentile", float(rep.point)]
            arrays[f"{k}.values"] = np.asarray(rep.values)
    meta = {
        "key": key,
        "points": names,
        "replicates": kinds,
        "streams": {k: list(v) for k, v in evidence.streams.items()},
    }
    arrays["meta"] = np.asarray(json.dumps(meta, sort_keys=True))
    return arrays


def _as_tuple(value: Any) -> Any:
    """JSON's lists back into the tuples :attr:`RunEvidence.streams` holds (hashable)."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list) else value


def _decode(npz: Any, meta: Mapping[str, Any], values_only: bool) -> RunEvidence:
    points = dict(zip(meta["points"], (float(v) for v in npz["points"]), strict=True))
    if values_only:
        return RunEvidence(points)
    reps: dict[str, Replicates] = {}
    for k, (kind, point) in meta["replicates"].items():
        if kind == "binned":
            reps[k] = BinnedReplicates(float(point), *(npz[f"{k}.{f}"] for f in _BINNED_FIELDS))
        elif kind == "percentile":
            reps[k] = PercentileReplicates(float(point), npz[f"{k}.values"])
        else:
            raise ValueError(f"unknown replicates kind {kind!r}")
    streams = {k: _as_tuple(v) for k, v in meta["streams"].items()}
    return RunEvidence(points, reps, streams)


def _matches(cached: Mapping[str, Any], key: Mapping[str, Any]) -> bool | None:
    """``True``: the cache serves ``key`` whole; ``None``: its values only; ``False``: neither."""
    if cached == key:
        return True
    if key["inputs"]["n_boot"] != 0:
        return False
    strip = ("n_boot", "seed")

    def rest(k: Mapping[str, Any]) -> dict[str, Any]:
        inputs = {n: v for n, v in k["inputs"].items() if n not in strip}
        return {**k, "inputs": inputs}

    return None if rest(cached) == rest(key) else False


def load(path: Path, key: Mapping[str, Any]) -> RunEvidence | None:
    """The cached statistics at ``path`` if its key serves ``key``; ``None`` otherwise (also for
    a missing, unreadable or malformed file)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"][()]))
            match = _matches(meta["key"], key)
            if match is False:
                return None
            return _decode(npz, meta, values_only=match is None)
    except FileNotFoundError:
        return None
    except _UNREADABLE:
        return None


def save(path: Path, key: Mapping[str, Any], evidence: RunEvidence) -> None:
    """Write ``evidence`` under ``key`` to ``path`` atomically (``OSError`` if it cannot)."""
    arrays = _encode(key, evidence)
    atomic_write(path, lambda fh: np.savez(fh, **arrays))


@dataclass
class EvidenceCache:
    """The cache of one leaderboard build: ``inputs`` as in :func:`evidence_key`.

    ``hits``, ``computed`` and ``unwritable`` count the runs served from a cache, computed, and
    computed but not cached (the folder refused the write); :meth:`report` logs the last once.
    """

    inputs: Mapping[str, Any]
    hits: int = 0
    computed: int = 0
    unwritable: list[tuple[Path, str]] = field(default_factory=list)

    def get(
        self, record: StoredRecord, compute: Callable[[], RunEvidence | None]
    ) -> RunEvidence | None:
        """``record``'s statistics from its cache, or ``compute()``'d and cached.

        A ``None`` from ``compute`` (no saved predictions) is not cached; errors of ``compute``
        propagate and nothing is written.
        """
        try:
            key = evidence_key(record, self.inputs)
        except OSError:  # an unreadable file: the loaders of compute() say so
            self.computed += 1
            return compute()
        path = record.run_dir / CACHE_FILENAME
        found = load(path, key)
        if found is not None:
            self.hits += 1
            return found
        evidence = compute()
        self.computed += 1
        if evidence is not None:
            try:
                save(path, key, evidence)
            except OSError as exc:
                self.unwritable.append((path, f"{type(exc).__name__}: {exc.strerror or exc}"))
        return evidence

    def report(self) -> None:
        """Log one line if some caches could not be written."""
        if self.unwritable:
            path, why = self.unwritable[0]
            _log.warning(
                "note: %d run folder(s) refused the leaderboard cache (first: %s: %s); their "
                "statistics were computed in memory",
                len(self.unwritable),
                path,
                why,
            )
