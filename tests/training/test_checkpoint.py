"""Checkpoints: atomic save, weights_only load, RNG capture, corrupt files set aside."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from calibench.training.checkpoint import (
    CheckpointError,
    CorruptCheckpointWarning,
    capture_rng_state,
    checkpoint_path,
    checkpoint_position,
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


def _state(epoch: int) -> dict:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.5**e)
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": capture_rng_state(),
        "spec": {"loss": "ce", "seed": epoch},
        "history": [float(epoch)],
    }


def test_round_trip_with_weights_only(tmp_path: Path) -> None:
    state = _state(3)
    path = save_checkpoint(tmp_path, 3, state)
    assert path == checkpoint_path(tmp_path, 3) and path.name == "epoch-0003.pt"
    loaded = torch.load(path, weights_only=True)  # what load_checkpoint does, spelled out
    assert loaded["epoch"] == 3
    back = load_checkpoint(path)
    for k, v in state["model"].items():
        assert torch.equal(back["model"][k], v)
    momentum = back["optimizer"]["state"][0]["momentum_buffer"]
    assert torch.equal(momentum, state["optimizer"]["state"][0]["momentum_buffer"])
    assert back["spec"] == state["spec"]
    assert not list(tmp_path.glob("*.tmp"))


def test_rng_state_round_trip_restores_every_generator(tmp_path: Path) -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.normal()  # leaves a cached gaussian in numpy's legacy state
    random.gauss(0, 1)
    save_checkpoint(tmp_path, 1, {**_state(1), "rng": capture_rng_state()})

    def draw() -> tuple:
        return (torch.rand(5), np.random.rand(5), np.random.normal(), [random.random() for _ in range(5)], random.gauss(0, 1))  # fmt: skip

    expected = draw()
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    restore_rng_state(load_checkpoint(checkpoint_path(tmp_path, 1))["rng"])
    got = draw()
    assert torch.equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    assert got[2:] == expected[2:]


def test_keeps_only_the_newest_two(tmp_path: Path) -> None:
    for epoch in range(1, 5):
        save_checkpoint(tmp_path, epoch, _state(epoch))
    assert [e for e, _ in list_checkpoints(tmp_path)] == [3, 4]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "corrupt",
    [
        _truncate,
        lambda p: p.write_bytes(b"not a checkpoint at all"),
        lambda p: torch.save({"model": {}, "epoch": 2}, p),  # missing fields
        lambda p: torch.save([1, 2, 3], p),  # not a dict
        lambda p: p.write_bytes(b""),
    ],
    ids=["truncated", "garbage", "missing-fields", "not-a-dict", "empty"],
)
def test_corrupt_latest_is_set_aside_and_previous_used(tmp_path: Path, corrupt) -> None:
    save_checkpoint(tmp_path, 1, _state(1))
    latest = save_checkpoint(tmp_path, 2, _state(2))
    corrupt(latest)
    with pytest.warns(CorruptCheckpointWarning, match=str(latest)):
        found = load_latest_checkpoint(tmp_path)
    assert found is not None
    path, state = found
    assert path == checkpoint_path(tmp_path, 1) and state["epoch"] == 1
    assert not latest.exists()
    assert (tmp_path / "epoch-0002.pt.corrupt").exists()


def test_epoch_that_disagrees_with_the_file_name_is_corrupt(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, _state(1))
    checkpoint_path(tmp_path, 1).rename(checkpoint_path(tmp_path, 5))
    with pytest.raises(CheckpointError, match="disagrees with its name"):
        load_checkpoint(checkpoint_path(tmp_path, 5))
    with pytest.warns(CorruptCheckpointWarning):
        assert load_latest_checkpoint(tmp_path) is None


def test_mid_epoch_checkpoints_order_between_epochs_and_keep_the_newest(tmp_path: Path) -> None:
    for epoch, step in [(0, 7), (1, 0), (1, 12), (1, 3)]:
        save_checkpoint(tmp_path, epoch, _state(epoch), step=step, keep=3)
    names = [p.name for _, p in list_checkpoints(tmp_path)]
    assert names == ["epoch-0001.pt", "epoch-0001-step-000003.pt", "epoch-0001-step-000012.pt"]
    assert [checkpoint_position(tmp_path / n) for n in names] == [(1, 0), (1, 3), (1, 12)]
    assert checkpoint_position(tmp_path / "epoch-1.pt") is None
    path, state = load_latest_checkpoint(tmp_path)
    assert path.name == "epoch-0001-step-000012.pt" and (state["epoch"], state["step"]) == (1, 12)
    assert load_checkpoint(checkpoint_path(tmp_path, 1))["step"] == 0


def test_step_that_disagrees_with_the_file_name_is_corrupt(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, _state(1), step=4)
    checkpoint_path(tmp_path, 1, 4).rename(checkpoint_path(tmp_path, 1, 5))
    with pytest.raises(CheckpointError, match="epoch 1, step 4, which disagrees with its name"):
        load_checkpoint(checkpoint_path(tmp_path, 1, 5))


def test_check_callback_can_reject_a_checkpoint(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, _state(1))
    save_checkpoint(tmp_path, 2, _state(2))

    def check(state: dict) -> None:
        if state["epoch"] == 2:
            raise CheckpointError("wrong shapes")

    with pytest.warns(CorruptCheckpointWarning, match="wrong shapes"):
        path, _ = load_latest_checkpoint(tmp_path, check=check)
    assert path.name == "epoch-0001.pt"


def test_other_errors_from_the_check_propagate(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, _state(1))

    def check(state: dict) -> None:
        raise ValueError("another run")

    with pytest.raises(ValueError, match="another run"):
        load_latest_checkpoint(tmp_path, check=check)
    assert checkpoint_path(tmp_path, 1).exists()


def test_leftover_temporary_files_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".epoch-0003.pt.abc123.tmp").write_bytes(b"half a write")
    assert load_latest_checkpoint(tmp_path) is None
    assert not list(tmp_path.iterdir())
    assert load_latest_checkpoint(tmp_path / "absent") is None


def test_save_refuses_incomplete_state(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="lacks field"):
        save_checkpoint(tmp_path, 1, {"model": {}})
