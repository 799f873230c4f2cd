"""Execute one run: lock its folder, train (resuming from checkpoints), evaluate, write the record.

:func:`execute_run` is what every executor calls, in-process, in a worker process, in a Ray task
or in a SLURM job. It never raises for a failed run: a training or evaluation error becomes a
``failed`` record (reason in the record, traceback in ``logs/``), a diverged run a ``diverged``
record, and the sweep goes on. Only an interruption (Ctrl-C, a preemption signal) propagates,
leaving the latest checkpoints in place for the next attempt.

:func:`train_and_record` is the one seam to the training and evaluation code (imported lazily,
so planning a sweep imports no torch): train (resuming) -> evaluate with the protocol's eval
settings -> save the predictions and OOD scores (and, for a loss with state, its state after
every epoch in ``loss_state.json``) -> write ``record.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from calibench.atomic import atomic_write_json
from calibench.errors import UsageError
from calibench.runner.plan import LOCK, LOGS, PROGRESS, SPEC, PlannedRun, has_checkpoint, plan_run
from calibench.spec import RunSpec
from calibench.status import Action, Outcome, RecordStatus, RunState, next_action
from calibench.training import CHECKPOINT_EVERY_S
from calibench.training.progress import TrainCallback
from calibench.util import utc_now


@dataclass
class RunOutcome:
    """What happened to one run in this invocation."""

    run_id: str
    label: str
    status: Outcome
    reason: str = ""
    seconds: float = 0.0
    resumed: bool = False
    epochs: int | None = None
    img_per_s: float | None = None

    def __post_init__(self) -> None:
        self.status = Outcome(self.status)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe(spec: RunSpec) -> str:
    """``focal(gamma=2) resnet20 cifar10 seed 0``."""
    return f"{spec.loss_label} {spec.backbone} {spec.dataset} seed {spec.seed}"


def skipped(run: PlannedRun) -> RunOutcome:
    """The outcome of a run that :func:`~calibench.status.next_action` skips, and why."""
    if run.state is RunState.DONE:
        reason = "already completed"
    else:
        reason = "diverged earlier (rerun with --retry-diverged)"
        reason += f": {run.reason}" if run.reason else ""
    return RunOutcome(run.run_id, describe(run.spec), Outcome.SKIPPED, reason)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ProgressWriter(TrainCallback):
    """The trainer's progress callback (a :class:`~calibench.training.progress.TrainCallback`):
    writes ``progress.json`` atomically, at most once every ``interval_s`` and at each epoch end,
    for the live view, whichever process or node the run is on."""

    def __init__(self, directory: Path, spec: RunSpec, interval_s: float = 1.0) -> None:
        self.path = directory / PROGRESS
        self.state: dict[str, Any] = {
            "run_id": directory.name,
            "label": describe(spec),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "phase": "starting",
        }
        self.interval_s = interval_s
        self._last_write = 0.0
        self._t0 = time.monotonic()
        self._steps_done = 0
        self._batch_size = 0

    def on_train_start(
        self, run: str, start_epoch: int, epochs: int, steps_per_epoch: int, batch_size: int
    ) -> None:
        self._t0 = time.monotonic()
        self._steps_done = 0
        self._batch_size = batch_size
        self.state.update(
            phase="train",
            resumed_from_epoch=start_epoch,
            epoch=min(start_epoch + 1, epochs),
            epochs=epochs,
            step=0,
            steps=steps_per_epoch,
        )
        self.write()

    def on_step(self, epoch: int, step: int, steps: int) -> None:
        self._steps_done += 1
        self.state.update(epoch=epoch, step=step, steps=steps)
        if time.monotonic() - self._last_write >= self.interval_s:
            elapsed = time.monotonic() - self._t0
            if elapsed > 0 and self._batch_size:
                self.state["img_per_s"] = self._steps_done * self._batch_size / elapsed
            self.write()

    def on_epoch_end(self, epoch: int, epochs: int, loss: float, img_per_s: float) -> None:
        self.state.update(epoch=epoch, epochs=epochs, img_per_s=img_per_s)
        if self.state.get("steps"):
            self.state["step"] = self.state["steps"]
        if loss == loss and abs(loss) != float("inf"):
            self.state["loss"] = loss
        self.write()

    def on_train_end(self, status: RecordStatus, epoch: int) -> None:
        phase = "evaluate" if status == RecordStatus.COMPLETED else str(status)
        self.state.update(phase=phase, epoch=epoch)
        self.write()

    def eta_seconds(self) -> float | None:
        """Remaining steps of this attempt at the rate seen so far in this attempt."""
        s = self.state
        if s.get("phase") != "train" or not self._steps_done or not s.get("steps"):
            return None
        remaining = (s["epochs"] - s["epoch"]) * s["steps"] + (s["steps"] - s["step"])
        return remaining * (time.monotonic() - self._t0) / self._steps_done

    def write(self) -> None:
        self._last_write = time.monotonic()
        payload = {**self.state, "eta_s": self.eta_seconds(), "updated": time.time()}
        with contextlib.suppress(OSError):  # progress is best effort; never fail a run over it
            atomic_write_json(self.path, payload)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _log_attempt(directory: Path, **fields: Any) -> None:
    logs = directory / LOGS
    logs.mkdir(parents=True, exist_ok=True)
    line = json.dumps(
        {"time": utc_now("seconds"), "host": socket.gethostname(), "pid": os.getpid(), **fields}
    )
    with open(logs / "attempts.jsonl", "a") as f:  # one writer at a time: we hold the run's lock
        f.write(line + "\n")


def execute_run(
    spec: RunSpec,
    results_dir: Path | str,
    device: str = "auto",
    data_root: Path | str | None = None,
    *,
    retry_diverged: bool = False,
    compile: bool = False,
    threads: int | None = None,
    checkpoint_every: float = CHECKPOINT_EVERY_S,
) -> RunOutcome:
    """Train, evaluate and record one run; idempotent and safe to call from concurrent workers.

    - a completed record -> ``skipped`` at once;
    - a diverged record -> ``skipped`` unless ``retry_diverged``;
    - another worker holds the run's lock -> ``skipped`` ("running elsewhere");
    - checkpoints in ``checkpoints/`` -> the trainer resumes from the latest one.

    ``threads`` sets torch's intra-op CPU threads for the run: CPU results are bit-identical
    across processes and executors only for the same thread count (the record's
    ``timing.cpu_threads`` says which). ``checkpoint_every``: seconds between the trainer's
    checkpoints (an execution setting, not part of the spec).
    """
    from filelock import FileLock, Timeout

    run = plan_run(spec, results_dir)
    if next_action(run.state, retry_diverged) is Action.SKIP:
        return skipped(run)
    directory, label = run.run_dir, describe(spec)
    directory.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(directory / LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return RunOutcome(directory.name, label, Outcome.SKIPPED, "running in another worker")
    try:
        run = plan_run(spec, results_dir)  # it may have finished while we waited
        if next_action(run.state, retry_diverged) is Action.SKIP:
            return skipped(run)
        if threads:
            import torch

            torch.set_num_threads(threads)
        return _execute_locked(spec, directory, label, device, data_root, compile, checkpoint_every)
    finally:
        lock.release()


def _execute_locked(
    spec: RunSpec,
    directory: Path,
    label: str,
    device: str,
    data_root: Path | str | None,
    compile: bool,
    checkpoint_every: float = CHECKPOINT_EVERY_S,
) -> RunOutcome:
    resumed = has_checkpoint(directory)
    atomic_write_json(directory / SPEC, spec.to_dict())
    _log_attempt(directory, event="start", resumed=resumed, device=device)
    progress = ProgressWriter(directory, spec)
    progress.write()
    start = time.monotonic()
    try:
        result = train_and_record(
            spec,
            directory,
            device=device,
            data_root=data_root,
            compile=compile,
            progress=progress,
            checkpoint_every=checkpoint_every,
        )
    except KeyboardInterrupt as exc:  # Ctrl-C or a stop signal: resumable, not a failure
        with contextlib.suppress(OSError):
            _log_attempt(directory, event="interrupted", reason=_one_line(exc))
        raise
    except Exception as exc:
        reason = _one_line(exc)
        log = directory / LOGS / f"error-{int(time.time())}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"{label}\n{reason}\n\n{traceback.format_exc()}")
        try:
            write_failed_record(spec, directory, reason=reason, log=str(log.relative_to(directory)))
        except Exception as record_exc:  # the run's outcome still reaches the summary
            reason += f" (and its failed record could not be written: {_one_line(record_exc)})"
        _log_attempt(directory, event=Outcome.FAILED, reason=reason)
        return RunOutcome(
            directory.name, label, Outcome.FAILED, reason, time.monotonic() - start, resumed
        )
    finally:
        progress.remove()
    _log_attempt(directory, event=result.status, epochs=result.epochs)
    return dataclasses.replace(
        result, seconds=time.monotonic() - start, resumed=resumed or result.resumed
    )


def train_and_record(
    spec: RunSpec,
    directory: Path,
    *,
    device: str,
    data_root: Path | str | None,
    compile: bool,
    progress: TrainCallback | None,
    checkpoint_every: float = CHECKPOINT_EVERY_S,
) -> RunOutcome:
    """Train (resuming), then evaluate and write ``record.json``; or write a diverged record.

    Returns the run's outcome without ``seconds`` (the caller times the whole attempt).
    """
    import torch

    from calibench import records
    from calibench.losses.base import loss_state
    from calibench.training.trainer import train

    result = train(
        spec,
        directory,
        device=device,
        data_root=data_root,
        compile=compile,
        progress=progress,
        checkpoint_every=checkpoint_every,
    )
    stateful = callable(getattr(result.loss, "on_epoch_end", None))
    common = {
        "epoch": result.epoch,
        "history": result.history,
        "timing": {**result.timing, "cpu_threads": torch.get_num_threads()},
        "device": "cpu" if result.device.startswith("cpu") else None,  # None: the GPU's name
        "data": result.dataset.provenance,
        "training": {"val_used_in_training": stateful, "precision": result.precision},
        "loss_state": (
            {
                "final": loss_state(result.loss),
                "history": records.save_loss_state(directory, result.loss_history),
            }
            if stateful
            else None
        ),
    }
    outcome = RunOutcome(
        directory.name,
        describe(spec),
        Outcome.COMPLETED,
        epochs=result.epoch,
        img_per_s=result.timing.get("img_per_s"),
        resumed=result.resumed_from > 0,
    )
    if result.status == RecordStatus.DIVERGED:
        reason = f"non-finite training loss ({result.diverged_loss}) at epoch {result.epoch}"
        write_status_record(spec, directory, RecordStatus.DIVERGED, reason, **common)
        return dataclasses.replace(outcome, status=Outcome.DIVERGED, reason=reason)
    evaluation = _evaluate(result, spec, directory, data_root)
    artifacts = {
        "predictions": records.save_predictions(
            directory, evaluation.test_predictive_logits, evaluation.test_labels
        ),
        "ood_scores": (
            records.save_ood_scores(directory, evaluation.ood_scores)
            if evaluation.ood_scores
            else None
        ),
        "plots": {
            name: Path(path).resolve().relative_to(directory.resolve()).as_posix()
            for name, path in evaluation.plots.items()
        },
    }
    record = records.build_record(
        spec,
        status=RecordStatus.COMPLETED,
        metrics=record_metrics(evaluation.metrics, result.protocol.eval.temperature_scaling),
        conventions={
            **evaluation.conventions,
            "val_split": val_split_convention(stateful, evaluation.conventions),
        },
        artifacts=artifacts,
        **common,
    )
    records.write_record(directory, record)
    return outcome


SHIFT_SEED = 0
"""The generator seed of every generated shift suite: fixed by calibench, not the run seed, so
every run (every loss, backbone and seed) of a protocol sees the same corrupted images."""


def shift_suite_name(names: Sequence[str], dataset: str) -> str | None:
    """The shift suite of a run on ``dataset`` among a protocol's ``eval.shift`` names: the one
    named ``<dataset>-c`` (``cifar10-c`` for ``cifar10``), or ``None``."""
    return next((n for n in names if n == f"{dataset}-c"), None)


def _load_shift(settings: Any, dataset: Any, data_root: Path | str | None) -> Any:
    """The run's shift suite (official files under the data root, else generated), or ``None``.

    Built from the dataset's whole test split (the protocol's ``max_images`` cap of the clean
    test metrics does not apply; ``shift_max_images`` does). Never downloads: the official
    archives are gigabytes; put their files under the data root to use them.
    """
    name = shift_suite_name(settings.shift, dataset.name)
    if name is None:
        return None
    from calibench.data.shift import load_shift_suite

    suite = load_shift_suite(
        name,
        root=data_root,
        test_x=dataset.test.x,
        test_y=dataset.test.y,
        seed=SHIFT_SEED,
        max_images=settings.shift_max_images or None,
        download=False,
    )
    if suite.dataset != dataset.name:
        raise UsageError(f"shift suite {name} is for {suite.dataset}, not {dataset.name}")
    return suite


def _evaluate(result: Any, spec: RunSpec, directory: Path, data_root: Path | str | None) -> Any:
    """Evaluate with the protocol's eval settings: at most ``max_images`` test / OOD images, and
    the shift suite of the run's dataset if the protocol lists one (:func:`shift_suite_name`)."""
    from calibench.data.datasets import subset
    from calibench.evaluation import evaluate
    from calibench.registry import create_ood

    settings = result.protocol.eval
    dataset = result.dataset
    shift = _load_shift(settings, dataset, data_root)
    cap = settings.max_images
    if cap and cap < len(dataset.test):
        dataset = dataclasses.replace(
            dataset,
            test=subset(dataset.test, cap),
            provenance={**dataset.provenance, "eval_max_images": cap},
        )
    ood_sets = []
    for name in spec.ood:
        ood = create_ood(name, root=data_root, like=dataset, seed=spec.seed)
        if cap and cap < len(ood):
            ood = dataclasses.replace(ood, x=ood.x[:cap], y=None if ood.y is None else ood.y[:cap])
        ood_sets.append(ood)
    return evaluate(
        result.model,
        result.loss,
        dataset,
        ood_sets,
        device=result.device,
        n_bins=settings.ece_bins,
        batch_size=settings.batch_size,
        plots_dir=directory,
        shift=shift,
    )


def val_split_convention(stateful_loss: bool, conventions: dict[str, Any]) -> str:
    """What the val split was used for, in the record's ``conventions.val_split``."""
    uses = []
    if stateful_loss:
        uses.append(
            "by the loss's on_epoch_end after every epoch (its predictive logits, model in eval "
            "mode, no gradient)"
        )
    if conventions.get("ts_fit_split") == "val":
        uses.append("to fit the temperature")
    uses.append("for the val metrics")
    training = "used in training" if stateful_loss else "not used in training"
    return f"{training}; used " + ", ".join(uses)


def record_metrics(metrics: dict[str, Any], temperature_scaling: bool = True) -> dict[str, Any]:
    """The evaluator's metrics for the record; no ``test_ts`` (and every ``*_ts`` value of the
    shift grid null) when the protocol turns TS off."""
    out = {**metrics, "test_ts": metrics.get("test_ts") if temperature_scaling else None}
    if not temperature_scaling and out.get("shift"):
        out["shift"] = _without_ts(out["shift"])
    return out


def _without_ts(shift: dict[str, Any]) -> dict[str, Any]:
    def strip(cell: dict[str, Any]) -> dict[str, Any]:
        return {k: None if k.endswith("_ts") else v for k, v in cell.items()}

    summary = shift["summary"]
    return {
        **shift,
        "grid": {c: {s: strip(v) for s, v in per.items()} for c, per in shift["grid"].items()},
        "summary": {
            "by_severity": {s: strip(v) for s, v in summary["by_severity"].items()},
            "mean": strip(summary["mean"]),
        },
    }


def write_status_record(
    spec: RunSpec, directory: Path, status: str, reason: str, **fields: Any
) -> None:
    """A ``failed`` or ``diverged`` record (schema of :mod:`calibench.records`) with its reason."""
    from calibench import records

    try:
        record = records.build_record(spec, status=status, reason=reason, **fields)
    except UsageError:  # the loss is not registered any more: keep the failure all the same
        record = records.build_record(
            spec,
            status=status,
            reason=reason,
            loss_source={"type": "local", "module": None},
            **fields,
        )
    records.write_record(directory, record)


def write_failed_record(spec: RunSpec, directory: Path, *, reason: str, log: str) -> None:
    write_status_record(spec, directory, RecordStatus.FAILED, f"{reason} (traceback in {log})")
