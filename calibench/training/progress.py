"""Training progress: the one callback base class the trainer calls, and a rich progress bar.

:func:`calibench.training.trainer.train` calls every method of its :class:`TrainCallback`; the
base class does nothing, so a subclass overrides only what it needs (the sweep runner's
``ProgressWriter`` writes ``progress.json``, :class:`RichProgress` draws a bar). Arguments are
Python numbers, never tensors: reporting never forces a host sync. ``on_step`` is called once
per optimizer step; the loss is read from the device once per epoch, so only ``on_epoch_end``
carries it. Epochs are numbered from 1.
"""

from __future__ import annotations

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

from calibench.status import RecordStatus

__all__ = ["RichProgress", "TrainCallback"]


class TrainCallback:
    """What the trainer reports, as no-op methods; subclass it and override what you need."""

    def on_train_start(
        self, run: str, start_epoch: int, epochs: int, steps_per_epoch: int, batch_size: int
    ) -> None:
        """Before the first step; ``start_epoch`` epochs are already done (a resumed run)."""

    def on_step(self, epoch: int, step: int, steps: int) -> None:
        """After optimizer step ``step`` of ``steps`` in ``epoch``."""

    def on_epoch_end(self, epoch: int, epochs: int, loss: float, img_per_s: float) -> None:
        """After each epoch: its mean training loss (may be non-finite) and throughput."""

    def on_train_end(self, status: RecordStatus, epoch: int) -> None:
        """At the end: ``COMPLETED``, ``DIVERGED`` or ``FAILED`` (an exception is propagating)."""


class RichProgress(TrainCallback):
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

    def on_train_end(self, status: RecordStatus, epoch: int) -> None:
        if self._task is not None and status != RecordStatus.COMPLETED:
            self._progress.update(self._task, description=f"{status} at epoch {epoch}")
        self._progress.stop()
