"""CIFAR ResNets of He et al. 2016 (section 4.2): ``resnet20``, ``resnet56``, ``resnet110``.

A 3x3 conv with 16 filters, then 3 stages of ``n`` basic blocks (two 3x3 convs each) with 16, 32
and 64 filters, the second and third stages starting with stride 2, then global average pooling
and a linear layer: ``6n + 2`` layers (n = 3, 9, 18). Shortcuts are the paper's **option A**, as
it used on CIFAR: identity, and where the shape changes a parameter-free shortcut that subsamples
with stride 2 and zero-pads the new channels. Weights use Kaiming-normal (fan-out) init as in
He et al. 2015. Parameters: resnet20 0.27M, resnet56 0.85M, resnet110 1.7M.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from calibench.errors import UsageError
from calibench.registry import register_backbone

__all__ = ["CifarResNet", "resnet20", "resnet56", "resnet110"]

HE_2016 = (
    "He et al., Deep Residual Learning for Image Recognition, CVPR 2016 (CIFAR ResNets, option A)"
)


class _ShortcutA(nn.Module):
    """Option A: subsample by ``stride`` and zero-pad channels from ``in_ch`` to ``out_ch``."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad = out_ch - in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        same = stride == 1 and in_ch == out_ch
        self.shortcut: nn.Module = nn.Identity() if same else _ShortcutA(in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet with ``blocks_per_stage`` basic blocks in each of 3 stages (widths 16/32/64)."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 10) -> None:
        super().__init__()
        _check_num_classes(num_classes)
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers: list[nn.Module] = []
        in_ch = 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(blocks_per_stage):
                layers.append(BasicBlock(in_ch, width, stride if i == 0 else 1))
                in_ch = width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def _check_num_classes(num_classes: object) -> None:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise UsageError(f"num_classes must be an integer >= 2, got {num_classes!r}")


@register_backbone(
    "resnet20", summary="CIFAR ResNet-20 (He et al. 2016, 0.27M params)", reference=HE_2016
)
def resnet20(num_classes: int = 10) -> CifarResNet:
    """CIFAR ResNet-20: 3 stages of 3 basic blocks, widths 16/32/64, option-A shortcuts."""
    return CifarResNet(3, num_classes)


@register_backbone(
    "resnet56", summary="CIFAR ResNet-56 (He et al. 2016, 0.85M params)", reference=HE_2016
)
def resnet56(num_classes: int = 10) -> CifarResNet:
    """CIFAR ResNet-56: 3 stages of 9 basic blocks, widths 16/32/64, option-A shortcuts."""
    return CifarResNet(9, num_classes)


@register_backbone(
    "resnet110", summary="CIFAR ResNet-110 (He et al. 2016, 1.7M params)", reference=HE_2016
)
def resnet110(num_classes: int = 10) -> CifarResNet:
    """CIFAR ResNet-110: 3 stages of 18 basic blocks, widths 16/32/64, option-A shortcuts."""
    return CifarResNet(18, num_classes)
