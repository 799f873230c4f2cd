"""Run records: one validated JSON file per finished run, plus its saved test predictions.

Layout, as fixed by the architecture: ``RESULTS/<protocol>/<run_id>/record.json``, beside the
run's checkpoints and plots, and two files that the leaderboard computes every column and
interval from (``np.savez_compressed``, written atomically):

- ``test_predictions.npz``: ``logits`` float32 ``(N, K)``, the test split's **predictive**
  logits ``s = loss.predictive_logits(z)`` (not the raw logits; float32 because float16
  overflows to inf above 65504), and ``labels`` int64 ``(N,)``;
- ``ood_scores.npz``: one float64 ``(N_ood,)`` array per OOD set and score, key
  ``"<ood_name>.<score>"`` (``gaussian.msp``); the ID scores are not saved, they are
  :func:`calibench.metrics.ood_scores` of the test predictive logits;
- ``loss_state.json`` (only for a loss with state, one that defines ``on_epoch_end``): the
  loss's readable state after every epoch, a JSON list of ``{"epoch": e, <buffer>: value,
  ...}`` (:func:`calibench.losses.base.loss_state`); the record keeps the last one under
  ``loss_state.final``.

The record's fields are described by the JSON Schema ``calibench/record.schema.json`` shipped in
the package (schema version :data:`SCHEMA_VERSION`). Writes are atomic: a temporary file in the
same folder, ``fsync``, then ``os.replace``, so a reader sees the old record or the new one, never
half of one. Loading validates against the schema and checks that ``run_id`` is the hash of the
stored spec; a malformed record raises :class:`~calibench.errors.RecordError` naming its path.
Records are parsed as plain JSON (``NaN`` and ``Infinity`` refused) and predictions with
``allow_pickle=False``: nothing in a results folder is ever executed or unpickled.
"""

from __future__ import annotations

import functools
import json
import os
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from calibench.atomic import atomic_write, atomic_write_bytes, atomic_write_json
from calibench.errors import RecordError, UsageError
from calibench.provenance import code_info, env_info
from calibench.spec import RunSpec
from calibench.status import RecordStatus
from calibench.util import to_jsonable, utc_now

__all__ = [
    "LOSS_STATE_FILENAME",
    "OOD_SCORES_FILENAME",
    "PREDICTIONS_FILENAME",
    "RECORD_FILENAME",
    "SCHEMA_VERSION",
    "STATUSES",
    "Predictions",
    "RecordProblem",
    "StoredRecord",
    "build_record",
    "iter_records",
    "load_ood_scores",
    "load_predictions",
    "load_record",
    "record_schema",
    "save_loss_state",
    "save_ood_scores",
    "save_predictions",
    "validate_record",
    "write_record",
]

SCHEMA_VERSION = 2
RECORD_FILENAME = "record.json"
PREDICTIONS_FILENAME = "test_predictions.npz"
OOD_SCORES_FILENAME = "ood_scores.npz"
LOSS_STATE_FILENAME = "loss_state.json"
STATUSES = tuple(s.value for s in RecordStatus)
MAX_RECORD_BYTES = 16 * 2**20

_OLD_SCHEMAS = {
    1: "written by an older calibench whose saved logits are raw (float16, not the loss's "
    "predictive logits) and whose temperature scaling and OOD scores used the raw logits; "
    "re-run it: delete its record.json and run 'calibench run' again (training resumes from "
    "its final checkpoint, so only the evaluation is redone)",
}


# -- schema --------------------------------------------------------------------------------------
@functools.cache
def record_schema() -> dict[str, Any]:
    """The JSON Schema of a record (draft 2020-12), read from the package."""
    text = resources.files("calibench").joinpath("record.schema.json").read_text("utf-8")
    return json.loads(text)


@functools.cache
def _validator() -> Any:
    try:
        import jsonschema
    except ImportError as exc:  # declared as a dependency; only a broken install gets here
        raise RecordError(
            "validating run records needs the 'jsonschema' package: pip install jsonschema"
        ) from exc
    cls = jsonschema.validators.validator_for(record_schema())
    cls.check_schema(record_schema())
    return cls(record_schema())


def validate_record(record: Mapping[str, Any], path: str | os.PathLike[str] | None = None) -> None:
    """Raise :class:`RecordError` unless ``record`` matches the schema and its own run id.

    Checks beyond the schema: ``run_id`` is the hash of ``spec`` and ``deviations`` equals
    ``spec.deviations``.
    """
    where = f"{path}: " if path is not None else ""
    if not isinstance(record, Mapping):
        raise RecordError(f"{where}a run record must be a JSON object, got {type(record).__name__}")
    version = record.get("schema_version")
    if isinstance(version, int) and version in _OLD_SCHEMAS:
        raise RecordError(f"{where}schema_version {version}: {_OLD_SCHEMAS[version]}")
    if version != SCHEMA_VERSION:
        raise RecordError(
            f"{where}unsupported schema_version {version!r}; this calibench reads version "
            f"{SCHEMA_VERSION}. Upgrade calibench or re-run the evaluation."
        )
    errors = list(_validator().iter_errors(record))
    if errors:
        from jsonschema.exceptions import best_match

        err = best_match(errors)
        field = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise RecordError(f"{where}invalid record at '{field}': {err.message}{more}")
    try:
        spec = RunSpec.from_dict(dict(record["spec"]))
    except (TypeError, ValueError) as exc:
        raise RecordError(f"{where}invalid record spec: {exc}") from None
    if spec.run_id() != record["run_id"]:
        raise RecordError(
            f"{where}run_id {record['run_id']} is not the hash of the stored spec "
            f"({spec.run_id()}); the record was edited or written by a different calibench"
        )
    if dict(record["deviations"]) != dict(record["spec"]["deviations"]):
        raise RecordError(f"{where}'deviations' differs from 'spec.deviations'")


# -- building ------------------------------------------------------------------------------------
def _clean(value: Any, where: str) -> Any:
    try:
        return to_jsonable(value, where=where)
    except TypeError as exc:
        raise RecordError(f"record field {exc}") from None


def _loss_source(loss: str) -> dict[str, Any]:
    from calibench.registry import get_registry

    return get_registry("losses").get(loss).source.as_dict()


def build_record(
    spec: RunSpec,
    *,
    status: str,
    reason: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    loss_source: Mapping[str, Any] | None = None,
    conventions: Mapping[str, Any] | None = None,
    timing: Mapping[str, Any] | None = None,
    epoch: int | None = None,
    device: str | None = None,
    artifacts: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
    history: Sequence[float] | None = None,
    training: Mapping[str, Any] | None = None,
    loss_state: Mapping[str, Any] | None = None,
    code: Mapping[str, Any] | None = None,
    env: Mapping[str, Any] | None = None,
    created_at: str | None = None,
) -> dict[str, Any]:
    """Assemble and validate the record of one run.

    ``metrics`` has the shape of :class:`calibench.evaluation.Evaluation`'s ``metrics``:
    ``{"val": {...}, "test": {"acc", "ece", "adaece", "cwece", "smece", "nll", "brier"},
    "test_ts": {"temperature", ...} | None, "ood": {set: {score: {"auroc", "aupr_in",
    "aupr_out", "fpr95"}}}, "shift": {...}}`` (``shift`` optional: the grid of
    :func:`calibench.evaluation.evaluate_shift`), every value a fraction; non-finite values
    become null. Pass the
    evaluation's ``conventions`` (``{}`` for a run that was not evaluated). ``loss_source`` defaults
    to the loss registry entry's ``source.as_dict()``; ``code`` / ``env`` to :func:`code_info` /
    :func:`env_info` (``device`` names the accelerator); ``timing`` holds ``train_seconds`` and
    ``img_per_s`` (null when unknown); ``data`` the dataset's provenance; ``history`` the
    per-epoch training loss. ``training`` (given for a run that trained) is
    ``{"val_used_in_training": bool, "precision": "fp32" | "bf16"}`` and brings the ``loss_state`` field with it: ``{"final":
    {...}, "history": save_loss_state(...)}`` for a loss with state, null for a stateless one
    (records written before these fields have neither). ``artifacts`` names files beside the record, relative to its
    folder: ``{"predictions": save_predictions(...), "ood_scores": save_ood_scores(...) or None,
    "plots": {"reliability": "reliability.png"}}``.
    A ``diverged`` or ``failed`` run needs a ``reason``. Raises :class:`RecordError` if the
    result does not validate.
    """
    arts: dict[str, Any] = {
        "predictions": None,
        "ood_scores": None,
        "plots": {},
        **dict(artifacts or {}),
    }
    if status not in STATUSES:
        raise RecordError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    if status != RecordStatus.COMPLETED and not reason:
        raise RecordError(f"a {status} run needs a reason (what went wrong)")
    if status == RecordStatus.COMPLETED:
        reason = None
    timing = {"train_seconds": None, "img_per_s": None, **dict(timing or {})}
    record = {
        "schema_version": SCHEMA_VERSION,
        "run_id": spec.run_id(),
        "status": status,
        "reason": reason,
        "spec": spec.to_dict(),
        "loss": {
            "name": spec.loss,
            "label": spec.loss_label,
            "params": dict(spec.loss_params),
            "source": dict(loss_source) if loss_source is not None else _loss_source(spec.loss),
        },
        "metrics": dict(metrics or {}),
        "conventions": dict(conventions or {}),
        "code": dict(code) if code is not None else code_info(),
        "env": dict(env) if env is not None else env_info(device),
        "timing": timing,
        "epoch": epoch,
        "deviations": dict(spec.deviations),
        "created_at": created_at or utc_now(),
        "artifacts": arts,
    }
    if data is not None:
        record["data"] = dict(data)
    if history is not None:
        record["history"] = list(history)
    if training is not None:
        record["training"] = dict(training)
        record["loss_state"] = loss_state
    elif loss_state is not None:
        raise RecordError("a record with a loss_state needs training (how the val split was used)")
    record = _clean(record, "record")
    validate_record(record)
    return record


# -- writing and reading -------------------------------------------------------------------------
def write_record(path: str | os.PathLike[str], record: Mapping[str, Any]) -> Path:
    """Validate ``record`` and write it atomically; ``path`` is a ``.json`` file or a run folder.

    Returns the file written (``<run_dir>/record.json`` when given a folder).
    """
    target = Path(path)
    if target.suffix != ".json":
        target = target / RECORD_FILENAME
    record = _clean(record, "record")
    validate_record(record, target)
    payload = json.dumps(record, indent=2, sort_keys=False, allow_nan=False) + "\n"
    atomic_write_bytes(target, payload.encode("utf-8"))
    return target


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name} (write null for a missing number)")


def load_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate one record; a run folder means its ``record.json``.

    Raises :class:`RecordError` with the path for anything malformed: unreadable, too large,
    not JSON, NaN/Infinity constants, schema violations, a run id that is not the spec's hash.
    """
    p = Path(path)
    if p.is_dir():
        p = p / RECORD_FILENAME
    try:
        size = p.stat().st_size
        if size > MAX_RECORD_BYTES:
            raise RecordError(f"{p}: {size} bytes is too large for a run record")
        text = p.read_text(encoding="utf-8")
    except RecordError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"{p}: cannot read record: {exc}") from None
    try:
        record = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise RecordError(f"{p}: not valid JSON: {exc}") from None
    validate_record(record, p)
    return record


@dataclass(frozen=True)
class StoredRecord:
    """A validated record and the file it was read from."""

    path: Path
    data: dict[str, Any]

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    @property
    def spec(self) -> RunSpec:
        return RunSpec.from_dict(self.data["spec"])

    def artifact(self, relative: str | None) -> Path | None:
        """The path of an artifact named in the record, if it exists inside the run folder."""
        if not relative:
            return None
        run_dir = self.run_dir.resolve()
        candidate = (run_dir / relative).resolve()
        if run_dir not in candidate.parents or not candidate.is_file():
            return None
        return candidate


@dataclass(frozen=True)
class RecordProblem:
    """A record file that was skipped, and why."""

    path: Path
    message: str

    def __str__(self) -> str:
        return (
            self.message
            if self.message.startswith(str(self.path))
            else f"{self.path}: {self.message}"
        )


def _record_files(results_dir: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(results_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # skip tmp/hidden
        if RECORD_FILENAME in filenames:
            yield Path(dirpath) / RECORD_FILENAME


def iter_records(
    results_dir: str | os.PathLike[str],
) -> tuple[list[StoredRecord], list[RecordProblem]]:
    """Every valid ``record.json`` under ``results_dir``, and a problem for each skipped one.

    Malformed records and second copies of a run id are reported, never raised, so one bad file
    cannot hide the rest. Raises :class:`UsageError` only if ``results_dir`` is not a folder.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise UsageError(
            f"results folder {root} does not exist or is not a folder; "
            "pass the --results folder that 'calibench run' wrote to"
        )
    records: list[StoredRecord] = []
    problems: list[RecordProblem] = []
    seen: dict[str, Path] = {}
    for path in _record_files(root):
        try:
            data = load_record(path)
        except RecordError as exc:
            problems.append(RecordProblem(path, str(exc)))
            continue
        first = seen.get(data["run_id"])
        if first is not None:
            problems.append(
                RecordProblem(path, f"duplicate of run {data['run_id']} already read from {first}")
            )
            continue
        seen[data["run_id"]] = path
        records.append(StoredRecord(path, data))
    return records, problems


# -- saved predictions and OOD scores, read by the leaderboard ----------------------------------
@dataclass(frozen=True)
class Predictions:
    """Saved test predictions of one run: predictive ``logits`` (N, K) float32, ``labels`` (N,)
    int64."""

    logits: np.ndarray
    labels: np.ndarray


def save_loss_state(run_dir: str | os.PathLike[str], history: Sequence[Mapping[str, Any]]) -> str:
    """Write the loss's state history (one JSON object per epoch) to ``loss_state.json``,
    atomically, beside the record. Returns the file name for the record's ``loss_state.history``.
    """
    payload = _clean([dict(entry) for entry in history], "loss state history")
    atomic_write_json(Path(run_dir) / LOSS_STATE_FILENAME, payload, allow_nan=False)
    return LOSS_STATE_FILENAME


def save_predictions(run_dir: str | os.PathLike[str], logits: Any, labels: Any) -> str:
    """Save the test **predictive** ``logits`` (as float32) and ``labels`` (int64), compressed,
    atomically, beside the record.

    Accepts numpy arrays or torch tensors (moved to the CPU). Raises :class:`RecordError` for
    mismatched shapes or logits that are not finite in float32. Returns the file name, relative
    to ``run_dir``, for the record's ``artifacts.predictions``.
    """
    logits_np = _to_numpy(logits)
    labels_np = _to_numpy(labels)
    if logits_np.ndim != 2 or labels_np.shape != (logits_np.shape[0],):
        raise RecordError(
            f"predictions must be logits (N, K) and labels (N,), got {logits_np.shape} and "
            f"{labels_np.shape}"
        )
    if not np.issubdtype(logits_np.dtype, np.floating):
        raise RecordError(f"predictive logits must be floating point, got {logits_np.dtype}")
    if not np.issubdtype(labels_np.dtype, np.integer):
        raise RecordError(f"labels must be integers, got {labels_np.dtype}")
    with np.errstate(over="ignore"):
        logits32 = logits_np.astype(np.float32)
    if not np.isfinite(logits32).all():
        raise RecordError("predictive logits must be finite in float32 (|s| < 3.4e38)")
    target = Path(run_dir) / PREDICTIONS_FILENAME
    atomic_write(
        target,
        lambda fh: np.savez_compressed(fh, logits=logits32, labels=labels_np.astype(np.int64)),
    )
    return PREDICTIONS_FILENAME


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


#: What numpy raises for a damaged ``.npz`` (truncated zip, corrupt stream, bad header).
_UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


def load_predictions(path: str | os.PathLike[str]) -> Predictions:
    """Read a ``test_predictions.npz`` (no pickle); :class:`RecordError` if malformed.

    The logits must be float32 (a float16 file was written by calibench before record schema
    2, and holds raw logits).
    """
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as npz:
            logits = np.asarray(npz["logits"])
            labels = np.asarray(npz["labels"])
    except _UNREADABLE as exc:
        raise RecordError(f"{p}: cannot read saved predictions: {exc}") from None
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise RecordError(f"{p}: logits {logits.shape} and labels {labels.shape} do not match")
    if logits.shape[0] < 1 or logits.shape[1] < 2:
        raise RecordError(f"{p}: logits {logits.shape} need at least one row and two classes")
    if not np.issubdtype(labels.dtype, np.integer) or not np.issubdtype(logits.dtype, np.floating):
        raise RecordError(f"{p}: logits must be floating point and labels integer")
    if logits.dtype != np.float32:
        raise RecordError(
            f"{p}: logits are {logits.dtype}, not float32; a float16 file was written by an "
            "older calibench and holds raw logits, not predictive logits: re-run the evaluation"
        )
    if not np.isfinite(logits).all():
        raise RecordError(f"{p}: saved predictive logits contain NaN or inf")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise RecordError(
            f"{p}: labels lie in [{labels.min()}, {labels.max()}], outside [0, {logits.shape[1]})"
        )
    return Predictions(logits=logits, labels=labels.astype(np.int64))


def _check_ood_key(ood_name: str, score: str) -> str:
    if not isinstance(ood_name, str) or not ood_name or "/" in ood_name:
        raise RecordError(f"OOD set name {ood_name!r} cannot name a saved score array")
    if not isinstance(score, str) or not score or "." in score or "/" in score:
        raise RecordError(f"OOD score name {score!r} cannot name a saved score array")
    return f"{ood_name}.{score}"


def save_ood_scores(
    run_dir: str | os.PathLike[str], scores: Mapping[str, Mapping[str, Any]]
) -> str:
    """Save the per-image OOD scores ``{ood_name: {score: (N_ood,) array}}`` as float64,
    compressed, atomically, beside the record; key ``"<ood_name>.<score>"``.

    Accepts numpy arrays or torch tensors. Raises :class:`RecordError` when there is nothing
    to save, an array is not 1-D, empty or not finite, or the scores of one set differ in
    length. Returns the file name for the record's ``artifacts.ood_scores``.
    """
    arrays: dict[str, np.ndarray] = {}
    for ood_name, per_score in scores.items():
        sizes = set()
        for score, values in per_score.items():
            key = _check_ood_key(ood_name, score)
            arr = _to_numpy(values)
            if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.number):
                raise RecordError(
                    f"OOD scores {key} must be a non-empty 1-D numeric array, got "
                    f"{arr.dtype} {arr.shape}"
                )
            arr = arr.astype(np.float64)
            if not np.isfinite(arr).all():
                raise RecordError(f"OOD scores {key} contain NaN or inf")
            sizes.add(arr.size)
            arrays[key] = arr
        if len(sizes) > 1:
            raise RecordError(f"the scores of OOD set {ood_name} differ in length: {sorted(sizes)}")
    if not arrays:
        raise RecordError("no OOD scores to save; record artifacts.ood_scores as null instead")
    target = Path(run_dir) / OOD_SCORES_FILENAME
    atomic_write(target, lambda fh: np.savez_compressed(fh, **arrays))
    return OOD_SCORES_FILENAME


def load_ood_scores(path: str | os.PathLike[str]) -> dict[str, dict[str, np.ndarray]]:
    """Read an ``ood_scores.npz`` (no pickle) as ``{ood_name: {score: (N_ood,) float64}}``.

    Keys split at their last dot. Raises :class:`RecordError` if the file is unreadable or
    empty, a key is not ``"<ood_name>.<score>"``, an array is not a non-empty finite 1-D float64
    array, or the scores of one set differ in length.
    """
    p = Path(path)
    out: dict[str, dict[str, np.ndarray]] = {}
    try:
        with np.load(p, allow_pickle=False) as npz:
            for key in npz.files:
                ood_name, dot, score = key.rpartition(".")
                if not dot or not ood_name or not score:
                    raise RecordError(f"{p}: key {key!r} is not '<ood_name>.<score>'")
                arr = np.asarray(npz[key])
                if arr.dtype != np.float64 or arr.ndim != 1 or arr.size == 0:
                    raise RecordError(
                        f"{p}: {key} must be a non-empty 1-D float64 array, got {arr.dtype} "
                        f"{arr.shape}"
                    )
                if not np.isfinite(arr).all():
                    raise RecordError(f"{p}: {key} contains NaN or inf")
                out.setdefault(ood_name, {})[score] = arr
    except RecordError:
        raise
    except _UNREADABLE as exc:
        raise RecordError(f"{p}: cannot read saved OOD scores: {exc}") from None
    if not out:
        raise RecordError(f"{p}: holds no OOD scores")
    for ood_name, per_score in out.items():
        if len({a.size for a in per_score.values()}) > 1:
            raise RecordError(f"{p}: the scores of OOD set {ood_name} differ in length")
    return out
