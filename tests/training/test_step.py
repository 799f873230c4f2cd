"""The reusable training step that train() and the speed benchmarks share."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from calibench.errors import UsageError
from calibench.protocols import load_protocol
from calibench.training.step import (
    CPU_BF16_ENV,
    TrainStep,
    backend_flags,
    make_sgd,
    precision_for,
)


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


def batches(n: int, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(2)
    return [
        (torch.randn(size, 3, 8, 8, generator=g), torch.randint(0, 3, (size,), generator=g))
        for _ in range(n)
    ]


def capture_grads(opt: torch.optim.Optimizer) -> list[list[torch.Tensor]]:
    """The gradients the optimizer sees at each step (after any clipping), in parameter order."""
    seen: list[list[torch.Tensor]] = []

    def hook(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        seen.append([p.grad.clone() for group in optimizer.param_groups for p in group["params"]])

    opt.register_step_pre_hook(hook)
    return seen


def test_sum_reduction_gradient_is_batch_size_times_the_mean() -> None:
    """Two steps, no clipping: the "sum" gradient is B times the "mean" one at every step.

    SGD is linear in the gradient, so "sum" at lr / B walks exactly the path of "mean" at lr
    (no weight decay); the two runs then see the same parameters at every step, and their
    gradients can be compared step by step.
    """
    size, lr = 8, 0.1
    runs = {}
    for reduction, step_lr in (("mean", lr), ("sum", lr / size)):
        model = tiny_model()
        opt = torch.optim.SGD(model.parameters(), lr=step_lr, momentum=0.9)
        grads = capture_grads(opt)
        step = TrainStep(model, nn.CrossEntropyLoss(), opt, device="cpu", loss_reduction=reduction)
        losses = [step(x, y) for x, y in batches(2, size)]
        runs[reduction] = (model, grads, losses)
    (mean_model, mean_grads, mean_losses), (sum_model, sum_grads, sum_losses) = runs.values()
    assert len(mean_grads) == len(sum_grads) == 2
    for g_mean, g_sum in zip(mean_grads, sum_grads, strict=True):
        for a, b in zip(g_mean, g_sum, strict=True):
            torch.testing.assert_close(b, size * a)
        assert float(torch.cat([b.flatten() for b in g_sum]).norm()) > 0
    # the step reports the per-sample mean loss whatever the reduction
    torch.testing.assert_close(torch.stack(sum_losses), torch.stack(mean_losses))
    for p, q in zip(sum_model.parameters(), mean_model.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_sum_reduction_is_clipped_to_2_after_backward() -> None:
    """Protocol ``standard``: backward on B * mean, then the global norm clipped to 2."""
    size = 16
    model = tiny_model()
    step = TrainStep.from_protocol(
        model, nn.CrossEntropyLoss(), load_protocol("standard"), device="cpu"
    )
    assert (step.loss_reduction, step.grad_clip) == ("sum", 2.0)
    seen = capture_grads(step.optimizer)
    for x, y in batches(2, size):
        reference = copy.deepcopy(model)
        (size * nn.functional.cross_entropy(reference(x), y)).backward()
        raw = torch.cat([p.grad.flatten() for p in reference.parameters()])
        mean_norm = float(raw.norm()) / size
        assert mean_norm < 2.0 < float(raw.norm()), "the sum's gradient is clipped, the mean's not"
        step(x, y)
        clipped = torch.cat([g.flatten() for g in seen[-1]])
        assert float(clipped.norm()) == pytest.approx(2.0, rel=1e-5)
        torch.testing.assert_close(clipped, raw * (2.0 / raw.norm()), rtol=1e-5, atol=1e-7)
    assert len(seen) == 2


def test_from_protocol_takes_reduction_and_clipping() -> None:
    smoke = TrainStep.from_protocol(
        tiny_model(), nn.CrossEntropyLoss(), load_protocol("smoke"), device="cpu"
    )
    assert (smoke.loss_reduction, smoke.grad_clip) == ("mean", 0.0)
    with pytest.raises(UsageError, match="loss_reduction must be one of mean, sum"):
        TrainStep(tiny_model(), nn.CrossEntropyLoss(), None, device="cpu", loss_reduction="avg")  # type: ignore[arg-type]


def test_optimizer_implementation_per_device() -> None:
    opt = make_sgd(tiny_model(), lr=0.1, momentum=0.9, weight_decay=0, nesterov=False, device="cpu")
    assert opt.defaults["foreach"] is True and not opt.defaults.get("fused")


def test_precision_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CPU_BF16_ENV, raising=False)
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


def test_cpu_bf16_is_opt_in_and_needs_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    import calibench.training.step as step

    monkeypatch.setattr(step, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    assert precision_for("cpu", "bf16") == "bf16"
    assert precision_for("cpu", "fp32") == "fp32"  # only a protocol's bf16 is honoured
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    assert precision_for("cpu", "bf16") == "fp32"
    monkeypatch.setenv(CPU_BF16_ENV, "maybe")
    with pytest.raises(UsageError, match="must be 1 or 0"):
        precision_for("cpu", "bf16")
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    monkeypatch.setattr(step, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(UsageError, match="AMX"):
        precision_for("cpu", "bf16")


def test_cpu_bf16_step_runs_under_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    """With bf16 asked for on the CPU, the forward runs in bf16 and the weights stay float32."""
    import calibench.training.step as step

    monkeypatch.setattr(step, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    seen: list[torch.dtype] = []
    model = tiny_model()
    model.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    opt = make_sgd(model, lr=0.1, momentum=0.9, weight_decay=0, nesterov=False, device="cpu")
    precision = precision_for("cpu", "bf16")
    train_step = TrainStep(model, nn.CrossEntropyLoss(), opt, device="cpu", precision=precision)
    loss = train_step(*batch())
    assert seen == [torch.bfloat16] and loss.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
