"""The reusable training step that train() and the speed benchmarks share."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from calibench.engine.step import (
    TrainStep,
    backend_flags,
    make_sgd,
    precision_for,
)
from calibench.errors import UsageError


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(5, 3, 8, 8, generator=g), torch.randint(0, 3, (5,), generator=g)


def test_step_matches_a_hand_written_sgd_step() -> None:
    model, reference = tiny_model(), tiny_model()
    x, y = batch()
    opt = make_sgd(model, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True, device="cpu")
    step = TrainStep(model, nn.CrossEntropyLoss(), opt, device="cpu")
    ref_opt = torch.optim.SGD(
        reference.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True
    )
    for _ in range(3):
        loss = step(x, y)
        ref_opt.zero_grad()
        ref_loss = nn.functional.cross_entropy(reference(x), y)
        ref_loss.backward()
        ref_opt.step()
        assert loss.dtype == torch.float32 and loss.dim() == 0 and not loss.requires_grad
        torch.testing.assert_close(loss, ref_loss.detach())
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_grad_clip_bounds_the_update() -> None:
    model = tiny_model()
    before = copy.deepcopy(model)
    x, y = batch()
    y = (y + 1) % 3
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    step = TrainStep(model, nn.CrossEntropyLoss(), opt, device="cpu", grad_clip=1e-3)
    step(x * 100, y)
    with torch.no_grad():
        pairs = zip(model.parameters(), before.parameters(), strict=True)
        delta = torch.cat([(p - q).flatten() for p, q in pairs])
    assert float(delta.norm()) == pytest.approx(1e-3, rel=1e-3)


def test_optimizer_implementation_per_device() -> None:
    opt = make_sgd(tiny_model(), lr=0.1, momentum=0.9, weight_decay=0, nesterov=False, device="cpu")
    assert opt.defaults["foreach"] is True and not opt.defaults.get("fused")


def test_precision_rules() -> None:
    assert precision_for("cpu", "bf16") == "fp32"
    assert precision_for("cpu", "fp32") == "fp32"
    with pytest.raises(UsageError, match="precision"):
        precision_for("cpu", "fp16")
    with pytest.raises(UsageError, match="precision"):
        TrainStep(tiny_model(), nn.CrossEntropyLoss(), None, device="cpu", precision="half")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="grad_clip"):
        TrainStep(tiny_model(), nn.CrossEntropyLoss(), None, device="cpu", grad_clip=-1.0)  # type: ignore[arg-type]


def test_backend_flags_are_restored() -> None:
    before = torch.are_deterministic_algorithms_enabled()
    with backend_flags("cpu"):
        assert torch.are_deterministic_algorithms_enabled()
    assert torch.are_deterministic_algorithms_enabled() == before


def test_gpu_path_bf16_autocast_and_channels_last_run_on_cpu() -> None:
    """The CUDA recipe (bf16 autocast, channels_last, the real loader and a real loss) on CPU."""
    import numpy as np

    from calibench import create_backbone, create_loss
    from calibench.data.datasets import Split
    from calibench.data.pipeline import DeviceLoader

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    split = Split(
        torch.from_numpy(rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)),
        torch.from_numpy(rng.integers(0, 10, 64)).long(),
    )
    loader = DeviceLoader(split, 16, "cpu", (0.5,) * 3, (0.25,) * 3, train=True, seed=0)
    model = create_backbone("resnet20", num_classes=10).to(memory_format=torch.channels_last)
    criterion = create_loss("iq-chi2")
    criterion.validate_inputs = False
    opt = make_sgd(model, lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=False, device="cpu")
    step = TrainStep(model, criterion, opt, device="cpu", precision="bf16", grad_clip=5.0)
    losses = []
    for epoch in range(3):
        loader.set_epoch(epoch)
        for x, y in loader:
            assert x.is_contiguous(memory_format=torch.channels_last)
            losses.append(step(x, y))
    values = torch.stack(losses)
    assert values.dtype == torch.float32 and bool(torch.isfinite(values).all())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
    assert values[-4:].mean() < values[:4].mean(), "loss falls on a batch set it can memorise"
