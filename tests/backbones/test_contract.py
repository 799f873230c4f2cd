"""The backbone contract, checked for every registered backbone (new ones are picked up).

Like timm's ``test_models.py``: one parametrised contract over ``list_backbones()``; a family
(``timm:<name>``) is checked through one small member.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from calibench import create_backbone, get_registry

FAMILY_EXAMPLES = {"timm:<name>": "timm:resnet18"}
NAMES = [FAMILY_EXAMPLES.get(name, name) for name in get_registry("backbones").entries()]


@pytest.mark.parametrize("name", NAMES)
def test_backbone_is_documented(name: str) -> None:
    entry = get_registry("backbones").get(name)
    assert entry.summary and entry.reference
    assert "num_classes" in entry.defaults, "every backbone takes num_classes"


@pytest.mark.parametrize("name", NAMES)
def test_backbone_maps_cifar_images_to_logits(name: str) -> None:
    torch.manual_seed(0)
    model = create_backbone(name, num_classes=7)
    assert isinstance(model, nn.Module)
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 7) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    model.train()
    out = model(x)
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads), "every parameter takes part in the forward"
