"""The training step that :func:`calibench.training.trainer.train` runs, as a reusable unit.

:class:`TrainStep` is one SGD step on a device batch: forward (bf16 autocast when asked),
loss (its batch mean, times the batch size when the protocol's ``loss_reduction`` is ``"sum"``),
``zero_grad(set_to_none=True)``, backward, optional gradient-norm clipping (foreach), optimizer
step. It never syncs with the host: it returns the detached float32 batch-mean loss on the device.
``train()`` and the speed benchmarks (``benchmarks/train_throughput.py``) call this same object,
so what the benchmarks time is the trainer's code, not a copy.

:func:`make_sgd` builds the trainer's optimizer (fused SGD on CUDA, ``foreach`` on CPU) and
:func:`backend_flags` sets the trainer's device flags (CUDA: ``cudnn.benchmark``, TF32; CPU:
deterministic algorithms) and restores them on exit.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from calibench.errors import UsageError
from calibench.protocols import LOSS_REDUCTIONS, PRECISIONS, Protocol

__all__ = [
    "CPU_BF16_ENV",
    "TrainStep",
    "backend_flags",
    "cpu_has_native_bf16",
    "make_sgd",
    "precision_for",
]


CPU_BF16_ENV = "CALIBENCH_CPU_BF16"
"""Set to ``1`` (``calibench run --cpu-bf16``) to honour a protocol's ``bf16`` on a CPU too."""


def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls and convolutions natively (Intel AMX tiles): without
    them oneDNN emulates bf16 and autocast is slower than float32."""
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(amx is not None and amx() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_bf16_requested() -> bool:
    """Whether ``$CALIBENCH_CPU_BF16`` asks for bf16 on the CPU (``1``/``true``/``yes``)."""
    value = os.environ.get(CPU_BF16_ENV, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise UsageError(f"${CPU_BF16_ENV} must be 1 or 0, got {value!r}")


def precision_for(device: torch.device | str, requested: str) -> str:
    """The precision actually used for a protocol's ``requested`` one on ``device``.

    CUDA: ``requested``. CPU: ``"fp32"``, unless ``requested`` is ``"bf16"`` and
    ``$CALIBENCH_CPU_BF16`` is set (``calibench run --cpu-bf16``): then ``"bf16"`` autocast, as on
    CUDA. It is opt-in because bf16 autocast is emulated, and slower than float32, on a CPU
    without AMX (:func:`cpu_has_native_bf16`, where asking for it is refused); on one with AMX it
    trains resnet20 about 2x faster per core (``benchmarks/RESULTS.md``). Records and checkpoints
    keep the precision used.
    """
    if requested not in PRECISIONS:
        raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if torch.device(device).type == "cuda":
        return requested
    if requested == "bf16" and cpu_bf16_requested():
        if not cpu_has_native_bf16():
            raise UsageError(
                f"${CPU_BF16_ENV} (--cpu-bf16) asks for bf16 on a CPU without native bf16 (Intel "
                "AMX): autocast would be emulated and slower than float32. Unset it to train in "
                "float32."
            )
        return "bf16"
    return "fp32"


def make_sgd(
    model: nn.Module,
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    nesterov: bool,
    device: torch.device | str,
) -> torch.optim.SGD:
    """SGD over ``model``'s parameters: the fused kernel on CUDA, the ``foreach`` one on CPU."""
    impl = {"fused": True} if torch.device(device).type == "cuda" else {"foreach": True}
    return torch.optim.SGD(
        model.parameters(),
        lr=lr,
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=weight_decay,
        **impl,
    )


@contextmanager
def backend_flags(device: torch.device | str) -> Iterator[None]:
    """The trainer's backend flags for ``device`` inside the block, the previous ones after.

    CUDA: ``cudnn.benchmark = True`` (input shapes are fixed), TF32 for convolutions and
    float32 matmuls (``set_float32_matmul_precision("high")``), non-deterministic algorithms.
    CPU: ``torch.use_deterministic_algorithms(True)``.
    """
    saved = (
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")
        torch.use_deterministic_algorithms(False)
    else:
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved[0]
        torch.backends.cudnn.allow_tf32 = saved[1]
        torch.set_float32_matmul_precision(saved[2])
        torch.use_deterministic_algorithms(saved[3], warn_only=saved[4])


class TrainStep:
    """One training step of ``model`` on a batch; call it as ``step(x, y) -> loss``.

    ``model`` is the plain module (kept as ``.model``); with ``compile=True`` the forward goes
    through ``torch.compile(model)`` (``.forward_module``), built once here. ``precision``
    ``"bf16"`` runs forward and loss under ``torch.autocast(device_type, bfloat16)``; parameters,
    gradients and optimizer state stay float32.

    ``loss_reduction`` is what backward differentiates: ``"mean"`` the criterion's batch mean
    ``L``; ``"sum"`` ``B * L`` for a batch of ``B`` samples, the per-sample sum that Mukhoti et
    al.'s code trains (so the gradient is exactly ``B`` times the mean's before clipping).
    ``grad_clip > 0`` then clips the global gradient L2 norm of the trainable parameters to that
    value, after backward and before the optimizer step.

    The returned loss is the batch mean ``L.detach().float()`` whatever the reduction, still on
    the device (no host sync): the trainer's progress and history report the per-sample mean
    loss, comparable across reductions and batch sizes.
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        device: torch.device | str,
        precision: str = "fp32",
        grad_clip: float = 0.0,
        loss_reduction: str = "mean",
        compile: bool = False,
    ) -> None:
        if precision not in PRECISIONS:
            raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if not grad_clip >= 0:
            raise UsageError(f"grad_clip must be >= 0 (0 turns clipping off), got {grad_clip!r}")
        if loss_reduction not in LOSS_REDUCTIONS:
            raise UsageError(
                f"loss_reduction must be one of {', '.join(LOSS_REDUCTIONS)}, got {loss_reduction!r}"
            )
        self.model = model
        self.criterion = criterion
        self.optimizer = optimizer
        self.device = torch.device(device)
        self.precision = precision
        self.grad_clip = float(grad_clip)
        self.loss_reduction = loss_reduction
        self.compiled = bool(compile)
        self.forward_module: nn.Module = torch.compile(model) if compile else model
        self._params = [p for p in model.parameters() if p.requires_grad]
        self._bf16 = precision == "bf16"
        self._sum = loss_reduction == "sum"

    @classmethod
    def from_protocol(
        cls,
        model: nn.Module,
        criterion: nn.Module,
        protocol: Protocol,
        *,
        device: torch.device | str,
        compile: bool = False,
    ) -> TrainStep:
        """The step a protocol prescribes: its SGD, its precision on ``device``, its loss
        reduction and its gradient clipping."""
        opt = protocol.train.optimizer
        optimizer = make_sgd(
            model,
            lr=opt.lr,
            momentum=opt.momentum,
            weight_decay=opt.weight_decay,
            nesterov=opt.nesterov,
            device=device,
        )
        return cls(
            model,
            criterion,
            optimizer,
            device=device,
            precision=precision_for(device, protocol.train.precision),
            grad_clip=protocol.train.grad_clip,
            loss_reduction=protocol.train.loss_reduction,
            compile=compile,
        )

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._bf16):
            logits = self.forward_module(x)
            loss = self.criterion(logits, y)
        objective = loss * y.shape[0] if self._sum else loss
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self._params, self.grad_clip, foreach=True)
        self.optimizer.step()
        return loss.detach().float()
