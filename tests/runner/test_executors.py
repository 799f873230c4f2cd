"""make_executor: each executor built from the command line's options, by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from calibench.errors import UsageError
from calibench.runner import executors
from calibench.runner.executors import EXECUTORS, LocalExecutor, RunJob, make_executor

OPTIONS = {
    "ray_address": "ray://head:10001",
    "ray_max_retries": 5,
    "slurm_array_parallelism": 4,
    "slurm_partition": "gpu",
    "slurm_timeout_min": 60,
}


def test_local_on_cpu_runs_in_this_process(tmp_path: Path) -> None:
    executor = make_executor("local", device="cpu", results_dir=tmp_path, **OPTIONS)
    assert isinstance(executor, LocalExecutor) and executor.workers == []
    assert executor.describe() == "local, sequential"


def test_ray_gets_its_own_options(tmp_path: Path) -> None:
    from calibench.runner.ray import RayExecutor

    executor = make_executor("ray", device="auto", results_dir=tmp_path, **OPTIONS)
    assert isinstance(executor, RayExecutor)
    assert (executor.address, executor.max_retries) == ("ray://head:10001", 5)


@pytest.mark.parametrize(("device", "gpus"), [("cpu", 0), ("auto", 1)])
def test_slurm_gets_its_own_options(tmp_path: Path, device: str, gpus: int) -> None:
    from calibench.runner.slurm import SlurmExecutor

    executor = make_executor("slurm", device=device, results_dir=tmp_path, **OPTIONS)
    assert isinstance(executor, SlurmExecutor)
    assert executor.folder == tmp_path / ".submitit" and executor.array_parallelism == 4
    assert executor.parameters["slurm_partition"] == "gpu"
    assert executor.parameters["timeout_min"] == 60
    assert executor.parameters["gpus_per_node"] == gpus


def test_unknown_executor_and_misspelt_option_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown executor 'dask'; choose one of local, ray"):
        make_executor("dask", results_dir=tmp_path)
    with pytest.raises(TypeError, match="adress"):
        make_executor("ray", ray_adress="auto")
    assert list(EXECUTORS) == ["local", "ray", "slurm"]


@pytest.mark.parametrize(
    ("device", "n", "workers"),
    [("cpu", 1, []), ("cpu", 2, ["", ""]), ("auto", 3, ["", "", ""])],
)
def test_runs_per_device_on_the_cpu_are_worker_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str, n: int, workers: list[str]
) -> None:
    monkeypatch.setattr(executors, "_cuda_ids", lambda: [])  # no GPU here, whatever the machine
    executor = make_executor("local", device=device, results_dir=tmp_path, runs_per_device=n)
    assert isinstance(executor, LocalExecutor) and executor.workers == workers
    assert executor.describe() == (
        f"local, {n} worker processes sharing the CPU" if n > 1 else "local, sequential"
    )


@pytest.mark.parametrize(("threads", "n", "each"), [(2, 2, 1), (4, 2, 2), (5, 2, 2), (1, 4, 1)])
def test_cpu_workers_share_the_threads(threads: int, n: int, each: int) -> None:
    executor = LocalExecutor([""] * n, runs_per_device=n)
    job = executor.worker_job(RunJob("results", "auto", threads=threads))
    assert (job.device, job.threads) == ("cpu", each)


def test_cpu_workers_share_torchs_default_threads_without_cpu_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(executors, "default_cpu_threads", lambda: 8)
    job = LocalExecutor(["", "", ""], runs_per_device=3).worker_job(RunJob("results", "cpu"))
    assert job.threads == 8 // 3


def test_runs_per_device_on_gpus_pins_n_workers_to_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executors, "_cuda_ids", lambda: ["3", "5"])
    executor = make_executor("local", device="auto", results_dir=tmp_path, runs_per_device=2)
    assert executor.workers == ["3", "3", "5", "5"]
    assert executor.describe() == "local, 4 worker processes (2 per GPU, GPUs 3,5)"
    job = executor.worker_job(RunJob("results", "auto", threads=7))
    assert (job.device, job.threads) == ("cuda", 7)  # GPU workers keep their threads
    one = make_executor("local", device="cuda:1", results_dir=tmp_path, runs_per_device=3)
    assert one.workers == ["5", "5", "5"]
    assert make_executor("local", device="cuda:1", results_dir=tmp_path).workers == []
    with pytest.raises(UsageError, match="'cuda:2' does not exist: 2 CUDA device"):
        make_executor("local", device="cuda:2", results_dir=tmp_path, runs_per_device=2)
    with pytest.raises(UsageError, match="--runs-per-device must be a positive integer"):
        make_executor("local", device="auto", results_dir=tmp_path, runs_per_device=0)


@pytest.mark.parametrize("name", ["ray", "slurm"])
def test_runs_per_device_is_refused_by_the_cluster_executors(tmp_path: Path, name: str) -> None:
    with pytest.raises(UsageError, match="--runs-per-device is for the local executor"):
        make_executor(name, device="auto", results_dir=tmp_path, runs_per_device=2, **OPTIONS)
    make_executor(name, device="auto", results_dir=tmp_path, runs_per_device=1, **OPTIONS)


def test_slurm_batch_script_asks_for_usr2_before_the_time_limit(tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    from submitit.slurm.slurm import _make_sbatch_string

    from calibench.runner.slurm import SIGNAL_DELAY_S

    executor = make_executor("slurm", device="auto", results_dir=tmp_path, **OPTIONS)
    slurm = {k[len("slurm_") :]: v for k, v in executor.parameters.items() if "slurm_" in k}
    script = _make_sbatch_string(command="python -m calibench", folder=str(tmp_path), **slurm)
    assert f"#SBATCH --signal=USR2@{SIGNAL_DELAY_S}\n" in script
