"""The trainer: one :class:`~calibench.spec.RunSpec` in, one trained model out, resumably.

``train(spec, run_dir)`` reads top to bottom: the effective protocol (the named protocol with
the spec's deviations); the data (the dataset with its seeded stratified val split and, if
asked, a class-stratified train subset, in a device-resident
:class:`~calibench.data.pipeline.DeviceLoader`); :func:`_build` (the backbone, the loss, SGD
and a per-epoch LR schedule); :func:`_resume` (from the newest good checkpoint); then the
epoch loop :func:`_train_epochs`, one :func:`_epoch` and one checkpoint per epoch. Each step
is a :class:`calibench.training.step.TrainStep`, the same unit the speed benchmarks time; it
applies the protocol's ``loss_reduction`` (``"sum"``: backward on the batch size times the
loss's batch mean; every batch is full) and then its gradient clipping.

Device settings, chosen deliberately and restored when ``train`` returns:

- Both: ``channels_last`` model and inputs (on CPU too: resnet20 trains about 25% faster so).
- CUDA: bf16 autocast when the protocol's precision is ``bf16`` (parameters, optimizer and loss
  stay float32), fused SGD, ``cudnn.benchmark = True``
  (input shapes are fixed: the last partial batch is dropped) and TF32 allowed for float32
  matmuls and convolutions (``set_float32_matmul_precision("high")``): speed over bit-exactness,
  so GPU runs are not bit-reproducible. Optional ``torch.compile``.
- CPU: float32 whatever the protocol says, unless ``$CALIBENCH_CPU_BF16`` (``calibench run
  --cpu-bf16``) asks for the protocol's bf16 autocast on a CPU with AMX
  (:func:`calibench.training.step.precision_for`); the precision used is recorded in the result
  and the record, and a run never resumes in another precision. ``foreach`` SGD,
  ``torch.use_deterministic_algorithms(True)``: with a fixed seed two runs give identical weights.

The step loop never syncs with the host: the epoch's loss sum stays on the device and is read
once per epoch. Progress and history report the per-sample mean loss (the mean over the epoch's
batches of each batch's mean) whatever the loss reduction, so ``"mean"`` and ``"sum"`` runs
report comparable numbers. A non-finite epoch loss stops the run with status ``DIVERGED`` at
that epoch; it is returned, not raised, and the last good checkpoint is kept.

A loss may keep state (buffers, so ``state_dict()`` carries them) and define
``on_epoch_end(epoch, val_predictive_logits, val_labels)``; only for such a loss, after every
epoch, the model predicts the validation split in eval mode without gradient and the hook gets
the loss's predictive logits (float32, on the run's device) and the int64 labels. After each
call the readable state (:func:`~calibench.losses.base.loss_state`) is appended, with its
epoch, to the run's loss history (``TrainResult.loss_history``, kept in every checkpoint). A
buffer that is empty when the loss is built may be sized on first use (``cals`` keeps one
multiplier per class): a checkpoint's loss state is checked against the fresh loss's buffer
names and the shapes of its non-empty buffers.

Checkpoints are atomic files in ``run_dir/checkpoints/`` (model, optimizer, scheduler, the
loss's ``state_dict()``, every RNG state, the loader's seed, epoch and step, the history, and
mid-epoch the epoch's running loss sum), written by time (:class:`_Checkpoints`): after a step
or an epoch once at least ``checkpoint_every`` seconds (default 300) have passed since the last
one (``0``: at the end of every epoch), always after the last epoch, and on a clean stop.
A clean stop is a SIGINT (Ctrl-C), SIGTERM or SIGUSR2 (SLURM's warning before a time limit):
the handler only sets a flag; the loop checkpoints at the end of the current step (mid-epoch if
need be) and raises :class:`~calibench.errors.TrainingInterrupted`, or, if a Python handler was
installed for that signal before ``train`` (submitit's USR2 handler requeues the job), calls it
and goes on if it returns. A second Ctrl-C stops at once. Handlers are installed only in the
main thread and never over an ignored signal. Calling ``train`` again with the same spec and
``run_dir`` resumes from the newest good checkpoint, and on CPU ends bit-identical to an
uninterrupted run: each epoch's shuffle and augmentation are drawn at its start from a
generator seeded by ``(seed, epoch)``, so a mid-epoch resume replays the epoch and skips the
steps done.
"""

from __future__ import annotations

import itertools
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from calibench.data.datasets import ImageDataset
from calibench.data.pipeline import DeviceLoader
from calibench.errors import ProtocolError, TrainingInterrupted, UsageError
from calibench.losses.base import CalibrationLoss, loss_state, predictive_logits_of
from calibench.protocols import OVERRIDES, Protocol, load_protocol
from calibench.registry import create_backbone, create_dataset, create_loss
from calibench.spec import RunSpec, canonical_json
from calibench.status import RecordStatus
from calibench.training import CHECKPOINT_EVERY_S
from calibench.training.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_latest_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from calibench.training.progress import TrainCallback
from calibench.training.step import TrainStep, backend_flags

__all__ = [
    "CHECKPOINT_DIR",
    "TrainResult",
    "effective_protocol",
    "resolve_device",
    "train",
    "training_dataset",
]

CHECKPOINT_DIR = "checkpoints"
KEEP_CHECKPOINTS = 2


@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``status`` is :attr:`RecordStatus.COMPLETED` or :attr:`RecordStatus.DIVERGED` (equal to
    ``"completed"`` and ``"diverged"``). ``epoch`` is the last epoch trained (1-based):
    ``protocol.train.epochs`` when completed, the epoch whose mean loss was non-finite when
    diverged. ``history`` holds the finite per-epoch mean training losses, per sample
    whatever the protocol's ``loss_reduction`` (epochs 1..``epoch`` when completed,
    1..``epoch - 1`` when diverged); ``diverged_loss`` the non-finite value. ``model`` (the
    plain module, not the compiled wrapper, in eval mode) holds the weights after the last
    epoch trained, non-finite ones when diverged; ``checkpoint`` is the newest good checkpoint.
    ``timing``: ``train_seconds`` and ``img_per_s`` of this call, ``train_seconds_total`` over
    all calls of a resumed run. ``precision`` is the one used (``"fp32"`` on CPU even when the
    protocol says ``bf16``, unless ``--cpu-bf16``). ``loss_history`` holds, for a loss that defines ``on_epoch_end``,
    ``{"epoch": e, **loss_state(loss)}`` after each epoch's update (empty for other losses).
    """

    status: RecordStatus
    epoch: int
    model: nn.Module
    loss: CalibrationLoss
    dataset: ImageDataset
    protocol: Protocol
    history: list[float]
    timing: dict[str, float]
    device: str
    precision: str
    checkpoint: Path | None
    resumed_from: int = 0
    diverged_loss: float | None = None
    loss_history: list[dict[str, Any]] = field(default_factory=list)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available else CPU; otherwise check that ``device`` exists."""
    if isinstance(device, str) and device.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"invalid device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {device!r} requested but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(
                f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type != "cpu":
        raise UsageError(f"device type {dev.type!r} is not supported; use cpu or cuda")
    return dev


def effective_protocol(spec: RunSpec) -> Protocol:
    """The spec's protocol with its deviations applied, after checking version and hash."""
    base = load_protocol(spec.protocol)
    if (base.version, base.content_hash) != (spec.protocol_version, spec.protocol_hash):
        raise ProtocolError(
            f"the run spec was made for protocol {spec.protocol} v{spec.protocol_version} "
            f"({spec.protocol_hash}), but {base.path} is v{base.version} ({base.content_hash}); "
            "rebuild the spec from the current protocol"
        )
    unknown = sorted(set(spec.deviations) - set(OVERRIDES))
    if unknown:
        raise UsageError(
            f"run spec has unknown deviation(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(OVERRIDES)}"
        )
    protocol, _ = base.with_overrides(**spec.deviations)
    return protocol


def train(
    spec: RunSpec,
    run_dir: str | Path,
    *,
    device: str | torch.device = "auto",
    data_root: str | Path | None = None,
    compile: bool = False,
    progress: TrainCallback | None = None,
    checkpoint_every: float = CHECKPOINT_EVERY_S,
    clock: Callable[[], float] = time.monotonic,
) -> TrainResult:
    """Train the model of ``spec`` into ``run_dir`` (resuming from its checkpoints), see module doc.

    ``progress`` receives the callbacks of :class:`~calibench.training.progress.TrainCallback`
    (:class:`~calibench.training.progress.RichProgress` draws a bar); ``None`` reports nothing.
    ``checkpoint_every``: seconds between checkpoints, by ``clock`` (``0``: every epoch); an
    execution setting, not part of the spec. Raises :class:`~calibench.errors.TrainingInterrupted`
    after checkpointing on a stop signal.
    """
    if not isinstance(spec, RunSpec):
        raise UsageError(f"train() needs a RunSpec, got {type(spec).__name__}")
    if progress is not None and not isinstance(progress, TrainCallback):
        raise UsageError(
            f"train(progress=...) needs a TrainCallback or None, got {type(progress).__name__}"
        )
    callback = progress if progress is not None else TrainCallback()
    if not isinstance(checkpoint_every, (int, float)) or not checkpoint_every >= 0:
        raise UsageError(f"checkpoint_every must be >= 0 seconds, got {checkpoint_every!r}")
    dev = resolve_device(device)
    protocol = effective_protocol(spec)
    dataset, loader = _load_data(spec, protocol, dev, data_root)
    with backend_flags(dev):
        run = _build(spec, protocol, dataset, loader, dev, compile, Path(run_dir) / CHECKPOINT_DIR)
        _resume(run)
        checkpoints = _Checkpoints(float(checkpoint_every), clock)
        with checkpoints.stop_signals():
            return _train_epochs(run, callback, checkpoints)


def training_dataset(
    spec: RunSpec, protocol: Protocol, data_root: str | Path | None = None
) -> ImageDataset:
    """The dataset a run of ``spec`` trains on: its splits, and the class-stratified training
    subset when ``protocol`` (the spec's :func:`effective_protocol`) asks for one."""
    dataset = create_dataset(spec.dataset, root=data_root, val_size=protocol.data.val_size)
    n = protocol.data.train_subset
    if n and n < len(dataset.train):
        dataset = dataset.with_train_subset(n)
    return dataset


def _load_data(
    spec: RunSpec, protocol: Protocol, dev: torch.device, data_root: str | Path | None
) -> tuple[ImageDataset, DeviceLoader]:
    """The dataset (train subset if the protocol asks) and the shuffling, augmenting loader."""
    augment = _augment_args(protocol)
    dataset = training_dataset(spec, protocol, data_root)
    loader = DeviceLoader(
        dataset.train,
        protocol.train.batch_size,
        dev,
        dataset.mean,
        dataset.std,
        train=True,
        seed=spec.seed,
        channels_last=True,
        **augment,
    )
    if len(loader) == 0:
        raise UsageError(
            f"the training split has {len(dataset.train)} images, fewer than one batch of "
            f"{protocol.train.batch_size}; lower the batch size or use more images"
        )
    return dataset, loader


def _augment_args(protocol: Protocol) -> dict[str, Any]:
    aug = protocol.train.augment
    if aug.crop_padding == 0 and not aug.flip:
        return {"augment": False}
    if not aug.flip:
        raise ProtocolError(
            f"protocol {protocol.name}: random crop without flip is not supported by the input "
            "pipeline (DeviceLoader always flips when it augments); set flip = true"
        )
    return {"augment": True, "padding": aug.crop_padding}


@dataclass(eq=False)
class _Run:
    """What one call of :func:`train` works on. :func:`_resume` sets the fields from ``start``
    on from a checkpoint; the epoch loop extends ``history`` and moves ``checkpoint``."""

    spec: RunSpec
    protocol: Protocol
    device: torch.device
    dataset: ImageDataset
    loader: DeviceLoader
    model: nn.Module
    criterion: CalibrationLoss
    step: TrainStep
    scheduler: torch.optim.lr_scheduler.LRScheduler
    checkpoints: Path
    start: int = 0  # epochs done before this call
    history: list[float] = field(default_factory=list)
    loss_history: list[dict[str, Any]] = field(default_factory=list)
    seconds_before: float = 0.0  # training seconds of earlier calls
    checkpoint: Path | None = None  # the newest good checkpoint
    resume_step: int = 0  # steps of epoch start + 1 done before this call (mid-epoch checkpoint)
    resume_loss_sum: torch.Tensor | None = None  # that epoch's loss sum over those steps


def _build(
    spec: RunSpec,
    protocol: Protocol,
    dataset: ImageDataset,
    loader: DeviceLoader,
    dev: torch.device,
    compile: bool,
    checkpoints: Path,
) -> _Run:
    """Seed every RNG, then build the backbone, the loss, the protocol's step and LR schedule."""
    _seed_everything(spec.seed)
    model = create_backbone(spec.backbone, num_classes=dataset.num_classes)
    model = model.to(dev, memory_format=torch.channels_last)
    criterion = create_loss(spec.loss, **spec.loss_params).to(dev)
    criterion.validate_inputs = False
    if callable(getattr(criterion, "on_epoch_end", None)) and len(dataset.val.y) == 0:
        raise UsageError(
            f"loss {spec.loss} updates its state on the val split after every epoch, but "
            f"protocol {protocol.name} has no val split (val_size = 0)"
        )
    step = TrainStep.from_protocol(model, criterion, protocol, device=dev, compile=compile)
    epochs, schedule = protocol.train.epochs, protocol.train.schedule
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        step.optimizer, lambda e: schedule.lr_factor(e, epochs)
    )
    return _Run(
        spec, protocol, dev, dataset, loader, model, criterion, step, scheduler, checkpoints
    )


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _resume(run: _Run) -> None:
    """Restore ``run`` from its newest good checkpoint, if any: the weights, the optimizer and
    LR schedule, every RNG state, the history and the epochs done."""
    found = load_latest_checkpoint(run.checkpoints, check=_checker(run))
    if found is None:
        return
    run.checkpoint, state = found
    run.model.load_state_dict(state["model"])
    run.criterion.load_state_dict(state.get("loss", {}))
    run.step.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    restore_rng_state(state["rng"])
    run.history = [float(v) for v in state["history"]]
    run.loss_history = list(state.get("loss_history", []))
    run.start = state["epoch"]
    run.seconds_before = float(state.get("train_seconds_total", 0.0))
    run.resume_step, run.resume_loss_sum = state.get("step", 0), state.get("epoch_loss_sum")


def _checker(run: _Run) -> Callable[[dict[str, Any]], None]:
    """A check that a checkpoint belongs to ``run``: the same spec, model and optimizer."""
    spec_json = canonical_json(run.spec.to_dict())
    shapes = {k: tuple(v.shape) for k, v in run.model.state_dict().items()}
    n_params = [len(g["params"]) for g in run.step.optimizer.param_groups]
    loss_shapes = {k: tuple(v.shape) for k, v in run.criterion.state_dict().items()}
    sized_later = {k for k, shape in loss_shapes.items() if math.prod(shape) == 0 and shape}

    def check(state: dict[str, Any]) -> None:
        try:
            same_spec = canonical_json(state["spec"]) == spec_json
        except (TypeError, ValueError):
            raise CheckpointError("its run spec is not plain data") from None
        if not same_spec:
            raise UsageError(
                "this run directory holds checkpoints of another run spec "
                f"({state['spec'].get('loss')}/{state['spec'].get('backbone')}, seed "
                f"{state['spec'].get('seed')}); use a fresh run directory"
            )
        if state.get("precision", run.step.precision) != run.step.precision:
            raise UsageError(
                f"this run's checkpoints were trained in {state['precision']}, this process "
                f"trains in {run.step.precision} (the device or --cpu-bf16 changed); resume "
                "with the same setting, or use a fresh run directory"
            )
        got = {k: tuple(v.shape) for k, v in state["model"].items()}
        if got != shapes:
            raise CheckpointError("its model weights do not match the backbone's parameters")
        groups = state["optimizer"].get("param_groups")
        if not isinstance(groups, list) or [len(g.get("params", ())) for g in groups] != n_params:
            raise CheckpointError("its optimizer state does not match the model")
        for key in ("rng", "loader", "history", "scheduler"):
            if key not in state:
                raise CheckpointError(f"it lacks '{key}'")
        loss_state = state.get("loss", {})
        got_loss = (
            {k: tuple(v.shape) for k, v in loss_state.items()}
            if isinstance(loss_state, dict)
            and all(isinstance(v, torch.Tensor) for v in loss_state.values())
            else None
        )
        if (
            got_loss is None
            or got_loss.keys() != loss_shapes.keys()
            or any(got_loss[k] != v for k, v in loss_shapes.items() if k not in sized_later)
        ):
            raise CheckpointError("its loss state does not match the loss's buffers")

    return check


def _train_epochs(run: _Run, callback: TrainCallback, checkpoints: _Checkpoints) -> TrainResult:
    """The epoch loop from ``run.start``: train an epoch, report it, stop at a non-finite loss,
    else step the LR schedule and checkpoint when ``checkpoints`` says so (also mid-epoch).
    ``callback`` hears every step and the end (``FAILED`` when an exception propagates)."""
    spec, epochs, steps = run.spec, run.protocol.train.epochs, len(run.loader)
    label = f"{spec.loss_label} {spec.backbone} seed={spec.seed}"
    callback.on_train_start(
        label, min(run.start, epochs), epochs, steps, run.protocol.train.batch_size
    )
    status, last, diverged_loss = RecordStatus.COMPLETED, max(run.start, epochs), None
    seconds, images = 0.0, 0
    epoch = min(run.start + 1, epochs)

    def mid_epoch(step: int, loss_sum: torch.Tensor, epoch_seconds: float) -> None:
        if checkpoints.due():
            total = run.seconds_before + seconds + epoch_seconds
            run.checkpoint = checkpoints.saved(_save(run, epoch - 1, total, step, loss_sum))
            checkpoints.stop_if_asked(f"epoch {epoch}, step {step}")

    try:
        run.model.train()
        for epoch in range(run.start + 1, epochs + 1):
            loss, dt, done = _epoch(run, epoch, callback, mid_epoch)
            seconds += dt
            images += done * run.loader.batch_size
            img_per_s = done * run.loader.batch_size / dt if dt > 0 else float("inf")
            callback.on_epoch_end(epoch, epochs, loss, img_per_s)
            if not math.isfinite(loss):
                status, last, diverged_loss = RecordStatus.DIVERGED, epoch, loss
                break
            run.scheduler.step()
            run.history.append(loss)
            _loss_epoch_end(run, epoch)
            if checkpoints.due(epoch_end=True, last=epoch == epochs):
                total = run.seconds_before + seconds
                run.checkpoint = checkpoints.saved(_save(run, epoch, total))
                checkpoints.stop_if_asked(f"the end of epoch {epoch}")
    except BaseException:
        callback.on_train_end(RecordStatus.FAILED, epoch)
        raise
    callback.on_train_end(status, last)
    run.model.eval()
    return TrainResult(
        status=status,
        epoch=last,
        model=run.model,
        loss=run.criterion,
        dataset=run.dataset,
        protocol=run.protocol,
        history=run.history,
        timing={
            "train_seconds": seconds,
            "img_per_s": images / seconds if seconds > 0 else 0.0,
            "train_seconds_total": run.seconds_before + seconds,
        },
        device=str(run.device),
        precision=run.step.precision,
        checkpoint=run.checkpoint,
        resumed_from=run.start,
        diverged_loss=diverged_loss,
        loss_history=run.loss_history,
    )


def _epoch(
    run: _Run,
    epoch: int,
    callback: TrainCallback,
    after_step: Callable[[int, torch.Tensor, float], None],
) -> tuple[float, float, int]:
    """Train epoch ``epoch`` (1-based): its mean per-sample loss, its seconds (without the time
    spent in ``after_step``) and the steps done in this call.

    A run resumed from a mid-epoch checkpoint replays the epoch's draws and skips the steps
    done. ``after_step(step, loss_sum, seconds)`` runs after every step but the last (the
    mid-epoch checkpoint). The loss sum stays on the device; reading it at the end is the
    epoch's one host sync.
    """
    run.loader.set_epoch(epoch - 1)
    steps = len(run.loader)
    first, loss_sum = 0, torch.zeros((), device=run.device)
    if epoch == run.start + 1 and run.resume_step:
        first, saved = run.resume_step, run.resume_loss_sum
        loss_sum = saved.to(run.device).clone() if saved is not None else loss_sum
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]] = itertools.islice(
        iter(run.loader), first, None
    )
    t0, outside = time.perf_counter(), 0.0
    for step, (x, y) in enumerate(batches, first + 1):
        loss_sum += run.step(x, y)
        callback.on_step(epoch, step, steps)
        if step < steps:
            t1 = time.perf_counter()
            after_step(step, loss_sum, t1 - t0 - outside)
            outside += time.perf_counter() - t1
    mean_loss = float(loss_sum) / steps
    return mean_loss, time.perf_counter() - t0 - outside, steps - first


class _Checkpoints:
    """When to checkpoint, and the clean stop (see the module doc).

    :meth:`due` after a step or an epoch: a stop was asked, it is the last epoch, or ``every``
    seconds of ``clock`` have passed since the last checkpoint (``every == 0``: at every epoch
    end, never mid-epoch). :meth:`saved` restarts the interval after one;
    :meth:`stop_if_asked` then ends the run if a stop signal came.
    """

    SIGNALS = tuple(
        getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR2") if hasattr(signal, name)
    )

    def __init__(self, every: float, clock: Callable[[], float]) -> None:
        self.every, self.clock = every, clock
        self.last = clock()
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def due(self, *, epoch_end: bool = False, last: bool = False) -> bool:
        if self.signum is not None or last:
            return True
        if self.every == 0:
            return epoch_end
        return self.clock() - self.last >= self.every

    def saved(self, path: Path) -> Path:
        """Note that a checkpoint was just written to ``path``: the interval restarts."""
        self.last = self.clock()
        return path

    def on_signal(self, signum: int, frame: Any) -> None:
        if signum == self.signum == signal.SIGINT:  # a second Ctrl-C: stop now, no checkpoint
            raise KeyboardInterrupt
        self.signum = signum

    @contextmanager
    def stop_signals(self) -> Iterator[None]:
        """Route the stop signals to :meth:`on_signal` while training (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        for signum in self.SIGNALS:
            handler = signal.getsignal(signum)
            if handler is not None and handler != signal.SIG_IGN:  # None: not set from Python
                self.previous[signum] = handler
                signal.signal(signum, self.on_signal)
        try:
            yield
        finally:
            for signum, handler in self.previous.items():
                signal.signal(signum, handler)

    def stop_if_asked(self, where: str) -> None:
        """After a checkpoint: raise :class:`TrainingInterrupted` if a stop signal came; or, if a
        Python handler owned that signal before ``train``, call it (submitit's USR2 handler
        requeues the job and exits) and go on training if it returns."""
        signum, self.signum = self.signum, None
        if signum is None:
            return
        previous = self.previous.get(signum)
        if callable(previous) and previous is not signal.default_int_handler:
            try:
                previous(signum, None)
            except TrainingInterrupted:
                raise TrainingInterrupted(signum, where) from None
            return
        raise TrainingInterrupted(signum, where)


def _loss_epoch_end(run: _Run, epoch: int) -> None:
    """Call ``run.criterion.on_epoch_end(epoch, val_s, val_y)`` if the loss defines it."""
    hook = getattr(run.criterion, "on_epoch_end", None)
    if not callable(hook):
        return
    from calibench.evaluation import predict_logits

    val = run.dataset.val
    logits = predict_logits(
        run.model, val.x, run.dataset.mean, run.dataset.std, device=run.device
    ).to(run.device)
    with torch.no_grad():
        val_s = predictive_logits_of(run.criterion, logits).float()
        hook(epoch, val_s, val.y.to(run.device, torch.int64))
    run.loss_history.append({"epoch": epoch, **loss_state(run.criterion)})


def _save(
    run: _Run,
    epoch: int,
    seconds_total: float,
    step: int = 0,
    epoch_loss_sum: torch.Tensor | None = None,
) -> Path:
    """Checkpoint ``run`` after ``epoch`` epochs (and ``step`` steps of the next, whose loss sum
    is ``epoch_loss_sum``): everything :func:`_resume` restores."""
    mid_epoch = {"epoch_loss_sum": epoch_loss_sum.detach().cpu()} if step else {}
    return save_checkpoint(
        run.checkpoints,
        epoch,
        {
            "model": run.model.state_dict(),
            "optimizer": run.step.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "loss": run.criterion.state_dict(),
            "rng": capture_rng_state(),
            "loader": {"seed": run.spec.seed, "epoch": epoch, "step": step},
            "history": list(run.history),
            "loss_history": list(run.loss_history),
            "spec": run.spec.to_dict(),
            "protocol": run.protocol.label,
            "precision": run.step.precision,
            "device_type": run.device.type,
            "train_seconds_total": seconds_total,
            **mid_epoch,
        },
        keep=KEEP_CHECKPOINTS,
        step=step,
    )
