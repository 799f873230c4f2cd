"""How the runs of a plan are scheduled: the executor interface, the executors by name, the sweep.

Every executor calls :func:`~calibench.runner.execute.execute_run` once per run, through the
picklable :class:`RunJob`:

- ``local``: in this process, one run after another; with several GPUs visible, one worker
  process per GPU (``CUDA_VISIBLE_DEVICES`` set per worker);
- ``ray``: one Ray task per run (:mod:`calibench.runner.ray`, ``pip install 'calibench[ray]'``);
- ``slurm``: one submitit job array (:mod:`calibench.runner.slurm`, ``calibench[slurm]``).

:func:`make_executor` builds one by name; :func:`run_sweep` runs a plan through one.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from calibench.errors import UsageError
from calibench.runner.execute import RunOutcome, describe, execute_run, skipped
from calibench.runner.plan import PlannedRun
from calibench.runner.view import LiveView
from calibench.spec import RunSpec
from calibench.status import Action, Outcome, next_action

# -- the executor interface -----------------------------------------------------------------------
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

    @classmethod
    def from_options(
        cls, *, device: str = "auto", results_dir: Path | str = ".", **options: Any
    ) -> Executor:
        """The executor for a command line's ``device``, ``results_dir`` and own ``options``."""
        return cls(**options)

    def check(self) -> None:
        """Raise :class:`UsageError` if this executor cannot start here (a missing optional
        dependency, no cluster); ``calibench run`` calls it before any work."""
        return None  # the local executor always can

    @abstractmethod
    def run(self, specs: Sequence[RunSpec], job: RunJob, on_done: OnDone) -> None: ...

    def describe(self) -> str:
        return self.name


# -- local ----------------------------------------------------------------------------------------
def visible_gpus(device: str) -> list[str]:
    """CUDA device ids a local sweep may use: none for ``cpu``, else every visible GPU."""
    if device == "cpu" or device.startswith("cuda:"):
        return []
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else []
    return ids[:count] if ids else [str(i) for i in range(count)]


def _claim_gpu(queue: multiprocessing.Queue) -> None:
    """Worker initializer: pin this worker process to one GPU before CUDA starts."""
    os.environ["CUDA_VISIBLE_DEVICES"] = queue.get()


class LocalExecutor(Executor):
    """Runs in this process one after another, or with ``workers`` (GPU ids), one spawned worker
    process per id, each seeing only its GPU through ``CUDA_VISIBLE_DEVICES``."""

    name = "local"

    def __init__(self, workers: Sequence[str] = ()) -> None:
        self.workers = list(workers)

    @classmethod
    def from_options(
        cls, *, device: str = "auto", results_dir: Path | str = ".", **options: Any
    ) -> LocalExecutor:
        """One worker per visible GPU unless ``device`` is ``cpu`` or names one GPU."""
        return cls(visible_gpus(device), **options)

    def describe(self) -> str:
        if len(self.workers) > 1:
            return f"local, {len(self.workers)} worker processes (GPUs {','.join(self.workers)})"
        return "local, sequential"

    def run(self, specs: Sequence[RunSpec], job: RunJob, on_done: OnDone) -> None:
        if len(self.workers) <= 1:
            for spec in specs:
                on_done(spec, job(spec))
            return
        self._run_pool(specs, job, on_done)

    def _run_pool(self, specs: Sequence[RunSpec], job: RunJob, on_done: OnDone) -> None:
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        for gpu in self.workers:
            queue.put(gpu)
        if job.device == "auto":
            job = replace(job, device="cuda")
        pool = ProcessPoolExecutor(
            max_workers=len(self.workers), mp_context=ctx, initializer=_claim_gpu, initargs=(queue,)
        )
        futures = {pool.submit(job, spec): spec for spec in specs}
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    try:
                        outcome = future.result()
                    except BrokenProcessPool:
                        outcome = lost(futures[future], "a worker process died (rerun to resume)")
                    on_done(futures[future], outcome)
        except KeyboardInterrupt:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)


# -- by name --------------------------------------------------------------------------------------
#: Each executor's class, as ``module:Class``; ray and slurm are imported only when chosen.
EXECUTORS: dict[str, str] = {
    "local": f"{__name__}:LocalExecutor",
    "ray": "calibench.runner.ray:RayExecutor",
    "slurm": "calibench.runner.slurm:SlurmExecutor",
}


def make_executor(name: str, **options: Any) -> Executor:
    """The executor ``name`` (a key of :data:`EXECUTORS`), built from command-line options.

    An option is either shared (``device``, ``results_dir``) or named after its executor
    (``ray_address``, ``slurm_partition``). The shared options and the chosen executor's own,
    without their prefix, go to its :meth:`Executor.from_options`; the other executors' options
    are ignored, so a command line can pass every option it has.
    """
    if name not in EXECUTORS:
        raise UsageError(f"unknown executor '{name}'; choose one of {', '.join(EXECUTORS)}")
    module, _, class_name = EXECUTORS[name].partition(":")
    cls: type[Executor] = getattr(importlib.import_module(module), class_name)
    own: dict[str, Any] = {}
    for key, value in options.items():
        prefix, _, rest = key.partition("_")
        if prefix == name:
            own[rest] = value
        elif prefix not in EXECUTORS:
            own[key] = value
    return cls.from_options(**own)


# -- the sweep ------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    outcomes: list[RunOutcome] = field(default_factory=list)
    interrupted: bool = False

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status is Outcome.FAILED]

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else 1 if self.failed else 0


def run_sweep(
    plan: Sequence[PlannedRun],
    executor: Executor,
    job: RunJob,
    *,
    console: Console | None = None,
    live: bool = True,
) -> SweepResult:
    """Execute every run of ``plan`` that needs it; outcomes come back in plan order.

    Ctrl-C stops the executor; finished records and the latest checkpoints stay on disk, and
    the result says ``interrupted``.
    """
    console = console or Console()
    by_id: dict[str, RunOutcome] = {}
    todo = [r for r in plan if next_action(r.state, job.retry_diverged) is not Action.SKIP]
    for run in plan:
        if run not in todo:
            by_id[run.run_id] = skipped(run)
    interrupted = False
    with LiveView(todo, console, live=live and console.is_terminal) as view:

        def on_done(spec: RunSpec, outcome: RunOutcome) -> None:
            by_id[outcome.run_id] = outcome
            view.finished(outcome)

        try:
            if todo:
                executor.run([r.spec for r in todo], job, on_done)
        except KeyboardInterrupt:
            interrupted = True
    outcomes = [by_id[r.run_id] for r in plan if r.run_id in by_id]
    return SweepResult(outcomes, interrupted)
