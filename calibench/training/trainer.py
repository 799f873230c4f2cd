"""The trainer: one :class:`~calibench.spec.RunSpec` in, one trained model out, resumably.

``train(spec, run_dir)`` builds the effective protocol (the named protocol with the spec's
deviations), the dataset (with its seeded stratified val split and, if asked, a class-stratified
train subset), the backbone, the loss and SGD with a per-epoch LR schedule, then trains with the
device-resident :class:`~calibench.data.pipeline.DeviceLoader`. Each step is a
:class:`calibench.training.step.TrainStep`, the same unit the speed benchmarks time; it applies the
protocol's ``loss_reduction`` (``"sum"``: backward on the batch size times the loss's batch mean;
every batch is full) and then its gradient clipping.

Device settings, chosen deliberately and restored when ``train`` returns:

- Both: ``channels_last`` model and inputs (on CPU too: resnet20 trains about 25% faster so).
- CUDA: bf16 autocast when the protocol's precision is ``bf16`` (parameters, optimizer and loss
  stay float32), fused SGD, ``cudnn.benchmark = True``
  (input shapes are fixed: the last partial batch is dropped) and TF32 allowed for float32
  matmuls and convolutions (``set_float32_matmul_precision("high")``): speed over bit-exactness,
  so GPU runs are not bit-reproducible. Optional ``torch.compile``.
- CPU: float32 whatever the protocol says (CPU bf16 autocast is slow and not what the protocol
  measures; the precision used is recorded in the result), ``foreach`` SGD,
  ``torch.use_deterministic_algorithms(True)``: with a fixed seed two runs give identical weights.

The step loop never syncs with the host: the epoch's loss sum stays on the device and is read
once per epoch. Progress and history report the per-sample mean loss (the mean over the epoch's
batches of each batch's mean) whatever the loss reduction, so ``"mean"`` and ``"sum"`` runs
report comparable numbers. A non-finite epoch loss stops the run with status ``"diverged"`` at
that epoch; it is returned, not raised, and the last good checkpoint is kept.

Every epoch ends with an atomic checkpoint in ``run_dir/checkpoints/`` (model, optimizer,
scheduler, every RNG state, the loader's seed and next epoch, the history). Calling ``train``
again with the same spec and ``run_dir`` resumes from the newest good checkpoint, and on CPU
ends bit-identical to an uninterrupted run, because each epoch's shuffle and augmentation come
from a generator seeded by ``(seed, epoch)``.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from calibench.data.datasets import ImageDataset
from calibench.data.pipeline import DeviceLoader
from calibench.errors import ProtocolError, UsageError
from calibench.losses.base import CalibrationLoss
from calibench.protocols import OVERRIDES, Protocol, load_protocol
from calibench.registry import create_backbone, create_dataset, create_loss
from calibench.spec import RunSpec, canonical_json
from calibench.status import RecordStatus
from calibench.training.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_latest_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from calibench.training.progress import TrainCallback
from calibench.training.step import TrainStep, backend_flags

__all__ = ["CHECKPOINT_DIR", "TrainResult", "effective_protocol", "resolve_device", "train"]

CHECKPOINT_DIR = "checkpoints"
KEEP_CHECKPOINTS = 2


@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``status`` is ``RecordStatus.COMPLETED`` or ``DIVERGED`` (equal to ``"completed"`` and
    ``"diverged"``). ``epoch`` is the last epoch trained
    (1-based): ``protocol.train.epochs`` when completed, the epoch whose mean loss was non-finite
    when diverged. ``history`` holds the finite per-epoch mean training losses, per sample
    whatever the protocol's ``loss_reduction`` (epochs 1..``epoch`` when completed,
    1..``epoch - 1`` when diverged); ``diverged_loss`` the non-finite value. ``model`` (the
    plain module, not the compiled wrapper, in eval mode) holds the weights after the last
    epoch trained, non-finite ones when diverged; ``checkpoint`` is the newest good checkpoint.
    ``timing``: ``train_seconds`` and ``img_per_s`` of this call, ``train_seconds_total`` over
    all calls of a resumed run. ``precision`` is the one used (``"fp32"`` on CPU even when the
    protocol says ``bf16``).
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


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _build_dataset(spec: RunSpec, protocol: Protocol, data_root: str | Path | None) -> ImageDataset:
    dataset = create_dataset(spec.dataset, root=data_root, val_size=protocol.data.val_size)
    n = protocol.data.train_subset
    if n and n < len(dataset.train):
        dataset = dataset.with_train_subset(n)
    return dataset


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


def _checker(spec: RunSpec, model: nn.Module, optimizer: torch.optim.Optimizer) -> Any:
    spec_json = canonical_json(spec.to_dict())
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    n_params = [len(g["params"]) for g in optimizer.param_groups]

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
        got = {k: tuple(v.shape) for k, v in state["model"].items()}
        if got != shapes:
            raise CheckpointError("its model weights do not match the backbone's parameters")
        groups = state["optimizer"].get("param_groups")
        if not isinstance(groups, list) or [len(g.get("params", ())) for g in groups] != n_params:
            raise CheckpointError("its optimizer state does not match the model")
        for key in ("rng", "loader", "history", "scheduler"):
            if key not in state:
                raise CheckpointError(f"it lacks '{key}'")

    return check


def train(
    spec: RunSpec,
    run_dir: str | Path,
    *,
    device: str | torch.device = "auto",
    data_root: str | Path | None = None,
    compile: bool = False,
    progress: TrainCallback | None = None,
) -> TrainResult:
    """Train the model of ``spec`` into ``run_dir`` (resuming from its checkpoints), see module doc.

    ``progress`` receives the callbacks of :class:`~calibench.training.progress.TrainCallback`
    (:class:`~calibench.training.progress.RichProgress` draws a bar); ``None`` reports nothing.
    """
    if not isinstance(spec, RunSpec):
        raise UsageError(f"train() needs a RunSpec, got {type(spec).__name__}")
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    protocol = effective_protocol(spec)
    if progress is not None and not isinstance(progress, TrainCallback):
        raise UsageError(
            f"train(progress=...) needs a TrainCallback or None, got {type(progress).__name__}"
        )
    reporter = progress if progress is not None else TrainCallback()

    augment = _augment_args(protocol)
    dataset = _build_dataset(spec, protocol, data_root)
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
    steps = len(loader)
    if steps == 0:
        raise UsageError(
            f"the training split has {len(dataset.train)} images, fewer than one batch of "
            f"{protocol.train.batch_size}; lower the batch size or use more images"
        )

    with backend_flags(dev):
        _seed_everything(spec.seed)
        model = create_backbone(spec.backbone, num_classes=dataset.num_classes)
        model = model.to(dev, memory_format=torch.channels_last)
        criterion = create_loss(spec.loss, **spec.loss_params).to(dev)
        criterion.validate_inputs = False
        train_step = TrainStep.from_protocol(
            model, criterion, protocol, device=dev, compile=compile
        )
        optimizer, precision = train_step.optimizer, train_step.precision
        epochs = protocol.train.epochs
        schedule = protocol.train.schedule
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda e: schedule.lr_factor(e, epochs)
        )

        ckpt_dir = run_dir / CHECKPOINT_DIR
        history: list[float] = []
        start = 0
        seconds_before = 0.0
        checkpoint: Path | None = None
        found = load_latest_checkpoint(ckpt_dir, check=_checker(spec, model, optimizer))
        if found is not None:
            checkpoint, state = found
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            restore_rng_state(state["rng"])
            history = [float(v) for v in state["history"]]
            start = state["epoch"]
            seconds_before = float(state.get("train_seconds_total", 0.0))

        status, epoch, diverged_loss = RecordStatus.COMPLETED, max(start, epochs), None
        seconds = 0.0
        images = 0
        label = f"{spec.loss_label} {spec.backbone} seed={spec.seed}"
        batch = protocol.train.batch_size
        reporter.on_train_start(label, min(start, epochs), epochs, steps, batch)
        current = min(start + 1, epochs)
        try:
            model.train()
            for e in range(start, epochs):
                current = e + 1
                loader.set_epoch(e)
                loss_sum = torch.zeros((), device=dev)
                t0 = time.perf_counter()
                for step, (x, y) in enumerate(loader, 1):
                    loss_sum += train_step(x, y)
                    reporter.on_step(e + 1, step, steps)
                mean_loss = float(loss_sum) / steps  # the one host sync of the epoch
                dt = time.perf_counter() - t0
                seconds += dt
                images += loader.num_samples
                img_per_s = loader.num_samples / dt if dt > 0 else float("inf")
                reporter.on_epoch_end(e + 1, epochs, mean_loss, img_per_s)
                if not math.isfinite(mean_loss):
                    status, epoch, diverged_loss = RecordStatus.DIVERGED, e + 1, mean_loss
                    break
                scheduler.step()
                history.append(mean_loss)
                checkpoint = save_checkpoint(
                    ckpt_dir,
                    e + 1,
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "rng": capture_rng_state(),
                        "loader": {"seed": spec.seed, "epoch": e + 1},
                        "history": list(history),
                        "spec": spec.to_dict(),
                        "protocol": protocol.label,
                        "precision": precision,
                        "device_type": dev.type,
                        "train_seconds_total": seconds_before + seconds,
                    },
                    keep=KEEP_CHECKPOINTS,
                )
        except BaseException:
            reporter.on_train_end(RecordStatus.FAILED, current)
            raise
        reporter.on_train_end(status, epoch)
        model.eval()

    return TrainResult(
        status=status,
        epoch=epoch,
        model=model,
        loss=criterion,
        dataset=dataset,
        protocol=protocol,
        history=history,
        timing={
            "train_seconds": seconds,
            "img_per_s": images / seconds if seconds > 0 else 0.0,
            "train_seconds_total": seconds_before + seconds,
        },
        device=str(dev),
        precision=precision,
        checkpoint=checkpoint,
        resumed_from=start,
        diverged_loss=diverged_loss,
    )
