"""Losses with state (adafocal, cals) through the real trainer and runner, tiny protocol, CPU.

An adafocal run SIGKILLed mid-epoch and rerun writes the same record, predictions and loss
state history as an uninterrupted run (same torch thread count); cals's per-class state, sized
on first use, survives a resume.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from calibench.records import LOSS_STATE_FILENAME, load_record
from calibench.runner.execute import execute_run
from calibench.runner.plan import LossChoice, build_specs, run_dir
from calibench.spec import RunSpec
from calibench.training.checkpoint import checkpoint_path, list_checkpoints
from calibench.training.trainer import train

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
#: What legitimately differs between two runs of one spec: when and how fast they ran.
VOLATILE = {"created_at", "timing"}

CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import torch
    from calibench.runner.execute import train_and_record
    from calibench.spec import RunSpec
    from calibench.training.progress import TrainCallback

    spec_dict, directory, data_root, marker, threads = json.loads(sys.argv[1])
    torch.set_num_threads(threads)

    class StopMidEpoch2(TrainCallback):
        def on_step(self, epoch, step, steps):
            if epoch == 2 and step == 2:
                Path(marker).write_text("mid-epoch")
                time.sleep(600)

    Path(directory).mkdir(parents=True, exist_ok=True)
    train_and_record(RunSpec.from_dict(spec_dict), Path(directory), device="cpu",
                     data_root=data_root, compile=False, progress=StopMidEpoch2(),
                     checkpoint_every=0)  # a checkpoint at every epoch end
    """
)


def spec_for(protocol, loss: str) -> RunSpec:
    (spec,) = build_specs(
        protocol, [LossChoice(loss)], ["resnet20"], ["cifar10"], [0], ["gaussian"]
    )
    return spec


def saved(directory: Path) -> dict:
    """The record without its volatile fields, the loss state history and the saved arrays."""
    record = {k: v for k, v in load_record(directory).items() if k not in VOLATILE}
    arrays = {}
    for name in ("test_predictions.npz", "ood_scores.npz"):
        with np.load(directory / name) as data:
            arrays.update({f"{name}:{k}": data[k].tobytes() for k in data.files})
    return {"record": record, "history": (directory / LOSS_STATE_FILENAME).read_bytes(), **arrays}


def test_adafocal_sigkilled_mid_epoch_then_rerun_writes_the_uninterrupted_record(
    tiny_protocol, shared_data_dir, tmp_path, signal_at_marker
) -> None:
    spec = spec_for(tiny_protocol, "adafocal")
    threads = torch.get_num_threads()
    reference = execute_run(spec, tmp_path / "reference", "cpu", shared_data_dir, threads=threads)
    assert reference.status == "completed", reference
    expected = saved(run_dir(tmp_path / "reference", spec))

    directory, marker = run_dir(tmp_path / "killed", spec), tmp_path / "marker"
    args = json.dumps([spec.to_dict(), str(directory), str(shared_data_dir), str(marker), threads])
    child = subprocess.Popen([sys.executable, "-c", CHILD, args], cwd=REPO_ROOT)
    try:
        signal_at_marker(child, marker)  # mid-epoch 2
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert [e for e, _ in list_checkpoints(directory / "checkpoints")] == [1]
    assert not (directory / "record.json").exists()

    rerun = execute_run(spec, tmp_path / "killed", "cpu", shared_data_dir, threads=threads)
    assert rerun.status == "completed" and rerun.resumed, rerun
    assert saved(directory) == expected

    record = expected["record"]
    history = json.loads(expected["history"])
    assert [h["epoch"] for h in history] == [1, 2]
    final = {k: v for k, v in history[-1].items() if k != "epoch"}
    assert record["loss_state"] == {"final": final, "history": LOSS_STATE_FILENAME}
    assert set(final) == {"gammas", "bin_edges"} and len(final["gammas"]) == 15
    assert history[0]["gammas"] != [1.0] * 15 and history[1]["gammas"] != history[0]["gammas"]
    assert record["training"] == {"val_used_in_training": True, "precision": "fp32"}
    assert record["conventions"]["val_split"].startswith("used in training; used by the loss's")


def test_cals_resumes_its_per_class_state_sized_on_first_use(
    tiny_protocol, shared_data_dir, tmp_path
) -> None:
    spec = spec_for(tiny_protocol, "cals")
    full = train(
        spec, tmp_path / "full", device="cpu", data_root=shared_data_dir, checkpoint_every=0
    )
    assert [h["epoch"] for h in full.loss_history] == [1, 2]
    assert len(full.loss_history[-1]["lambd"]) == 10
    assert max(full.loss_history[0]["lambd"]) > 1e-3  # the multipliers moved
    shutil.copytree(tmp_path / "full", tmp_path / "resumed")
    checkpoint_path(tmp_path / "resumed" / "checkpoints", 2).unlink()
    resumed = train(spec, tmp_path / "resumed", device="cpu", data_root=shared_data_dir)
    assert resumed.resumed_from == 1  # the checkpoint's (10,) multipliers fit the fresh (0,) ones
    assert resumed.loss_history == full.loss_history
    for key, value in full.loss.state_dict().items():
        assert torch.equal(resumed.loss.state_dict()[key], value), key
    for key, value in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
