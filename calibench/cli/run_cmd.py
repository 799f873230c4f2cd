"""``calibench run``: plan a sweep (loss × backbone × dataset × seed) and execute it, resumably."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from calibench.errors import UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from calibench.protocols import Protocol
    from calibench.runner.executors import Executor, RunJob
    from calibench.runner.plan import PlannedRun


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class ExecutorName(str, Enum):
    """The keys of :data:`calibench.runner.executors.EXECUTORS`, written out to keep imports light."""

    local = "local"
    ray = "ray"
    slurm = "slurm"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def run_cmd(
    losses: str = typer.Option(
        "all", "--losses", "-l", help="'all' (plugins included) or NAME,NAME(param=value,...)."
    ),
    backbone: list[str] = typer.Option(
        ["resnet50"], "--backbone", "-b", help="Backbone(s); repeat or comma-separate."
    ),
    dataset: list[str] = typer.Option(
        None, "--dataset", "-d", help="Dataset(s); default: the protocol's dataset."
    ),
    ood: str = typer.Option(
        None, "--ood", help="OOD sets, comma-separated; default: the protocol's."
    ),
    seeds: str = typer.Option("0,1,2", "--seeds", "-s", help="Seeds: 0,1,2 or a range 0-4."),
    protocol: str = typer.Option(
        "standard",
        "--protocol",
        "-p",
        help="standard | fast | smoke, or a protocol file NAME.toml (its name field NAME).",
    ),
    epochs: int = typer.Option(
        None, "--epochs", help="Override the protocol's epochs (a deviation)."
    ),
    train_subset: int = typer.Option(
        None, "--train-subset", help="Train on a class-stratified subset of N images (a deviation)."
    ),
    data_root: Path = typer.Option(
        None,
        "--data-root",
        help="Folder of data files (offline); default: $CALIBENCH_DATA or cache.",
    ),
    results: Path = typer.Option(
        None, "--results", "-r", help="Results folder; default: $CALIBENCH_RESULTS or ./results."
    ),
    device: Device = typer.Option(Device.auto, "--device", help="auto | cpu | cuda."),
    executor: ExecutorName = typer.Option(ExecutorName.local, "--executor", "-e"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and exit."),
    retry_diverged: bool = typer.Option(
        False, "--retry-diverged", help="Train diverged runs again instead of keeping them."
    ),
    ray_address: str = typer.Option(
        None,
        "--ray-address",
        help="Ray cluster address ('auto', 'ray://host:10001'); default: start one.",
    ),
    ray_max_retries: int = typer.Option(3, "--ray-max-retries", help="Retries of a lost Ray task."),
    slurm_parallelism: int = typer.Option(
        16, "--slurm-array-parallelism", help="Max array tasks running at once."
    ),
    slurm_partition: str = typer.Option(None, "--slurm-partition"),
    slurm_timeout_min: int = typer.Option(24 * 60, "--slurm-timeout-min"),
    cpu_threads: int = typer.Option(
        None,
        "--cpu-threads",
        min=1,
        help="torch CPU threads (default: torch's); with --runs-per-device N on the CPU, each run "
        "gets N // runs threads. CPU results are reproducible for a fixed count per run.",
    ),
    runs_per_device: int = typer.Option(
        1,
        "--runs-per-device",
        min=1,
        help="Local executor: N worker processes per GPU (use CUDA MPS to overlap them) or, on "
        "the CPU, N processes sharing --cpu-threads.",
    ),
    checkpoint_every: float = typer.Option(
        300.0,
        "--checkpoint-every",
        min=0.0,
        help="Seconds between checkpoints (0: every epoch); always one at the end and on "
        "Ctrl-C, SIGTERM or SIGUSR2. Not part of the run id.",
    ),
    cpu_bf16: bool = typer.Option(
        False,
        "--cpu-bf16",
        help="On a CPU with AMX, train in the protocol's bf16 (autocast, as on CUDA) instead of "
        "float32: about 2x faster per core. Recorded in each record; a run never resumes in "
        "another precision. Local executor ($CALIBENCH_CPU_BF16=1 in workers elsewhere).",
    ),
    compile_model: bool = typer.Option(
        False, "--compile", help="torch.compile the model (CUDA; slower start, faster steps)."
    ),
    live: bool = typer.Option(True, "--live/--no-live", help="Rich live progress view."),
) -> None:
    """Run the benchmark sweep: every loss × backbone × dataset × seed, skipping finished runs."""
    from rich.console import Console

    from calibench.protocols import load_protocol, make_findable
    from calibench.runner.plan import (
        build_specs,
        default_results_dir,
        parse_backbones,
        parse_losses,
        parse_names,
        parse_seeds,
        plan_runs,
    )
    from calibench.runner.view import plan_table

    console = Console()
    proto = load_protocol(protocol)
    make_findable(proto)  # runs load it by name, in this process and in workers
    proto, deviations = proto.with_overrides(epochs=epochs, train_subset=train_subset)
    # Every name is checked here, before any work.
    loss_choices = parse_losses(losses)
    backbones = parse_backbones(backbone)
    datasets = parse_names(dataset or [proto.data.dataset], "datasets", "--dataset")
    ood_sets = parse_names(ood, "ood", "--ood") if ood is not None else list(proto.eval.ood)
    seed_list = parse_seeds(seeds)
    results_dir = Path(results) if results is not None else default_results_dir()

    specs = build_specs(proto, loss_choices, backbones, datasets, seed_list, ood_sets, deviations)
    plan = plan_runs(specs, results_dir)
    if dry_run:
        console.print(plan_table(plan, retry_diverged=retry_diverged))
        console.print(f"results folder: {results_dir.resolve()}/{proto.name}/<run id>/")
        return
    from calibench.runner.executors import RunJob, make_executor
    from calibench.runner.plan import check_data_available, cpu_sized
    from calibench.status import Action, next_action

    local_auto = device is Device.auto and executor is ExecutorName.local
    if local_auto and not cpu_sized(proto) and not _cuda_available():
        raise UsageError(_no_gpu_message(proto))
    runner = make_executor(
        executor.value,
        device=device.value,
        results_dir=results_dir,
        ray_address=ray_address,
        ray_max_retries=ray_max_retries,
        slurm_array_parallelism=slurm_parallelism,
        slurm_partition=slurm_partition,
        slurm_timeout_min=slurm_timeout_min,
        runs_per_device=runs_per_device,
    )
    runner.check()
    if cpu_bf16:
        _enable_cpu_bf16(executor, device)
    pending = [p.spec for p in plan if next_action(p.state, retry_diverged) is not Action.SKIP]
    if pending and executor is ExecutorName.local:
        # Cluster workers may see other files than this machine: they check data themselves.
        check_data_available(pending, data_root)

    job = RunJob(
        str(results_dir),
        device.value,
        None if data_root is None else str(data_root),
        retry_diverged=retry_diverged,
        compile=compile_model,
        threads=cpu_threads,
        checkpoint_every=checkpoint_every,
    )
    raise typer.Exit(_execute(plan, proto.name, results_dir, job, runner, live, console))


def _enable_cpu_bf16(executor: ExecutorName, device: Device) -> None:
    """Set ``$CALIBENCH_CPU_BF16`` for this process and its workers, after checking it can apply."""
    import os

    from calibench.training.step import CPU_BF16_ENV, cpu_has_native_bf16

    if executor is not ExecutorName.local:
        raise UsageError(
            f"--cpu-bf16 applies to the local executor; for {executor.value} workers set "
            f"{CPU_BF16_ENV}=1 in their environment"
        )
    if device is Device.cuda:
        raise UsageError("--cpu-bf16 is for CPU runs; on CUDA the protocol's precision applies")
    if not cpu_has_native_bf16():
        raise UsageError(
            "--cpu-bf16: this CPU has no native bf16 (Intel AMX), so bf16 autocast would be "
            "emulated and slower than float32; drop the flag"
        )
    os.environ[CPU_BF16_ENV] = "1"


def _execute(
    plan: list[PlannedRun],
    protocol_name: str,
    results_dir: Path,
    job: RunJob,
    executor: Executor,
    live: bool,
    console: Console,
) -> int:
    from calibench.runner.executors import run_sweep
    from calibench.runner.view import leaderboard_for, summary_table

    console.print(f"{len(plan)} runs, executor: {executor.describe()}, results: {results_dir}")
    result = run_sweep(plan, executor, job, console=console, live=live)
    console.print(summary_table(result.outcomes))
    if result.interrupted:
        console.print(
            "[yellow]interrupted[/]: finished records and the latest checkpoints are kept; "
            "rerun the same command to resume"
        )
    leaderboard_for(results_dir, protocol_name, [r.run_id for r in plan], console)
    return result.exit_code


def _no_gpu_message(proto: Protocol) -> str:
    """Why a protocol that is not :func:`~calibench.runner.plan.cpu_sized` needs a GPU, and the
    CPU-sized protocols to try instead."""
    from calibench.protocols import list_protocols
    from calibench.runner.plan import cpu_sized

    images = f"{proto.data.train_subset:,}" if proto.data.train_subset else "all the"
    small = [f"'--protocol {p.name}'" for p in list_protocols() if cpu_sized(p)]
    hint = f"Try {' or '.join(small)} (sized for a CPU), or pass" if small else "Pass"
    return (
        f"no GPU found: the '{proto.name}' protocol trains {proto.train.epochs} epochs on "
        f"{images} training images, hours to days on a CPU. {hint} '--device cpu' to run it "
        "here anyway"
    )


def register(app: typer.Typer) -> None:
    app.command("run")(run_cmd)
