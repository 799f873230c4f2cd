"""What every executor shares: the picklable per-run job and the executor interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from calibench.runner.execute import RunOutcome, describe, execute_run
from calibench.spec import RunSpec
from calibench.status import Outcome

OnDone = Callable[[RunSpec, RunOutcome], None]


@dataclass(frozen=True)
class RunJob:
    """Everything a worker needs besides the spec; picklable, so it travels to any worker."""

    results_dir: str
    device: str = "auto"
    data_root: str | None = None
    retry_diverged: bool = False
    compile: bool = False
    threads: int | None = None

    def __call__(self, spec: RunSpec) -> RunOutcome:
        return execute_run(
            spec,
            self.results_dir,
            self.device,
            self.data_root,
            retry_diverged=self.retry_diverged,
            compile=self.compile,
            threads=self.threads,
        )


def lost(spec: RunSpec, reason: str) -> RunOutcome:
    """The outcome of a run whose worker was lost without returning one."""
    return RunOutcome(spec.run_id(), describe(spec), Outcome.FAILED, reason)


class Executor(ABC):
    """Runs specs and reports each outcome through ``on_done`` as soon as it is known.

    On KeyboardInterrupt an executor stops or cancels what is still running and re-raises.
    """

    name: str = "executor"

    @abstractmethod
    def run(self, specs: Sequence[RunSpec], job: RunJob, on_done: OnDone) -> None: ...

    def describe(self) -> str:
        return self.name
