"""The SLURM executor: one submitit job array, one array task per run.

Each task is :class:`submitit.helpers.Checkpointable`: on preemption or timeout submitit
requeues it with the same arguments, and the run resumes from the latest checkpoint in its
folder. The batch script asks SLURM for ``--signal=USR2@<SIGNAL_DELAY_S>``: SIGUSR2 that many
seconds before the time limit. The trainer then checkpoints at the end of its current step and
only then hands the signal to submitit's handler, which requeues the job and exits; SIGTERM
(preemption) likewise checkpoints first, then training goes on until SLURM stops it. Needs ``pip install 'calibench[slurm]'`` and a results folder on a shared filesystem.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from calibench.errors import UsageError
from calibench.runner.execute import RunOutcome
from calibench.runner.executors import Executor, OnDone, RunJob, lost
from calibench.spec import RunSpec

#: Seconds before the time limit at which SLURM sends SIGUSR2: time to finish the current step
#: and write one checkpoint (a ResNet-50 one is about 190 MB) on a slow shared filesystem.
SIGNAL_DELAY_S = 90

try:
    from submitit.helpers import Checkpointable
except ImportError:  # the executor raises a clear error when used
    Checkpointable = object  # type: ignore[misc,assignment]


class SlurmRun(Checkpointable):
    """One array task; requeued as is after preemption/timeout, then resumes from checkpoint."""

    def __init__(self, job: RunJob) -> None:
        self.job = job

    def __call__(self, spec: RunSpec) -> RunOutcome:
        return self.job(spec)


class SlurmExecutor(Executor):
    """Submit the plan as one job array and wait for it.

    ``parameters`` go to ``AutoExecutor.update_parameters`` (e.g. ``slurm_partition``,
    ``gpus_per_node``, ``timeout_min``). ``cluster="local"`` runs the array with submitit's local
    executor (for tests and single machines).
    """

    name = "slurm"

    def __init__(
        self,
        folder: Path | str,
        *,
        array_parallelism: int = 16,
        max_num_timeout: int = 3,
        cluster: str | None = None,
        poll_s: float = 2.0,
        **parameters: Any,
    ) -> None:
        self.folder = Path(folder)
        self.array_parallelism = array_parallelism
        self.max_num_timeout = max_num_timeout
        self.cluster = cluster
        self.poll_s = poll_s
        self.parameters = {
            "timeout_min": 24 * 60,
            "gpus_per_node": 1,
            "cpus_per_task": 8,
            "slurm_signal_delay_s": SIGNAL_DELAY_S,
        }
        self.parameters.update(parameters)
        self.jobs: list[Any] = []

    @classmethod
    def from_options(
        cls,
        *,
        device: str = "auto",
        results_dir: Path | str = ".",
        array_parallelism: int = 16,
        partition: str | None = None,
        timeout_min: int = 24 * 60,
        runs_per_device: int = 1,
    ) -> SlurmExecutor:
        """Submitit logs under ``results_dir/.submitit``; no GPU asked for with ``device="cpu"``.
        ``--runs-per-device`` is refused: each array task is one run with its own GPU."""
        if runs_per_device != 1:
            raise UsageError(
                "--runs-per-device is for the local executor; each SLURM array task runs one run "
                "on its own GPU (to share a GPU, run 'calibench run --executor local "
                "--runs-per-device N' inside one allocation)"
            )
        params: dict[str, Any] = {"timeout_min": timeout_min}
        if partition:
            params["slurm_partition"] = partition
        if device == "cpu":
            params["gpus_per_node"] = 0
        return cls(Path(results_dir) / ".submitit", array_parallelism=array_parallelism, **params)

    def describe(self) -> str:
        return f"slurm job array (parallelism {self.array_parallelism}, logs in {self.folder})"

    def check(self) -> None:
        self._submitit_and_cluster()

    def _submitit_and_cluster(self) -> tuple[Any, str]:
        try:
            import submitit
        except ImportError:
            raise UsageError(
                "the slurm executor needs submitit: pip install 'calibench[slurm]'"
            ) from None
        cluster = self.cluster or ("slurm" if shutil.which("sbatch") else None)
        if cluster is None:
            raise UsageError(
                "no SLURM cluster found (sbatch is not on PATH); use --executor local or ray"
            )
        return submitit, cluster

    def make_executor(self) -> Any:
        submitit, cluster = self._submitit_and_cluster()
        executor = submitit.AutoExecutor(
            folder=self.folder,
            cluster=cluster,
            slurm_max_num_timeout=self.max_num_timeout,
            local_max_num_timeout=self.max_num_timeout,
        )
        parameters = dict(self.parameters)
        if cluster == "local":  # a local array has no GPUs to ask for unless the caller says so
            parameters.pop("gpus_per_node", None)
        executor.update_parameters(
            name="calibench", slurm_array_parallelism=self.array_parallelism, **parameters
        )
        return executor

    def run(self, specs: Sequence[RunSpec], job: RunJob, on_done: OnDone) -> None:
        executor = self.make_executor()
        self.jobs = executor.map_array(SlurmRun(job), list(specs))
        pending = dict(zip(self.jobs, specs, strict=True))
        try:
            while pending:
                for sjob in [j for j in pending if j.done()]:
                    spec = pending.pop(sjob)
                    try:
                        outcome = sjob.result()
                    except Exception as exc:
                        reason = " ".join(str(exc).split())[-300:]
                        outcome = lost(spec, f"SLURM job {sjob.job_id} failed: {reason}")
                    on_done(spec, outcome)
                if pending:
                    time.sleep(self.poll_s)
        except KeyboardInterrupt:
            for sjob in pending:
                sjob.cancel(check=False)
            raise
