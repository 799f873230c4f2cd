"""How the runs of a plan are scheduled: the executor interface, the executors by name, the sweep.

Every executor calls :func:`~calibench.runner.execute.execute_run` once per run, through the
picklable :class:`RunJob`:

- ``local``: in this process, one run after another; with several GPUs visible, or
  ``runs_per_device`` N > 1, N spawned worker processes per GPU (``CUDA_VISIBLE_DEVICES`` set
  per worker), or N on the CPU, each with ``cpu_threads // N`` torch threads;
- ``ray``: one Ray task per run (:mod:`calibench.runner.ray`, ``pip install 'calibench[ray]'``);
- ``slurm``: one submitit job array (:mod:`calibench.runner.slurm`, ``calibench[slurm]``).

:func:`make_executor` builds one by name; :func:`run_sweep` runs a plan through one.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from calibench.errors import TrainingInterrupted, UsageError
from calibench.runner.execute import RunOutcome, describe, execute_run, skipped
from calibench.runner.plan import PlannedRun
from calibench.runner.view import LiveView
from calibench.spec import RunSpec
from calibench.status import Action, Outcome, next_action
from calibench.training import CHECKPOINT_EVERY_S

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
    checkpoint_every: float = CHECKPOINT_EVERY_S

    def __call__(self, spec: RunSpec) -> RunOutcome:
        return execute_run(
            spec,
            self.results_dir,
            self.device,
            self.data_root,
            retry_diverged=self.retry_diverged,
            compile=self.compile,
            threads=self.threads,
            checkpoint_every=self.checkpoint_every,
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
    return _cuda_ids()


def _cuda_ids() -> list[str]:
    """The ids of the visible CUDA devices, as ``CUDA_VISIBLE_DEVICES`` names them."""
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else []
    return ids[:count] if ids else [str(i) for i in range(count)]


def device_workers(device: str, runs_per_device: int = 1) -> list[str]:
    """The worker processes of a local sweep, as the GPU id each one sees (``""``: none, a CPU
    worker): ``runs_per_device`` per visible GPU (per the one GPU ``cuda:K`` names); on the
    CPU, ``runs_per_device`` workers, or none (the runs go one after another in this process)."""
    if not isinstance(runs_per_device, int) or runs_per_device < 1:
        raise UsageError(f"--runs-per-device must be a positive integer, got {runs_per_device!r}")
    gpus = visible_gpus(device)
    if device.startswith("cuda:") and runs_per_device > 1:
        ids, index = _cuda_ids(), device.partition(":")[2]
        if not index.isdigit() or int(index) >= len(ids):
            raise UsageError(f"device {device!r} does not exist: {len(ids)} CUDA device(s)")
        gpus = [ids[int(index)]]
    if not gpus:
        return [""] * runs_per_device if runs_per_device > 1 else []
    return [gpu for gpu in gpus for _ in range(runs_per_device)]


def default_cpu_threads() -> int:
    """torch's intra-op thread count in this process: what a run uses without ``--cpu-threads``."""
    import torch

    return torch.get_num_threads()


# What a worker process knows about itself (set by its initializer; see LocalExecutor._run_pool).
_STOPPING = threading.Event()  # no new run may start: a stop signal came, or the parent died
_IDLE = threading.Event()  # no run in progress
_IDLE.set()


def _start_worker(queue: multiprocessing.Queue, parent: int) -> None:
    """Worker initializer: pin this worker process to its GPU before CUDA starts (``""``: none),
    leave Ctrl-C to the parent (it stops the workers with SIGTERM), turn SIGTERM into a clean
    stop, and watch the parent."""
    os.environ["CUDA_VISIBLE_DEVICES"] = queue.get()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_sigterm)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _worker_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM in a worker: no new run; a run in progress stops (the trainer calls this after
    its checkpoint; elsewhere the run stops at once, resumable from its last checkpoint)."""
    _STOPPING.set()
    if not _IDLE.is_set():
        raise TrainingInterrupted(signum)


def _watch_parent(parent: int, poll_s: float = 1.0) -> None:
    """If the parent dies (even by SIGKILL), stop this worker's run cleanly and exit, instead
    of finishing it and waiting forever for work that will not come."""
    while os.getppid() == parent:
        time.sleep(poll_s)
    _STOPPING.set()
    if not _IDLE.is_set():
        os.kill(os.getpid(), signal.SIGTERM)
        _IDLE.wait()
    os._exit(1)


def _work(job: RunJob, spec: RunSpec) -> RunOutcome:
    """One run in a worker process, unless the sweep is stopping."""
    _IDLE.clear()
    try:
        if _STOPPING.is_set():  # checked once busy: a SIGTERM from now on raises in the run
            raise TrainingInterrupted(signal.SIGTERM, "before the run started")
        return job(spec)
    except KeyboardInterrupt:
        _STOPPING.set()
        raise
    finally:
        _IDLE.set()


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """In the main thread: SIGTERM stops this process like Ctrl-C (a :class:`TrainingInterrupted`,
    which the trainer raises only after its checkpoint)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise TrainingInterrupted(signum)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class LocalExecutor(Executor):
    """Runs in this process one after another, or with ``workers`` (GPU ids, ``""`` for a CPU
    worker), one spawned worker process per entry, each seeing only its GPU through
    ``CUDA_VISIBLE_DEVICES``. With ``runs_per_device`` N, N workers share each device; CPU
    workers then get ``cpu_threads // N`` torch threads each (at least 1), ``cpu_threads``
    being the job's ``threads`` or torch's default here.

    Every run still owns its folder and lock, and writes its record itself, so whatever
    happens to this process later, a finished run's record is on disk. Ctrl-C or SIGTERM here
    sends SIGTERM to the workers: each checkpoints at the end of its current step and stops;
    runs that finish meanwhile are still reported. A worker whose parent dies (SIGKILL) stops
    its run the same way and exits.
    """

    name = "local"

    def __init__(self, workers: Sequence[str] = (), runs_per_device: int = 1) -> None:
        self.workers = list(workers)
        self.runs_per_device = runs_per_device

    @classmethod
    def from_options(
        cls,
        *,
        device: str = "auto",
        results_dir: Path | str = ".",
        runs_per_device: int = 1,
        **options: Any,
    ) -> LocalExecutor:
        """``runs_per_device`` workers per visible GPU unless ``device`` is ``cpu`` or names one
        GPU; on the CPU, ``runs_per_device`` workers (1: this process)."""
        workers = device_workers(device, runs_per_device)
        return cls(workers, runs_per_device, **options)

    @property
    def on_gpus(self) -> bool:
        return any(self.workers)

    def describe(self) -> str:
        n = len(self.workers)
        if n > 1 and self.on_gpus:
            gpus = ",".join(dict.fromkeys(self.workers))
            return f"local, {n} worker processes ({self.runs_per_device} per GPU, GPUs {gpus})"
        if n > 1:
            return f"local, {n} worker processes sharing the CPU"
        return "local, sequential"

    def worker_job(self, job: RunJob) -> RunJob:
        """``job`` as the workers run it: on the GPUs (``cuda``), or on the CPU with its share of
        the threads."""
        if self.on_gpus:
            return replace(job, device="cuda") if job.device == "auto" else job
        threads = max(1, (job.threads or default_cpu_threads()) // self.runs_per_device)
        return replace(job, device="cpu", threads=threads)

    def run(self, specs: Sequence[RunSpec], job: RunJob, on_done: OnDone) -> None:
        if len(self.workers) <= 1:
            for spec in specs:
                on_done(spec, job(spec))
            return
        self._run_pool(specs, self.worker_job(job), on_done)

    def _run_pool(self, specs: Sequence[RunSpec], job: RunJob, on_done: OnDone) -> None:
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        for gpu in self.workers:
            queue.put(gpu)
        pool = ProcessPoolExecutor(
            max_workers=len(self.workers),
            mp_context=ctx,
            initializer=_start_worker,
            initargs=(queue, os.getpid()),
        )
        futures = {pool.submit(_work, job, spec): spec for spec in specs}
        pending = set(futures)

        def report(done: set[Future[RunOutcome]], stopping: bool = False) -> None:
            for future in done:
                try:
                    outcome = future.result()
                except BrokenProcessPool:
                    outcome = lost(futures[future], "a worker process died (rerun to resume)")
                except (KeyboardInterrupt, Exception):
                    if not stopping:
                        raise
                    continue  # stopped by us: resumable, nothing to report
                on_done(futures[future], outcome)

        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                report(done)
        except KeyboardInterrupt:
            for future in pending:
                future.cancel()
            for pid in list(getattr(pool, "_processes", None) or {}):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            running = {f for f in pending if not f.cancelled()}
            report(wait(running).done, stopping=True)
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
    signum: int = signal.SIGINT  # the signal that interrupted the sweep

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status is Outcome.FAILED]

    @property
    def exit_code(self) -> int:
        """128 + the signal when interrupted (130: Ctrl-C, 143: SIGTERM), 1 if a run failed."""
        return 128 + self.signum if self.interrupted else 1 if self.failed else 0


def run_sweep(
    plan: Sequence[PlannedRun],
    executor: Executor,
    job: RunJob,
    *,
    console: Console | None = None,
    live: bool = True,
) -> SweepResult:
    """Execute every run of ``plan`` that needs it; outcomes come back in plan order.

    Ctrl-C or SIGTERM stops the executor (a training run checkpoints at the end of its
    current step first); finished records and the latest checkpoints stay on disk, and the
    result says ``interrupted``.
    """
    console = console or Console()
    by_id: dict[str, RunOutcome] = {}
    todo = [r for r in plan if next_action(r.state, job.retry_diverged) is not Action.SKIP]
    for run in plan:
        if run not in todo:
            by_id[run.run_id] = skipped(run)
    interrupted, signum = False, int(signal.SIGINT)
    with LiveView(todo, console, live=live and console.is_terminal) as view:

        def on_done(spec: RunSpec, outcome: RunOutcome) -> None:
            by_id[outcome.run_id] = outcome
            view.finished(outcome)

        try:
            if todo:
                with _sigterm_interrupts():
                    executor.run([r.spec for r in todo], job, on_done)
        except KeyboardInterrupt as exc:
            interrupted, signum = True, getattr(exc, "signum", signum)
    outcomes = [by_id[r.run_id] for r in plan if r.run_id in by_id]
    return SweepResult(outcomes, interrupted, signum)
