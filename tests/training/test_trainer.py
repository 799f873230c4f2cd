"""The trainer on CPU: determinism, SIGKILL-and-resume, divergence, corrupt checkpoints.

Runs resnet20 on a few hundred images of the real CIFAR-10 npz (``<repo>/../shared/data``), or
on a synthetic npz of the same layout when the real one is absent.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import numpy as np
import pytest
import torch
from rich.console import Console

from calibench.errors import ProtocolError, UsageError
from calibench.losses.ce import CrossEntropyLoss
from calibench.protocols import compute_content_hash, load_protocol
from calibench.spec import RunSpec
from calibench.status import RecordStatus
from calibench.training.checkpoint import (
    CorruptCheckpointWarning,
    checkpoint_path,
    checkpoint_position,
    list_checkpoints,
    load_checkpoint,
)
from calibench.training.progress import RichProgress, TrainCallback
from calibench.training.trainer import TrainResult, train

REPO_ROOT = Path(__file__).resolve().parents[2]
CIFAR10_NPZ = REPO_ROOT.parent / "shared" / "data" / "cifar10.npz"
SMALL = {"epochs": 2, "train_subset": 192, "batch_size": 64}  # 3 steps per epoch
THREADS = torch.get_num_threads  # the reference's: bit-identity holds per thread count


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if CIFAR10_NPZ.exists():
        return CIFAR10_NPZ.parent
    root = tmp_path_factory.mktemp("synthetic-cifar10")
    rng = np.random.default_rng(0)
    n_train, n_test = 6000, 200
    np.savez(
        root / "cifar10.npz",
        x_train=rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
        y_train=np.arange(n_train, dtype=np.int64) % 10,
        x_test=rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
        y_test=np.arange(n_test, dtype=np.int64) % 10,
    )
    return root


def make_spec(seed: int = 0, loss: str = "ce", **overrides: object) -> RunSpec:
    protocol = load_protocol("smoke")
    _, deviations = protocol.with_overrides(**{**SMALL, **overrides})
    return RunSpec(
        protocol="smoke",
        protocol_version=protocol.version,
        protocol_hash=protocol.content_hash,
        loss=loss,
        backbone="resnet20",
        dataset="cifar10",
        seed=seed,
        deviations=deviations,
    )


def run(spec: RunSpec, run_dir: Path, data_root: Path, **kw: object) -> TrainResult:
    return train(spec, run_dir, device="cpu", data_root=data_root, **kw)


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> TrainResult:
    """An uninterrupted run of :func:`make_spec` ``()``, checkpointed after every epoch
    (``checkpoint_every=0``)."""
    return run(make_spec(), tmp_path_factory.mktemp("reference"), data_root, checkpoint_every=0)


def test_reference_run_completes_and_checkpoints(reference: TrainResult) -> None:
    assert reference.status == "completed" and reference.epoch == 2
    assert reference.status is RecordStatus.COMPLETED
    assert len(reference.history) == 2 and all(np.isfinite(reference.history))
    assert reference.precision == "fp32" and reference.device == "cpu"
    assert len(reference.dataset.train) == 192
    per_class = torch.bincount(reference.dataset.train.y, minlength=10)
    assert int(per_class.max() - per_class.min()) <= 1  # class-stratified subset
    assert reference.timing["img_per_s"] > 0
    assert [e for e, _ in list_checkpoints(reference.checkpoint.parent)] == [1, 2]
    state = load_checkpoint(reference.checkpoint)
    assert state["loader"] == {"seed": 0, "epoch": 2, "step": 0}
    assert state["spec"] == make_spec().to_dict()
    assert_same_weights(state["model"], reference.model.state_dict())


def test_same_seed_gives_identical_weights(
    reference: TrainResult, tmp_path: Path, data_root: Path
) -> None:
    again = run(make_spec(), tmp_path / "again", data_root, clock=lambda: 0.0)
    assert again.history == reference.history
    assert_same_weights(again.model.state_dict(), reference.model.state_dict())
    # by time, with no time passing: only the final checkpoint (always written)
    assert [e for e, _ in list_checkpoints(again.checkpoint.parent)] == [2]
    other = run(make_spec(seed=1, epochs=1, train_subset=64), tmp_path / "other", data_root)
    first = reference.model.state_dict()
    assert any(not torch.equal(v, first[k]) for k, v in other.model.state_dict().items())


CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import torch
    from calibench.training.progress import TrainCallback
    from calibench.training.trainer import train
    from calibench.spec import RunSpec

    spec_dict, run_dir, data_root, marker, threads = json.loads(sys.argv[1])
    torch.set_num_threads(threads)  # CPU results are bit-identical only for one thread count

    class StopMidEpoch2(TrainCallback):
        def on_step(self, epoch, step, steps):
            if epoch == 2 and step == 2:
                Path(marker).write_text("mid-epoch")
                time.sleep(600)

    train(RunSpec.from_dict(spec_dict), run_dir, device="cpu", data_root=data_root,
          progress=StopMidEpoch2(), checkpoint_every=0)
    """
)


def test_sigkill_mid_epoch_then_resume_is_bit_identical(
    reference: TrainResult, tmp_path: Path, data_root: Path, signal_at_marker
) -> None:
    spec = make_spec()
    run_dir, marker = tmp_path / "killed", tmp_path / "marker"
    threads = torch.get_num_threads()  # the reference's: bit-identity holds per thread count
    args = json.dumps([spec.to_dict(), str(run_dir), str(data_root), str(marker), threads])
    child = subprocess.Popen([sys.executable, "-c", CHILD, args], cwd=REPO_ROOT)
    try:
        signal_at_marker(child, marker)  # mid-epoch 2
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert [e for e, _ in list_checkpoints(run_dir / "checkpoints")] == [1]

    resumed = run(spec, run_dir, data_root)
    assert resumed.resumed_from == 1 and resumed.status == "completed"
    assert resumed.history == reference.history
    assert_same_weights(resumed.model.state_dict(), reference.model.state_dict())


TIMED_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import torch
    from calibench.errors import TrainingInterrupted
    from calibench.training.progress import TrainCallback
    from calibench.training.trainer import train
    from calibench.spec import RunSpec

    spec_dict, run_dir, data_root, marker, threads = json.loads(sys.argv[1])
    torch.set_num_threads(threads)
    now = [0.0]

    class TenSecondSteps(TrainCallback):  # the injected clock: every step lasts 10 s
        def on_step(self, epoch, step, steps):
            now[0] += 10.0
            if (epoch, step) == (2, 2):
                Path(marker).write_text("at epoch 2, step 2")
                while not Path(marker + ".go").exists():  # until the test has signalled
                    time.sleep(0.02)

    try:
        train(RunSpec.from_dict(spec_dict), run_dir, device="cpu", data_root=data_root,
              progress=TenSecondSteps(), checkpoint_every=15, clock=lambda: now[0])
    except TrainingInterrupted as exc:
        print(exc)
        sys.exit(100 + exc.signum)
    """
)


def positions(run_dir: Path) -> list[tuple[int, int] | None]:
    return [checkpoint_position(p) for _, p in list_checkpoints(run_dir / "checkpoints")]


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_time_based_checkpoints_survive_sigkill_and_sigterm_bit_identically(
    how: str, reference: TrainResult, tmp_path: Path, data_root: Path, signal_at_marker
) -> None:
    """3 steps per epoch of 10 s each on the child's clock, a checkpoint every 15 s: after step
    2 (t=20), none at the end of epoch 1 (t=30), after epoch 2 step 1 (t=40). The child stops
    at epoch 2 step 2: SIGKILL loses that step, SIGTERM checkpoints it first; either way the
    rerun ends bit-identical to the uninterrupted reference."""
    spec = make_spec()
    run_dir, marker = tmp_path / "run", tmp_path / "marker"
    args = json.dumps([spec.to_dict(), str(run_dir), str(data_root), str(marker), THREADS()])
    child = subprocess.Popen(
        [sys.executable, "-c", TIMED_CHILD, args], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        signal_at_marker(child, marker, signal.SIGKILL if how == "sigkill" else signal.SIGTERM)
        Path(f"{marker}.go").write_text("go")
        out, _ = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    if how == "sigkill":
        assert child.returncode == -signal.SIGKILL
        assert positions(run_dir) == [(0, 2), (1, 1)]
    else:
        assert child.returncode == 100 + signal.SIGTERM, out
        assert "stopped by SIGTERM at epoch 2, step 2; checkpoint written" in out
        assert positions(run_dir) == [(1, 1), (1, 2)]
        state = load_checkpoint(run_dir / "checkpoints" / "epoch-0001-step-000002.pt")
        assert state["loader"] == {"seed": 0, "epoch": 1, "step": 2} and state["step"] == 2

    resumed = run(spec, run_dir, data_root)
    assert resumed.resumed_from == 1 and resumed.status == "completed"
    assert resumed.history == reference.history
    assert_same_weights(resumed.model.state_dict(), reference.model.state_dict())


@pytest.mark.parametrize("previous", ["requeue_and_exit", "ignore"])
def test_a_stop_signal_goes_to_the_handler_installed_before_train_after_the_checkpoint(
    previous: str, reference: TrainResult, tmp_path: Path, data_root: Path
) -> None:
    """submitit's SIGUSR2 handler requeues the job and exits; its SIGTERM handler only logs.
    The trainer checkpoints first, then calls the handler, and trains on if it returns."""
    calls: list[int] = []

    def handler(signum: int, frame: object) -> None:
        calls.append(signum)
        if previous == "requeue_and_exit":
            raise SystemExit(-1)

    class Usr2AtStep2(TrainCallback):
        def on_step(self, epoch: int, step: int, steps: int) -> None:
            if (epoch, step) == (1, 2):
                assert signal.getsignal(signal.SIGUSR2) is not handler
                signal.raise_signal(signal.SIGUSR2)

    old = signal.signal(signal.SIGUSR2, handler)
    try:
        if previous == "requeue_and_exit":
            with pytest.raises(SystemExit):
                run(make_spec(), tmp_path, data_root, progress=Usr2AtStep2(), clock=lambda: 0.0)
            assert positions(tmp_path) == [(0, 2)]
            resumed = run(make_spec(), tmp_path, data_root)
        else:
            resumed = run(make_spec(), tmp_path, data_root, progress=Usr2AtStep2())
            assert positions(tmp_path) == [(0, 2), (2, 0)]
        assert signal.getsignal(signal.SIGUSR2) is handler  # restored
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert calls == [signal.SIGUSR2]
    assert resumed.history == reference.history
    assert_same_weights(resumed.model.state_dict(), reference.model.state_dict())


def test_checkpoint_every_must_be_non_negative(tmp_path: Path, data_root: Path) -> None:
    with pytest.raises(UsageError, match="checkpoint_every must be >= 0"):
        run(make_spec(), tmp_path, data_root, checkpoint_every=-1)


def test_corrupt_last_checkpoint_is_set_aside_and_training_redone(
    reference: TrainResult, tmp_path: Path, data_root: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(reference.checkpoint.parent.parent, run_dir)
    last = checkpoint_path(run_dir / "checkpoints", 2)
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 3])
    with pytest.warns(CorruptCheckpointWarning, match=str(last)):
        resumed = run(make_spec(), run_dir, data_root)
    assert resumed.resumed_from == 1
    assert last.with_name(last.name + ".corrupt").exists()
    assert_same_weights(resumed.model.state_dict(), reference.model.state_dict())


def test_finished_run_is_not_retrained(reference: TrainResult, data_root: Path) -> None:
    run_dir = reference.checkpoint.parent.parent
    again = run(make_spec(), run_dir, data_root)
    assert again.resumed_from == 2 and again.timing["train_seconds"] == 0.0
    assert again.history == reference.history
    assert_same_weights(again.model.state_dict(), reference.model.state_dict())


class FailsInEpoch2(CrossEntropyLoss):
    """CE that goes wrong after the first ``steps`` calls (in epoch 2): NaN, or it raises."""

    def __init__(self, steps: int, *, raises: bool = False) -> None:
        super().__init__()
        self.steps = steps
        self.raises = raises
        self.calls = 0

    def compute(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        loss = super().compute(logits, targets)
        if self.calls <= self.steps:
            return loss
        if self.raises:
            raise RuntimeError("boom in epoch 2")
        return loss * float("nan")


def test_non_finite_loss_marks_the_run_diverged(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loss = FailsInEpoch2(steps=192 // 64)
    monkeypatch.setattr("calibench.training.trainer.create_loss", lambda name, **kw: loss)
    result = run(make_spec(), tmp_path / "run", data_root, checkpoint_every=0)
    assert result.status == "diverged" and result.epoch == 2
    assert result.status is RecordStatus.DIVERGED
    assert len(result.history) == 1 and not np.isfinite(result.diverged_loss)
    assert loss.validate_inputs is False
    assert [e for e, _ in list_checkpoints(tmp_path / "run" / "checkpoints")] == [1]
    assert result.checkpoint == checkpoint_path(tmp_path / "run" / "checkpoints", 1)


def test_progress_callbacks(tmp_path: Path, data_root: Path) -> None:
    calls: list[tuple] = []

    class Recorder(TrainCallback):
        def on_train_start(self, *args: object) -> None:
            calls.append(("start", *args))

        def on_step(self, *args: object) -> None:
            calls.append(("step", *args))

        def on_epoch_end(self, epoch, epochs, loss, img_per_s) -> None:
            assert isinstance(loss, float) and isinstance(img_per_s, float)
            calls.append(("epoch", epoch, epochs))

        def on_train_end(self, *args: object) -> None:
            calls.append(("end", *args))

    before = torch.are_deterministic_algorithms_enabled()
    spec = make_spec(epochs=1, train_subset=128)
    train(spec, tmp_path, device="cpu", data_root=data_root, progress=Recorder())
    assert calls[0] == ("start", "ce resnet20 seed=0", 0, 1, 2, 64)
    assert calls[1:3] == [("step", 1, s, 2) for s in range(1, 3)]
    assert calls[3:] == [("epoch", 1, 1), ("end", "completed", 1)]
    assert torch.are_deterministic_algorithms_enabled() == before  # backend flags restored


def test_an_error_reports_failed_then_propagates(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ends: list[tuple[object, int]] = []

    class Ends(TrainCallback):
        def on_train_end(self, status: RecordStatus, epoch: int) -> None:
            ends.append((status, epoch))

    loss = FailsInEpoch2(steps=128 // 64, raises=True)
    monkeypatch.setattr("calibench.training.trainer.create_loss", lambda name, **kw: loss)
    spec = make_spec(train_subset=128)
    with pytest.raises(RuntimeError, match="boom in epoch 2"):
        train(
            spec, tmp_path, device="cpu", data_root=data_root, progress=Ends(), checkpoint_every=0
        )
    assert ends == [(RecordStatus.FAILED, 2)]
    assert [e for e, _ in list_checkpoints(tmp_path / "checkpoints")] == [1]


@pytest.mark.parametrize("progress", [True, False, "rich"])
def test_progress_is_a_train_callback_or_none(progress: object, tmp_path: Path) -> None:
    name = type(progress).__name__
    with pytest.raises(UsageError, match=f"needs a TrainCallback or None, got {name}"):
        train(make_spec(), tmp_path, device="cpu", progress=progress)  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())


def test_rich_progress_shows_epoch_steps_loss_throughput_and_how_it_ended() -> None:
    out = io.StringIO()
    bar = RichProgress(Console(file=out, width=150, force_terminal=False))
    bar.on_train_start("ce resnet20 seed=0", 1, 3, 2, 64)  # resumed after epoch 1 of 3
    for step in (1, 2):
        bar.on_step(2, step, 2)
    bar.on_epoch_end(2, 3, 1.23456, 1234.0)
    bar.on_train_end(RecordStatus.DIVERGED, 2)
    text = out.getvalue()
    assert text.startswith("diverged at epoch 2 epoch 2/3")
    assert " 2/4 " in text and "loss 1.2346" in text and "1,234 img/s" in text


def test_sum_reduction_reaches_the_step_and_history_stays_per_sample(
    tmp_path: Path, data_root: Path
) -> None:
    """A ``loss_reduction = "sum"`` run at lr / B follows the "mean" run at lr (up to weight
    decay, which "sum" does not scale), and its history is the per-sample mean, not B times it."""
    small = {"epochs": 1, "train_subset": 128}  # 2 steps of 64
    lr = load_protocol("smoke").train.optimizer.lr
    mean = run(make_spec(**small), tmp_path / "mean", data_root)
    summed_spec = make_spec(**small, loss_reduction="sum", lr=lr / 64)
    assert summed_spec.deviations["loss_reduction"] == "sum"
    summed = run(summed_spec, tmp_path / "sum", data_root)
    assert summed.protocol.train.loss_reduction == "sum"
    assert summed.history == pytest.approx(mean.history, rel=1e-3)
    assert summed.history[0] < 2 * np.log(10)


def test_checkpoints_of_another_spec_are_refused(reference: TrainResult, data_root: Path) -> None:
    run_dir = reference.checkpoint.parent.parent
    with pytest.raises(UsageError, match="another run spec"):
        run(make_spec(seed=5), run_dir, data_root)
    assert reference.checkpoint.exists()


def test_checkpoints_of_another_precision_are_refused(
    reference: TrainResult, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A float32 run resumed with --cpu-bf16 would mix precisions: refused, checkpoints kept."""
    import calibench.training.step as step

    monkeypatch.setattr(step, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setenv(step.CPU_BF16_ENV, "1")
    run_dir = reference.checkpoint.parent.parent
    with pytest.raises(UsageError, match="trained in fp32, this process trains in bf16"):
        run(make_spec(), run_dir, data_root)
    assert reference.checkpoint.exists()


def test_spec_for_another_protocol_version_is_refused(tmp_path: Path, data_root: Path) -> None:
    d = make_spec().to_dict()
    d["protocol_hash"] = "sha256:" + "1" * 64
    with pytest.raises(ProtocolError, match="rebuild the spec"):
        run(RunSpec.from_dict(d), tmp_path, data_root)
    d = make_spec().to_dict()
    d["deviations"] = {"momentum": 0.5}
    with pytest.raises(UsageError, match="unknown deviation"):
        run(RunSpec.from_dict(d), tmp_path, data_root)


def test_protocol_augmentation_the_pipeline_cannot_do_is_refused(
    tmp_path: Path, data_root: Path
) -> None:
    text = load_protocol("smoke").path.read_text().replace("flip = true", "flip = false")
    content_hash = compute_content_hash(tomllib.loads(text))
    text = re.sub(r'(?m)^content_hash = ".*"$', f'content_hash = "{content_hash}"', text)
    (tmp_path / "cropnoflip.toml").write_text(text)
    protocol = load_protocol(tmp_path / "cropnoflip.toml")
    spec = RunSpec(
        protocol=str(protocol.path),
        protocol_version=protocol.version,
        protocol_hash=protocol.content_hash,
        loss="ce",
        backbone="resnet20",
        dataset="cifar10",
        seed=0,
    )
    with pytest.raises(ProtocolError, match="crop without flip"):
        run(spec, tmp_path / "run", data_root)


def test_bad_device_is_a_usage_error(tmp_path: Path, data_root: Path) -> None:
    with pytest.raises(UsageError, match="invalid device"):
        train(make_spec(), tmp_path, device="tpu:x", data_root=data_root)
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            train(make_spec(), tmp_path, device="cuda", data_root=data_root)


def test_entry_point_trains_resnet20_on_2000_images(tmp_path: Path) -> None:
    """The issue's done-when: 2,000 images of the real npz, one epoch on CPU, loadable checkpoint."""
    if not CIFAR10_NPZ.exists():
        pytest.skip(f"real CIFAR-10 npz not found at {CIFAR10_NPZ}")
    spec = make_spec(epochs=1, train_subset=2000, batch_size=128)
    result = train(spec, tmp_path, device="cpu", data_root=CIFAR10_NPZ.parent)
    assert result.status == "completed" and len(result.dataset.train) == 2000
    state = torch.load(result.checkpoint, weights_only=True)
    from calibench.registry import create_backbone

    model = create_backbone("resnet20", num_classes=10)
    model.load_state_dict(state["model"])
    assert state["epoch"] == 1 and state["spec"]["seed"] == 0


class ValStateLoss(CrossEntropyLoss):
    """CE whose state (buffers) follows the val split: the epochs seen and the mean val logit."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.int64))
        self.register_buffer("val_mean", torch.zeros(3, dtype=torch.float64))
        self.calls: list[tuple[int, tuple[int, ...], torch.dtype, bool]] = []

    def on_epoch_end(self, epoch: int, val_s: torch.Tensor, val_y: torch.Tensor) -> None:
        self.calls.append((epoch, tuple(val_s.shape), val_y.dtype, torch.is_grad_enabled()))
        self.epochs_seen += 1
        self.val_mean[epoch] = val_s.double().mean()


def test_a_stateful_loss_is_updated_each_epoch_checkpointed_and_restored(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[ValStateLoss] = []

    def create(name: str, **kw: object) -> ValStateLoss:
        made.append(ValStateLoss())
        return made[-1]

    monkeypatch.setattr("calibench.training.trainer.create_loss", create)
    full = run(make_spec(), tmp_path / "full", data_root, checkpoint_every=0)
    loss = made[-1]
    assert [(e, grad) for e, _, _, grad in loss.calls] == [(1, False), (2, False)]
    n_val = len(full.dataset.val.y)
    assert n_val > 0 and all(c[1] == (n_val, 10) and c[2] == torch.int64 for c in loss.calls)
    assert int(loss.epochs_seen) == 2 and bool((loss.val_mean[1:] != 0).all())
    assert loss.val_mean[1] != loss.val_mean[2]  # the model moved between epochs
    first = load_checkpoint(checkpoint_path(tmp_path / "full" / "checkpoints", 1))
    assert int(first["loss"]["epochs_seen"]) == 1 and float(first["loss"]["val_mean"][2]) == 0.0
    # killed after epoch 1 (its checkpoint is the newest), then resumed by a fresh process
    shutil.copytree(tmp_path / "full", tmp_path / "resumed")
    checkpoint_path(tmp_path / "resumed" / "checkpoints", 2).unlink()
    resumed = run(make_spec(), tmp_path / "resumed", data_root)
    assert resumed.resumed_from == 1 and made[-1] is not loss
    assert [c[0] for c in made[-1].calls] == [2]
    assert_same_weights(made[-1].state_dict(), loss.state_dict())
    assert_same_weights(resumed.model.state_dict(), full.model.state_dict())
    assert resumed.history == full.history
    # the readable state after each epoch, kept in the checkpoints and restored on resume
    assert [h["epoch"] for h in full.loss_history] == [1, 2]
    assert full.loss_history[1] == {
        "epoch": 2,
        "epochs_seen": 2,
        "val_mean": loss.val_mean.tolist(),
    }
    assert first["loss_history"] == full.loss_history[:1]
    assert resumed.loss_history == full.loss_history


def test_a_loss_without_the_hook_never_predicts_the_val_split(
    reference: TrainResult, tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object, **kw: object) -> None:
        raise AssertionError("predict_logits called for a loss without on_epoch_end")

    monkeypatch.setattr("calibench.evaluation.predict_logits", fail)
    again = run(make_spec(), tmp_path / "again", data_root)
    assert again.history == reference.history
    assert load_checkpoint(again.checkpoint)["loss"] == {}
    assert again.loss_history == [] and load_checkpoint(again.checkpoint)["loss_history"] == []


def test_a_stateful_loss_without_a_val_split_is_refused_before_training(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import calibench.training.trainer as trainer

    real = trainer.create_dataset
    monkeypatch.setattr(
        trainer, "create_dataset", lambda name, **kw: real(name, **{**kw, "val_size": 0})
    )
    monkeypatch.setattr(trainer, "create_loss", lambda name, **kw: ValStateLoss())
    with pytest.raises(UsageError, match="has no val split"):
        run(make_spec(), tmp_path / "no-val", data_root)
    assert not (tmp_path / "no-val" / "checkpoints").exists() or not any(
        (tmp_path / "no-val" / "checkpoints").iterdir()
    ), "refused before any epoch"
