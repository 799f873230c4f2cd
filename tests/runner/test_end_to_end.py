"""Real runs (resnet20, tiny protocol, CPU) through every executor, with kills and resumes.

All records of the same spec must carry identical metrics whatever ran them: in-process,
worker processes, a real multi-process Ray cluster, submitit's local executor, and a sweep
killed with SIGKILL then rerun. Every run uses one torch thread (CPU results are bit-identical
only for a fixed thread count).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from calibench.protocols import load_protocol
from calibench.records import load_record
from calibench.runner.execute import RunOutcome
from calibench.runner.executors import Executor, LocalExecutor, RunJob
from calibench.runner.plan import (
    LOGS,
    PROGRESS,
    RECORD,
    LossChoice,
    build_specs,
    has_checkpoint,
    read_json,
    run_dir,
)
from calibench.spec import RunSpec

pytestmark = pytest.mark.slow


def specs_for(protocol: Any, seeds: list[int], **deviations: Any) -> list[RunSpec]:
    return build_specs(
        protocol, [LossChoice("ce")], ["resnet20"], ["cifar10"], seeds, ["gaussian"], deviations
    )


def comparable(results: Path, spec: RunSpec) -> dict[str, Any]:
    """What must not depend on the executor: status, metrics, epoch, loss history."""
    record = load_record(run_dir(results, spec))
    return {k: record[k] for k in ("status", "metrics", "epoch", "history", "spec")}


def run_all(executor: Executor, specs: list[RunSpec], job: RunJob) -> list[RunOutcome]:
    outcomes: list[RunOutcome] = []
    executor.run(specs, job, lambda spec, outcome: outcomes.append(outcome))
    return outcomes


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def first_checkpoint_pid(directory: Path) -> int | None:
    """The worker pid from progress.json once the run has written a checkpoint."""
    progress = read_json(directory / PROGRESS)
    if progress and has_checkpoint(directory):
        return int(progress["pid"])
    return None


def attempts(directory: Path) -> list[dict[str, Any]]:
    lines = (directory / LOGS / "attempts.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    thread.start()
    return thread, box


@pytest.fixture(scope="module")
def reference(tiny_protocol, shared_data_dir, tmp_path_factory) -> tuple[Path, list[RunSpec]]:
    """Seeds 0 and 1 run in this process, one after another: the reference records."""
    results = tmp_path_factory.mktemp("reference")
    specs = specs_for(tiny_protocol, [0, 1])
    job = RunJob(str(results), "cpu", str(shared_data_dir), threads=1)
    outcomes = run_all(LocalExecutor(), specs, job)
    assert [o.status for o in outcomes] == ["completed", "completed"], outcomes
    return results, specs


def test_a_run_records_the_shift_grid_of_its_dataset(reference, tiny_protocol) -> None:
    """The protocol's shift suite for cifar10 is evaluated through train_and_record: every cell
    of the grid, on the capped images, with its source; the executors' tests below then check
    that the grid is identical whichever process made it."""
    results, specs = reference
    record = load_record(run_dir(results, specs[0]))
    shift = record["metrics"]["shift"]
    assert shift["suite"] == "cifar10-c" and shift["source"]["kind"] in ("official", "generated")
    assert shift["max_images"] == tiny_protocol.eval.shift_max_images == shift["n_images"]
    assert len(shift["grid"]) == len(shift["corruptions"]) > 0
    for per in shift["grid"].values():
        assert list(per) == [str(s) for s in shift["severities"]] == ["1", "2", "3", "4", "5"]
        assert all(
            0.0 <= cell["acc"] <= 1.0 and cell["ece_ts"] is not None for cell in per.values()
        )
    assert set(shift["summary"]["by_severity"]) == {"1", "2", "3", "4", "5"}
    assert "clean val split" in record["conventions"]["shift"]


def test_worker_processes_match_in_process_runs(reference, shared_data_dir, tmp_path) -> None:
    ref_dir, specs = reference
    job = RunJob(str(tmp_path), "cpu", str(shared_data_dir), threads=1)
    outcomes = run_all(LocalExecutor(workers=["", ""]), specs, job)
    assert sorted(o.status for o in outcomes) == ["completed", "completed"], outcomes
    for spec in specs:
        assert comparable(tmp_path, spec) == comparable(ref_dir, spec)


def test_a_stateless_loss_records_no_loss_state_and_an_unused_val_split(reference) -> None:
    ref_dir, specs = reference
    record = load_record(run_dir(ref_dir, specs[0]))
    assert record["loss_state"] is None
    assert record["training"] == {"val_used_in_training": False, "precision": "fp32"}
    assert record["conventions"]["val_split"].startswith("not used in training")
    assert not (run_dir(ref_dir, specs[0]) / "loss_state.json").exists()


def same_files(a: Path, b: Path, spec: RunSpec) -> bool:
    """The run's two saved arrays files hold equal arrays in both results folders."""
    import numpy as np

    for name in ("test_predictions.npz", "ood_scores.npz"):
        with np.load(run_dir(a, spec) / name) as x, np.load(run_dir(b, spec) / name) as y:
            if sorted(x.files) != sorted(y.files):
                return False
            if not all(np.array_equal(x[k], y[k]) for k in x.files):
                return False
    return True


def test_two_runs_per_cpu_match_a_sequential_sweep_with_the_same_threads_per_run(
    reference, shared_data_dir, tmp_path, tmp_path_factory
) -> None:
    """``calibench run --runs-per-device 2 --cpu-threads 2``: two worker processes of one thread
    each; its 4 records equal those of one-thread runs made one after another in-process."""
    ref_dir, _ = reference
    sequential = tmp_path_factory.mktemp("sequential4")
    shutil.copytree(ref_dir, sequential, dirs_exist_ok=True)  # seeds 0 and 1 done
    specs = specs_for(load_protocol("tiny"), [0, 1, 2, 3])
    job = RunJob(str(sequential), "cpu", str(shared_data_dir), threads=1)
    run_all(LocalExecutor(), specs, job)

    cmd = [
        sys.executable, "-m", "calibench", "run", "--losses", "ce", "--backbone", "resnet20",
        "--dataset", "cifar10", "--ood", "gaussian", "--protocol", "tiny", "--seeds", "0-3",
        "--data-root", str(shared_data_dir), "--results", str(tmp_path), "--device", "cpu",
        "--cpu-threads", "2", "--runs-per-device", "2", "--no-live",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "2 worker processes sharing the CPU" in out
    assert "4 completed, 0 skipped, 0 diverged, 0 failed" in out
    pids = set()
    for spec in specs:
        assert comparable(tmp_path, spec) == comparable(sequential, spec)
        assert same_files(tmp_path, sequential, spec)
        for results in (tmp_path, sequential):
            assert load_record(run_dir(results, spec))["timing"]["cpu_threads"] == 1
        pids.add(attempts(run_dir(tmp_path, spec))[0]["pid"])
    assert proc.pid not in pids and len(pids) <= 2  # the runs went to the worker processes


def test_sweep_killed_with_sigkill_then_rerun_loses_and_duplicates_nothing(
    reference, shared_data_dir, tmp_path
) -> None:
    ref_dir, specs = reference
    cmd = [
        sys.executable, "-m", "calibench", "run", "--losses", "ce", "--backbone", "resnet20",
        "--dataset", "cifar10", "--ood", "gaussian", "--protocol", "tiny", "--seeds", "0,1",
        "--data-root", str(shared_data_dir), "--results", str(tmp_path), "--device", "cpu",
        "--cpu-threads", "1", "--checkpoint-every", "0", "--no-live",
    ]  # fmt: skip
    first, second = (run_dir(tmp_path, s) for s in specs)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: (first / RECORD).exists(), 120, "the first record")
        wait_for(lambda: first_checkpoint_pid(second), 120, "a checkpoint of the second run")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert not (second / RECORD).exists()

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "1 completed, 1 skipped, 0 diverged, 0 failed" in rerun.stdout
    for spec, directory in zip(specs, (first, second), strict=True):
        assert comparable(tmp_path, spec) == comparable(ref_dir, spec)
        assert not list(directory.glob(".*.tmp")) and not (directory / PROGRESS).exists()
    assert [a["event"] for a in attempts(second)] == ["start", "start", "completed"]
    assert attempts(second)[1]["resumed"] is True
    records = sorted(tmp_path.rglob(RECORD))
    assert records == sorted([first / RECORD, second / RECORD])

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "0 completed, 2 skipped" in again.stdout


def test_killing_the_parent_of_worker_processes_stops_them_and_the_rerun_completes(
    reference, shared_data_dir, tmp_path
) -> None:
    """SIGKILL of ``calibench run --runs-per-device 2``: its workers notice, checkpoint at the
    end of their step and exit (no orphan trains on); the rerun ends with the reference records."""
    ref_dir, specs = reference
    cmd = [
        sys.executable, "-m", "calibench", "run", "--losses", "ce", "--backbone", "resnet20",
        "--dataset", "cifar10", "--ood", "gaussian", "--protocol", "tiny", "--seeds", "0,1",
        "--data-root", str(shared_data_dir), "--results", str(tmp_path), "--device", "cpu",
        "--cpu-threads", "2", "--runs-per-device", "2", "--no-live",
    ]  # fmt: skip
    dirs = [run_dir(tmp_path, s) for s in specs]

    def training() -> bool:
        progress = [read_json(d / PROGRESS) or {} for d in dirs]
        return any(p.get("phase") == "train" and p.get("step") for p in progress)

    def children(parent: int) -> list[int]:
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                found.append(int(stat.parent.name))
        return found

    def alive(pid: int) -> bool:  # a zombie (exited, not yet reaped) counts as gone
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(training, 180, "a run training in a worker process")
        workers = children(proc.pid)
        assert len(workers) >= 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        wait_for(lambda: not any(alive(pid) for pid in workers), 120, "the workers to exit")
    finally:
        proc.kill()
        proc.wait()
    for directory in dirs:
        assert (directory / RECORD).exists() or has_checkpoint(directory)

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    for spec in specs:
        assert comparable(tmp_path, spec) == comparable(ref_dir, spec)


# -- Ray: a real multi-process cluster (head + one worker node, each its own raylet) ----------
@pytest.fixture(scope="module")
def ray_cluster(tiny_protocol):
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False},  # tasks go to the worker
    )
    try:
        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_ray_records_equal_local_records(ray_cluster, reference, shared_data_dir, tmp_path):
    from calibench.runner.ray import RayExecutor

    ref_dir, specs = reference
    job = RunJob(str(tmp_path), "auto", str(shared_data_dir), threads=1)
    outcomes = run_all(RayExecutor(ray_cluster.address), specs, job)
    assert sorted(o.status for o in outcomes) == ["completed", "completed"], outcomes
    for spec in specs:
        assert comparable(tmp_path, spec) == comparable(ref_dir, spec)
        assert attempts(run_dir(tmp_path, spec))[0]["pid"] != os.getpid()


def test_ray_retries_a_sigkilled_worker_and_resumes(
    ray_cluster, tiny_protocol, shared_data_dir, tmp_path
):
    from calibench.runner.ray import RayExecutor

    (spec,) = specs_for(tiny_protocol, [0], epochs=4)
    directory = run_dir(tmp_path, spec)
    job = RunJob(str(tmp_path), "cpu", str(shared_data_dir), threads=1, checkpoint_every=0)
    executor = RayExecutor(ray_cluster.address, max_retries=2)
    thread, box = in_thread(lambda: run_all(executor, [spec], job))
    pid = wait_for(lambda: first_checkpoint_pid(directory), 180, "the Ray task's first checkpoint")
    os.kill(pid, signal.SIGKILL)
    thread.join(300)
    assert not thread.is_alive()
    (outcome,) = box[0]
    assert outcome.status == "completed" and outcome.resumed, outcome
    starts = [a for a in attempts(directory) if a["event"] == "start"]
    assert len(starts) == 2 and starts[0]["pid"] == pid and starts[1]["resumed"] is True
    record = load_record(directory)
    assert record["status"] == "completed" and record["epoch"] == 4
    assert len(record["history"]) == 4


# -- SLURM through submitit's local executor ----------------------------------------------------
def test_submitit_array_requeue_resumes_from_checkpoint(
    reference, tiny_protocol, shared_data_dir, tmp_path
):
    pytest.importorskip("submitit")
    from calibench.runner.slurm import SlurmExecutor

    ref_dir, specs = reference
    job = RunJob(str(tmp_path), "cpu", str(shared_data_dir), threads=1, checkpoint_every=0)
    executor = SlurmExecutor(
        tmp_path / ".submitit", cluster="local", array_parallelism=2, poll_s=0.2, timeout_min=10
    )
    thread, box = in_thread(lambda: run_all(executor, specs, job))
    directory = run_dir(tmp_path, specs[0])
    pid = wait_for(lambda: first_checkpoint_pid(directory), 180, "the array task's checkpoint")
    os.kill(pid, signal.SIGUSR2)  # SLURM's warning: checkpoint at the next step, then requeue
    thread.join(300)
    assert not thread.is_alive()
    assert sorted(o.status for o in box[0]) == ["completed", "completed"], box[0]
    starts = [a for a in attempts(directory) if a["event"] == "start"]
    assert len(starts) == 2 and starts[1]["resumed"] is True
    for spec in specs:
        assert comparable(tmp_path, spec) == comparable(ref_dir, spec)


def test_train_accuracy_script_reads_the_final_weights_on_the_training_subset(
    reference, shared_data_dir
) -> None:
    """benchmarks/train_accuracy.py against a plain-torch oracle: normalise the run's training
    images by hand, NCHW, the checkpoint's weights in eval mode, argmax."""
    import importlib.util

    import numpy as np
    import torch

    from calibench.registry import create_backbone, create_dataset
    from calibench.training.checkpoint import list_checkpoints, load_checkpoint

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "train_accuracy.py"
    module_spec = importlib.util.spec_from_file_location("train_accuracy", script)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)

    results, specs = reference
    directory = run_dir(results, specs[0])
    got = module.train_accuracy(directory, shared_data_dir)
    assert got["train_images"] == 256 and got["epoch"] == 2 and got["seed"] == 0

    protocol = load_protocol("tiny")
    data = create_dataset("cifar10", root=shared_data_dir, val_size=protocol.data.val_size)
    train = data.with_train_subset(256).train
    x = train.x.float().div(255).permute(0, 3, 1, 2)
    x = (x - torch.tensor(data.mean).view(1, 3, 1, 1)) / torch.tensor(data.std).view(1, 3, 1, 1)
    model = create_backbone("resnet20", num_classes=10)
    _, checkpoint = list_checkpoints(directory / "checkpoints")[-1]
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    with torch.no_grad():
        expected = (model.eval()(x).argmax(1) == train.y).float().mean().item()
    assert np.isclose(got["train_acc"], expected, atol=1 / 256)
