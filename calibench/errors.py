"""Exceptions that calibench raises on purpose.

Every error a user can cause derives from :class:`CalibenchError`. The CLI turns these into a
one-line message and exit code 2 (usage) or 1 (a run or data problem), never a traceback.
"""

from __future__ import annotations


class CalibenchError(Exception):
    """Base class of every error calibench raises deliberately."""

    exit_code = 1


class UsageError(CalibenchError, ValueError):
    """The user asked for something that does not exist or is malformed."""

    exit_code = 2


class UnknownNameError(UsageError, KeyError):
    """A registry lookup failed: the name is not registered (close matches are in the message)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnknownParameterError(UsageError, TypeError):
    """A factory was given a parameter it does not accept."""


class LossInputError(UsageError):
    """Logits or targets that a loss cannot accept."""


class RegistrationError(CalibenchError):
    """A name was registered twice, or a registration is malformed."""


class DataNotFoundError(CalibenchError, FileNotFoundError):
    """A dataset could not be found on disk nor downloaded."""


class DataFormatError(CalibenchError, ValueError):
    """A dataset file exists but does not hold what its format promises."""


class ProtocolError(UsageError):
    """A protocol file is malformed, or its content changed without a version bump."""


class CheckpointError(CalibenchError):
    """A checkpoint is unreadable or does not hold what a checkpoint must hold."""


class PublishError(UsageError):
    """A version cannot be published (it exists, nothing changed, or records are malformed)."""


class RecordError(CalibenchError):
    """A run record is malformed or fails schema validation."""


class NonFiniteLogitsError(CalibenchError):
    """The model produced NaN or inf logits: it diverged, so there is nothing to evaluate."""


class NonFinitePredictiveLogitsError(CalibenchError):
    """Finite model logits whose predictive logits are NaN or inf (a loss's map overflowed, or
    a probability of exactly 0 was logged): the metrics would not be finite."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped cleanly on a signal (SIGINT, SIGTERM, SIGUSR2) after writing a checkpoint.

    A :class:`KeyboardInterrupt`, so every path that handles Ctrl-C handles it: the run is not
    recorded as failed and stays resumable. ``signum`` is the signal; ``where`` says how far
    the run got (``"epoch 1, step 2"``).
    """

    def __init__(self, signum: int, where: str = "") -> None:
        super().__init__(signum, where)
        self.signum = int(signum)
        self.where = where

    def __str__(self) -> str:
        import signal

        try:
            name = signal.Signals(self.signum).name
        except ValueError:
            name = f"signal {self.signum}"
        at = f" at {self.where}" if self.where else ""
        return f"stopped by {name}{at}; checkpoint written, rerun to resume"
