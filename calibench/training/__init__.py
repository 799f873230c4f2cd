"""The training engine: checkpoints, progress reporting, the training step and the resumable trainer."""

from __future__ import annotations

from calibench.engine.checkpoint import CheckpointError, CorruptCheckpointWarning
from calibench.engine.progress import NullProgress, RichProgress, TrainProgress
from calibench.engine.step import TrainStep
from calibench.engine.trainer import TrainResult, train

__all__ = [
    "CheckpointError",
    "CorruptCheckpointWarning",
    "NullProgress",
    "RichProgress",
    "TrainProgress",
    "TrainResult",
    "TrainStep",
    "train",
]
