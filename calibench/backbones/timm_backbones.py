"""timm backbones: ``resnet50`` with the CIFAR stem, and the ``timm:<model>`` family.

For 32x32 inputs the ImageNet stem (7x7 stride-2 conv, then a stride-2 max-pool) throws away
three quarters of the resolution twice. The CIFAR stem replaces it with a 3x3 stride-1 conv and
no max-pool, as in the CIFAR ResNet-50 of Mukhoti et al. 2020 (the "kuangliu" ResNet). It
applies to ResNet-like timm models that have a ``conv1`` and a ``maxpool``: a single ``conv1``
is replaced by a fresh 3x3 stride-1 conv with the same channels (its pretrained weights, if any,
are dropped); a deep stem (``conv1`` a Sequential starting with a 3x3 stride-2 conv, as in
``resnet50d``) gets stride 1. Other models (ViTs, ConvNeXts, ...) are left as timm builds them.
``model.cifar_stem`` records whether the stem was adapted. timm is imported only when a model is
built.
"""

from __future__ import annotations

import difflib

from torch import nn

from calibench.errors import UsageError
from calibench.registry import register_backbone, register_backbone_family

__all__ = ["adapt_cifar_stem", "resnet50", "timm_model"]

MUKHOTI_2020 = (
    "timm ResNet-50 (He et al., CVPR 2016) with the CIFAR stem of Mukhoti et al., "
    "Calibrating Deep Neural Networks using Focal Loss, NeurIPS 2020"
)
TIMM = "Wightman, PyTorch Image Models (timm), https://github.com/huggingface/pytorch-image-models"


def adapt_cifar_stem(model: nn.Module) -> bool:
    """Give a ResNet-like model the CIFAR stem in place; return whether it applied."""
    conv1 = getattr(model, "conv1", None)
    maxpool = getattr(model, "maxpool", None)
    if conv1 is None or maxpool is None:
        return False
    if isinstance(conv1, nn.Conv2d):
        model.conv1 = nn.Conv2d(conv1.in_channels, conv1.out_channels, 3, 1, 1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(conv1, nn.Sequential) and isinstance(conv1[0], nn.Conv2d):
        conv1[0].stride = (1, 1)
    else:
        return False
    model.maxpool = nn.Identity()
    return True


def _check_num_classes(num_classes: object) -> None:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise UsageError(f"num_classes must be an integer >= 2, got {num_classes!r}")


@register_backbone_family(
    "timm",
    summary="any timm model, e.g. timm:resnet18; ResNet-like stems adapted to 32x32 inputs",
    reference=TIMM,
)
def timm_model(model_name: str, num_classes: int = 10, pretrained: bool = False) -> nn.Module:
    """``timm.create_model(model_name, num_classes=..., pretrained=...)`` with the CIFAR stem where it applies."""
    import timm

    _check_num_classes(num_classes)
    if not timm.is_model(model_name):
        close = difflib.get_close_matches(model_name, timm.list_models(), n=5, cutoff=0.6)
        hint = f" Did you mean: {', '.join(f'timm:{c}' for c in close)}?" if close else ""
        raise UsageError(
            f"unknown timm model '{model_name}'.{hint} "
            "See timm.list_models() for the names timm knows."
        )
    try:
        model = timm.create_model(model_name, num_classes=num_classes, pretrained=pretrained)
    except (OSError, RuntimeError) as exc:
        what = "load pretrained weights for" if pretrained else "build"
        raise UsageError(f"timm could not {what} '{model_name}': {exc}") from None
    model.cifar_stem = adapt_cifar_stem(model)
    return model


@register_backbone(
    "resnet50",
    summary="ResNet-50 (timm) with the CIFAR stem: 3x3 stride-1 conv, no max-pool",
    reference=MUKHOTI_2020,
)
def resnet50(num_classes: int = 10) -> nn.Module:
    """timm's ``resnet50`` (random init) with the CIFAR stem, as in Mukhoti et al. 2020."""
    return timm_model("resnet50", num_classes=num_classes, pretrained=False)
