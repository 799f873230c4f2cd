"""execute_run and run_sweep with a fake engine: idempotence, failures, locks, states."""

from __future__ import annotations

import io
import json
import signal
from pathlib import Path

import pytest
from filelock import FileLock
from rich.console import Console

from calibench import records
from calibench.errors import TrainingInterrupted
from calibench.runner import execute
from calibench.runner.execute import execute_run
from calibench.runner.executors import LocalExecutor, RunJob, run_sweep
from calibench.runner.plan import (
    CHECKPOINTS,
    LOCK,
    LOGS,
    PROGRESS,
    RECORD,
    LossChoice,
    build_specs,
    plan_runs,
    read_json,
    run_dir,
    run_state,
)
from calibench.runner.view import plan_table, summary_table


def render(renderable) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


@pytest.fixture
def specs(protocol):
    return build_specs(
        protocol, [LossChoice("ce")], ["resnet20"], ["cifar10"], [0, 1, 2], ["gaussian"]
    )


def test_plan_is_the_cartesian_product_with_deviations(protocol) -> None:
    losses = [LossChoice("ce"), LossChoice("ce", {"x": 1})]
    specs = build_specs(protocol, losses, ["a", "b"], ["cifar10"], [0, 1], (), {"epochs": 1})
    assert len(specs) == 2 * 2 * 1 * 2
    assert len({s.run_id() for s in specs}) == 8
    assert all(s.deviations == {"epochs": 1} for s in specs)
    assert specs[-1].loss_label == "ce(x=1)"


def test_completed_run_is_skipped(tmp_path: Path, specs, fake_engine) -> None:
    first = execute_run(specs[0], tmp_path, "cpu")
    second = execute_run(specs[0], tmp_path, "cpu")
    assert (first.status, second.status) == ("completed", "skipped")
    assert fake_engine.calls == [specs[0].run_id()]
    stored = records.load_record(run_dir(tmp_path, specs[0]))
    assert stored["run_id"] == specs[0].run_id()


def test_failure_writes_a_failed_record_and_a_traceback(tmp_path: Path, specs, fake_engine) -> None:
    fake_engine.fail = {0}
    outcome = execute_run(specs[0], tmp_path, "cpu")
    assert outcome.status == "failed" and "RuntimeError: boom on seed 0" in outcome.reason
    directory = run_dir(tmp_path, specs[0])
    record = records.load_record(directory)
    assert record["status"] == "failed" and "boom" in record["reason"]
    (log,) = (directory / "logs").glob("error-*.log")
    assert "Traceback" in log.read_text()
    assert not (directory / PROGRESS).exists()
    # A failed run is retried by the next invocation.
    fake_engine.fail = set()
    assert execute_run(specs[0], tmp_path, "cpu").status == "completed"


def test_diverged_run_is_kept_unless_retry(tmp_path: Path, specs, fake_engine) -> None:
    fake_engine.diverge = {0}
    assert execute_run(specs[0], tmp_path, "cpu").status == "diverged"
    again = execute_run(specs[0], tmp_path, "cpu")
    assert again.status == "skipped" and "diverged" in again.reason
    assert len(fake_engine.calls) == 1
    fake_engine.diverge = set()
    assert execute_run(specs[0], tmp_path, "cpu", retry_diverged=True).status == "completed"


def test_locked_run_is_left_to_its_worker(tmp_path: Path, specs, fake_engine) -> None:
    directory = run_dir(tmp_path, specs[0])
    directory.mkdir(parents=True)
    with FileLock(str(directory / LOCK)):
        outcome = execute_run(specs[0], tmp_path, "cpu")
    assert outcome.status == "skipped" and "another worker" in outcome.reason
    assert fake_engine.calls == []


def test_plan_states(tmp_path: Path, specs, fake_engine) -> None:
    fake_engine.fail, fake_engine.diverge = {1}, {2}
    for spec in specs:
        execute_run(spec, tmp_path, "cpu")
    extra = specs[0].__class__(**{**specs[0].to_dict(), "seed": 7})
    (run_dir(tmp_path, extra) / CHECKPOINTS).mkdir(parents=True)
    (run_dir(tmp_path, extra) / CHECKPOINTS / "epoch1.pt").write_bytes(b"x")
    plan = plan_runs([*specs, extra], tmp_path)
    assert [r.state for r in plan] == ["done", "failed", "diverged", "resumable"]
    assert plan[0].run_dir == tmp_path / "smoke" / specs[0].run_id()
    rendered = render(plan_table(plan))
    assert all(r.run_id in rendered for r in plan)


def test_sweep_survives_a_failure_and_reports_everything(tmp_path: Path, specs, fake_engine):
    fake_engine.fail = {1}
    job = RunJob(str(tmp_path), "cpu")
    result = run_sweep(plan_runs(specs, tmp_path), LocalExecutor(), job, live=False)
    assert [o.status for o in result.outcomes] == ["completed", "failed", "completed"]
    assert result.exit_code == 1
    assert "boom on seed 1" in render(summary_table(result.outcomes))
    fake_engine.fail = set()
    rerun = run_sweep(plan_runs(specs, tmp_path), LocalExecutor(), job, live=False)
    assert [o.status for o in rerun.outcomes] == ["skipped", "completed", "skipped"]
    assert rerun.exit_code == 0


def test_ctrl_c_stops_the_sweep_and_keeps_finished_records(
    tmp_path, specs, fake_engine, monkeypatch
):
    def interrupt_on_second(spec, directory, **kwargs):
        if spec.seed == 1:
            raise KeyboardInterrupt
        return fake_engine(spec, directory, **kwargs)

    monkeypatch.setattr(execute, "train_and_record", interrupt_on_second)
    job = RunJob(str(tmp_path), "cpu")
    result = run_sweep(plan_runs(specs, tmp_path), LocalExecutor(), job, live=False)
    assert result.interrupted and result.exit_code == 130
    assert [o.status for o in result.outcomes] == ["completed"]
    assert run_state(run_dir(tmp_path, specs[1]))[0] == "new"
    # The interrupted run's lock is free again.
    with FileLock(str(run_dir(tmp_path, specs[1]) / LOCK), timeout=0):
        pass


def test_a_stopped_run_logs_an_interrupted_attempt_and_stays_resumable(
    tmp_path, specs, fake_engine, monkeypatch
):
    def stop(spec, directory, **kwargs):
        raise TrainingInterrupted(signal.SIGTERM, "epoch 3, step 12")

    monkeypatch.setattr(execute, "train_and_record", stop)
    with pytest.raises(TrainingInterrupted):
        execute_run(specs[0], tmp_path, device="cpu")
    directory = run_dir(tmp_path, specs[0])
    lines = (directory / LOGS / "attempts.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["event"] for e in events] == ["start", "interrupted"]
    assert "SIGTERM at epoch 3, step 12" in events[1]["reason"]
    assert not (directory / RECORD).exists() and not (directory / PROGRESS).exists()

    monkeypatch.setattr(execute, "train_and_record", fake_engine)
    assert execute_run(specs[0], tmp_path, device="cpu").status == "completed"


def test_progress_file_feeds_the_live_view(tmp_path: Path, specs) -> None:
    from calibench.runner.execute import ProgressWriter
    from calibench.runner.view import LiveView

    plan = plan_runs(specs, tmp_path)
    directory = plan[0].run_dir
    directory.mkdir(parents=True)
    writer = ProgressWriter(directory, specs[0], interval_s=0)
    writer.on_train_start("ce", 1, 4, 10, 64)  # resumed after epoch 1
    for step in range(1, 6):
        writer.on_step(2, step, 10)
    writer.on_epoch_end(2, 4, 1.5, 321.0)
    state = read_json(directory / PROGRESS)
    assert state["epoch"] == 2 and state["epochs"] == 4 and state["resumed_from_epoch"] == 1
    assert state["eta_s"] is not None and state["eta_s"] > 0
    view = LiveView(plan, Console(file=io.StringIO()), live=False)
    text = render(view)
    assert plan[0].run_id in text and "2/4" in text and "321" in text
    assert plan[1].run_id not in text and "0/3 runs" in text
    writer.remove()
    assert plan[0].run_id not in render(view)


def test_an_invalid_record_is_reported_then_replaced(tmp_path: Path, specs, fake_engine) -> None:
    directory = run_dir(tmp_path, specs[0])
    directory.mkdir(parents=True)
    (directory / RECORD).write_text('{"status": "completed"}')  # not a valid record
    (run,) = plan_runs(specs[:1], tmp_path)
    assert run.state == "new" and "invalid record" in run.reason
    assert "invalid record" in render(plan_table([run]))
    assert execute_run(specs[0], tmp_path, "cpu").status == "completed"
    assert records.load_record(directory)["status"] == "completed"


def test_every_state_and_outcome_has_a_style() -> None:
    from calibench.runner.view import STYLE
    from calibench.status import Outcome, RunState

    assert set(RunState) | set(Outcome) <= set(STYLE)
