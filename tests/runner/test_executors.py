"""make_executor: each executor built from the command line's options, by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from calibench.errors import UsageError
from calibench.runner.executors import EXECUTORS, LocalExecutor, make_executor

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
