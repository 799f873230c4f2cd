"""Training progress reporting: the callback protocol the trainer calls, and a rich progress bar.

The trainer calls these methods of its ``progress`` object, each only if the object has it, so a
caller implements just what it needs (the sweep runner shows one line per run from
``on_epoch_end``). Arguments are Python numbers, never tensors: reporting never forces a host
sync. ``on_step`` is called once per optimizer step; the loss is read from the device once per
epoch, so only ``on_epoch_end`` carries it. Epochs are numbered from 1.

``on_train_start(run, start_epoch, epochs, steps_per_epoch, batch_size)``
    before the first step; ``start_epoch`` epochs are already done (a resumed run).
``on_step(epoch, step, steps)``
    after optimizer step ``step`` of ``steps`` in ``epoch``.
``on_epoch_end(epoch, epochs, loss, img_per_s)``
    after each epoch: its mean training loss (may be non-finite) and throughput.
``on_train_end(status, epoch)``
    at the end: ``"completed"``, ``"diverged"`` or ``"failed"`` (an exception is propagating).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["NullProgress", "RichProgress", "TrainProgress", "notify"]


@runtime_checkable
class TrainProgress(Protocol):
    """What a ``progress`` object may implement; every method is optional (see module doc)."""

    def on_epoch_end(self, epoch: int, epochs: int, loss: float, img_per_s: float) -> None: ...


class NullProgress:
    """Reports nothing; subclass it and override the callbacks you need."""

    def on_train_start(
        self, run: str, start_epoch: int, epochs: int, steps_per_epoch: int, batch_size: int
    ) -> None:
        pass

    def on_step(self, epoch: int, step: int, steps: int) -> None:
        pass

    def on_epoch_end(self, epoch: int, epochs: int, loss: float, img_per_s: float) -> None:
        pass

    def on_train_end(self, status: str, epoch: int) -> None:
        pass


def notify(progress: object | None, event: str, *args: Any) -> None:
    """Call ``progress.<event>(*args)`` if ``progress`` has that method."""
    method = getattr(progress, event, None) if progress is not None else None
    if method is not None:
        method(*args)


class RichProgress(NullProgress):
    """A rich progress bar over the run's remaining steps: epoch, loss, img/s, elapsed, ETA."""

    def __init__(self, console: Console | None = None, *, transient: bool = False) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[img_per_s]} img/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=transient,
        )
        self._task: TaskID | None = None

    def on_train_start(
        self, run: str, start_epoch: int, epochs: int, steps_per_epoch: int, batch_size: int
    ) -> None:
        self._progress.start()
        self._task = self._progress.add_task(
            run,
            total=(epochs - start_epoch) * steps_per_epoch,
            epoch=min(start_epoch + 1, epochs),
            epochs=epochs,
            loss="-",
            img_per_s="-",
        )

    def on_step(self, epoch: int, step: int, steps: int) -> None:
        if self._task is not None:
            self._progress.update(self._task, advance=1, epoch=epoch)

    def on_epoch_end(self, epoch: int, epochs: int, loss: float, img_per_s: float) -> None:
        if self._task is not None:
            self._progress.update(
                self._task, epoch=epoch, loss=f"{loss:.4f}", img_per_s=f"{img_per_s:,.0f}"
            )

    def on_train_end(self, status: str, epoch: int) -> None:
        if self._task is not None and status != "completed":
            self._progress.update(self._task, description=f"{status} at epoch {epoch}")
        self._progress.stop()
