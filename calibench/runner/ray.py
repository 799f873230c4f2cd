"""The Ray executor: one Ray task per run; Ray retries a task whose worker died, and the retried
run resumes from its checkpoint. Needs ``pip install 'calibench[ray]'``.

Every worker must see the same results folder (one machine, or a shared filesystem).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from calibench.errors import UsageError
from calibench.runner.execute import RunOutcome
from calibench.runner.executors import Executor, OnDone, RunJob, lost
from calibench.spec import RunSpec


def _execute(job: RunJob, spec: RunSpec) -> RunOutcome:
    return job(spec)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError("the ray executor needs Ray: pip install 'calibench[ray]'") from None
    return ray


class RayExecutor(Executor):
    """One task per run on the Ray cluster at ``address`` (None: start a local Ray instance).

    Tasks ask for one GPU when the cluster has GPUs and the device is not ``cpu``, else
    ``num_cpus`` CPUs. ``max_retries`` retries a task whose worker process or node died.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        max_retries: int = 3,
        num_cpus: float = 1,
        init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.address = address
        self.max_retries = max_retries
        self.num_cpus = num_cpus
        self.init_kwargs = dict(init_kwargs or {})

    @classmethod
    def from_options(
        cls,
        *,
        device: str = "auto",
        results_dir: Path | str = ".",
        address: str | None = None,
        max_retries: int = 3,
        runs_per_device: int = 1,
    ) -> RayExecutor:
        """The command line's ``--ray-address`` and ``--ray-max-retries``; ``--runs-per-device``
        is refused (one task per run, each with a GPU or its ``--cpu-threads`` CPUs)."""
        if runs_per_device != 1:
            raise UsageError(
                "--runs-per-device is for the local executor; the ray executor gives each run "
                "its own GPU (or --cpu-threads CPUs): use --executor local on one machine"
            )
        return cls(address, max_retries=max_retries)

    def describe(self) -> str:
        return f"ray ({self.address or 'local instance'})"

    def check(self) -> None:
        import_ray()

    def run(self, specs: Sequence[RunSpec], job: RunJob, on_done: OnDone) -> None:
        ray = import_ray()
        started = not ray.is_initialized()
        if started:
            try:
                ray.init(address=self.address, **self.init_kwargs)
            except ConnectionError as exc:
                raise UsageError(f"cannot connect to Ray at {self.address}: {exc}") from None
        try:
            self._run(ray, specs, job, on_done)
        finally:
            if started:
                ray.shutdown()

    def _run(self, ray: Any, specs: Sequence[RunSpec], job: RunJob, on_done: OnDone) -> None:
        use_gpu = job.device != "cpu" and ray.cluster_resources().get("GPU", 0) >= 1
        if job.device == "auto":
            job = replace(job, device="cuda" if use_gpu else "cpu")
        task = ray.remote(
            num_gpus=1 if use_gpu else 0,
            num_cpus=0 if use_gpu else job.threads or self.num_cpus,
            max_retries=self.max_retries,
            retry_exceptions=False,
        )(_execute)
        refs = {task.remote(job, spec): spec for spec in specs}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        outcome = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        reason = " ".join(str(exc).split())[:300]
                        outcome = lost(refs[ref], f"Ray task failed: {reason}")
                    on_done(refs[ref], outcome)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref)
            raise
