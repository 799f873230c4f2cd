"""``calibench run`` argument handling: names checked before work, dry run, CPU pointer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from calibench.cli import main
from calibench.runner import execute
from calibench.runner.executors import LocalExecutor

ARGS = ["run", "--backbone", "resnet20", "--dataset", "cifar10", "--protocol", "smoke"]


def test_unknown_loss_fails_before_any_work_with_one_line(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setattr(LocalExecutor, "run", lambda *a: pytest.fail("training started"))
    code = main([*ARGS, "--losses", "ce,focall", "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: unknown loss 'focall'")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--backbone", "resnet2O"], "unknown backbone 'resnet2O'"),
        (["--ood", "gaussian,svnh"], "unknown OOD set 'svnh'"),
        (["--seeds", "0,x"], "--seeds"),
        (["--losses", "ce(gamma=2)"], "gamma"),
    ],
)
def test_every_name_is_checked_up_front(tmp_path: Path, capsys, extra, message) -> None:
    assert main([*ARGS, "--losses", "ce", *extra, "--results", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_dry_run_lists_run_ids_and_states(tmp_path: Path, capsys) -> None:
    args = [*ARGS, "--losses", "ce", "--seeds", "0,1", "--results", str(tmp_path), "--dry-run"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2 runs, 2 to run" in out and out.count(" new ") == 2
    assert not any(tmp_path.iterdir())


def test_deviations_change_the_run_ids(tmp_path: Path, capsys) -> None:
    base = [*ARGS, "--losses", "ce", "--seeds", "0", "--results", str(tmp_path), "--dry-run"]
    main(base)
    plain = capsys.readouterr().out
    main([*base, "--epochs", "1"])
    changed = capsys.readouterr().out
    ids = [
        line.split()[1] for text in (plain, changed) for line in text.splitlines() if " ce " in line
    ]
    assert len(ids) == 2 and ids[0] != ids[1]


def test_cpu_machine_gets_a_pointer_to_the_smoke_protocol(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("calibench.cli.run_cmd._cuda_available", lambda: False)
    args = ["run", "--losses", "ce", "--backbone", "resnet20", "--results", str(tmp_path)]
    assert main(args) == 2
    assert "--protocol smoke" in capsys.readouterr().err


def test_failed_run_makes_the_exit_code_non_zero(
    tmp_path, capsys, monkeypatch, shared_data_dir
) -> None:
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(execute, "train_and_record", boom)
    args = [*ARGS, "--losses", "ce", "--seeds", "0", "--results", str(tmp_path), "--no-live"]
    args += ["--data-root", str(shared_data_dir)]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "0 completed, 0 skipped, 0 diverged, 1 failed" in out and "boom" in out


def test_missing_data_fails_once_before_any_run(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(LocalExecutor, "run", lambda *a: pytest.fail("training started"))
    empty = tmp_path / "no-data"
    empty.mkdir()
    results = tmp_path / "results"
    args = [*ARGS, "--losses", "ce,focal", "--device", "cpu", "--no-live"]
    code = main([*args, "--data-root", str(empty), "--results", str(results)])
    err = capsys.readouterr().err
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: dataset 'cifar10' not found")
    assert str(empty / "cifar10.npz") in lines[0]
    assert not results.exists(), "no run folder or failed record is written"


def test_executor_choices_are_the_runner_executors() -> None:
    from calibench.cli.run_cmd import ExecutorName
    from calibench.runner.executors import EXECUTORS

    assert [e.value for e in ExecutorName] == list(EXECUTORS)


@pytest.mark.parametrize(
    ("backbone", "message"),
    [
        ("timm:nosuchmodel", "unknown timm model 'nosuchmodel'"),
        ("timm:resnet5O", "unknown timm model 'resnet5O'. Did you mean: timm:resnet50"),
    ],
)
def test_unknown_timm_model_fails_once_before_planning(
    tmp_path: Path, capsys, monkeypatch, shared_data_dir, backbone, message
) -> None:
    monkeypatch.setattr(LocalExecutor, "run", lambda *a: pytest.fail("training started"))
    args = ["run", "--losses", "ce", "--backbone", backbone, "--protocol", "smoke"]
    args += ["--seeds", "0,1,2", "--device", "cpu", "--no-live", "--results", str(tmp_path)]
    assert main([*args, "--data-root", str(shared_data_dir)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}")
    assert not any(tmp_path.iterdir()), "no run folder or failed record is written"


def test_a_bool_loss_parameter_is_not_a_number(tmp_path: Path, capsys) -> None:
    args = [*ARGS, "--losses", "focal(gamma=True)", "--results", str(tmp_path), "--dry-run"]
    assert main(args) == 2
    assert "parameter gamma must be a number, got True" in capsys.readouterr().err


def test_an_executor_that_cannot_start_fails_before_the_data_check(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)  # no sbatch
    empty = tmp_path / "no-data"
    empty.mkdir()
    results = tmp_path / "results"
    args = [*ARGS, "--losses", "ce", "--executor", "slurm", "--device", "cpu"]
    assert main([*args, "--data-root", str(empty), "--results", str(results)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "slurm" in lines[0].lower(), lines
    assert not results.exists()


def test_calibench_data_is_where_missing_data_is_looked_for(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(LocalExecutor, "run", lambda *a: pytest.fail("training started"))
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("CALIBENCH_DATA", str(empty))
    args = [*ARGS, "--losses", "ce", "--device", "cpu", "--results", str(tmp_path / "r")]
    assert main(args) == 1
    assert str(empty / "cifar10.npz") in capsys.readouterr().err


def test_a_broken_command_module_is_not_hidden() -> None:
    code = "import sys; sys.modules['calibench.cli.run_cmd'] = None; import calibench.cli"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode != 0
    assert "ModuleNotFoundError: import of calibench.cli.run_cmd halted" in done.stderr


def _protocol_file(directory: Path, name: str, file_stem: str | None = None) -> Path:
    """The shipped smoke protocol saved as another protocol, ``name``, with its own hash."""
    from calibench.protocols import load_protocol, write_content_hash

    text = load_protocol("smoke").path.read_text()
    path = directory / f"{file_stem or name}.toml"
    path.write_text(text.replace('name = "smoke"', f'name = "{name}"', 1))
    write_content_hash(path)
    return path


def test_a_protocol_file_outside_the_protocol_folders_reaches_every_run(
    tmp_path, capsys, monkeypatch, shared_data_dir
) -> None:
    from calibench.protocols import PROTOCOLS_ENV
    from calibench.training.trainer import effective_protocol

    monkeypatch.delenv(PROTOCOLS_ENV, raising=False)  # restored after the test
    path = _protocol_file(tmp_path, "mysmoke")

    def reached(spec, *args, **kwargs):  # what a run does first: load its protocol by name
        raise RuntimeError(f"reached protocol {effective_protocol(spec).path}")

    monkeypatch.setattr(execute, "train_and_record", reached)
    args = ["run", "--backbone", "resnet20", "--losses", "ce", "--seeds", "0", "--no-live"]
    args += ["--protocol", str(path), "--results", str(tmp_path / "r")]
    args += ["--data-root", str(shared_data_dir)]
    assert main(args) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert f"reached protocol {path}" in out and "unknown protocol" not in out


def test_a_protocol_file_not_named_after_its_protocol_is_refused(
    tmp_path, capsys, monkeypatch
) -> None:
    from calibench.protocols import PROTOCOLS_ENV

    monkeypatch.delenv(PROTOCOLS_ENV, raising=False)
    path = _protocol_file(tmp_path, "mysmoke", file_stem="other")
    args = ["run", "--backbone", "resnet20", "--losses", "ce", "--protocol", str(path)]
    assert main([*args, "--results", str(tmp_path / "r"), "--dry-run"]) == 2
    assert "name the file 'mysmoke.toml'" in capsys.readouterr().err
