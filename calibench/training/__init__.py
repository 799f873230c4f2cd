"""Training: checkpoints, progress reporting, the training step and the resumable trainer."""

from __future__ import annotations

from calibench.training.checkpoint import CheckpointError, CorruptCheckpointWarning
from calibench.training.progress import NullProgress, RichProgress, TrainProgress
from calibench.training.step import TrainStep
from calibench.training.trainer import TrainResult, train

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
