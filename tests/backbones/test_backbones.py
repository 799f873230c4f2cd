"""Backbones: CIFAR ResNets (He et al. 2016), timm resnet50 with the CIFAR stem, timm:<model>."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from calibench import create_backbone, get_registry
from calibench.backbones.resnet_cifar import BasicBlock, CifarResNet
from calibench.errors import UsageError


@pytest.mark.parametrize(("name", "n"), [("resnet20", 3), ("resnet56", 9), ("resnet110", 18)])
def test_cifar_resnet_structure(name: str, n: int) -> None:
    model = create_backbone(name, num_classes=7)
    assert isinstance(model, CifarResNet)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 3 * n
    assert [b.conv2.out_channels for b in blocks] == [16] * n + [32] * n + [64] * n
    weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weighted) == 6 * n + 2  # the depth in the model's name
    # option A shortcuts: no parameters outside convs, batch norms and the classifier.
    for block in blocks:
        assert not list(block.shortcut.parameters())


def test_cifar_resnet_forward_and_shortcut_shapes() -> None:
    model = create_backbone("resnet20", num_classes=10).eval()
    x = torch.randn(3, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    out = model(x)
    assert out.shape == (3, 10) and out.dtype == torch.float32
    features = {}
    model.layers[3].register_forward_hook(lambda m, i, o: features.setdefault("stage2", o))
    model.layers[6].register_forward_hook(lambda m, i, o: features.setdefault("stage3", o))
    model(x)
    assert features["stage2"].shape == (3, 32, 16, 16)
    assert features["stage3"].shape == (3, 64, 8, 8)


def test_resnet_is_deterministic_from_torch_seed() -> None:
    torch.manual_seed(0)
    a = create_backbone("resnet20")
    torch.manual_seed(0)
    b = create_backbone("resnet20")
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)


def test_resnet50_has_cifar_stem() -> None:
    model = create_backbone("resnet50", num_classes=10).eval()
    assert model.cifar_stem is True
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (2, 10)
        # stride 1 stem, no max-pool: only the three strided stages reduce 32 -> 4.
        assert model.forward_features(x).shape == (2, 2048, 4, 4)


def test_timm_family_adapts_resnet_like_and_leaves_others() -> None:
    r18 = create_backbone("timm:resnet18", num_classes=5)
    assert r18.cifar_stem is True and r18(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    deep = create_backbone("timm:resnet18d", num_classes=5)
    assert deep.cifar_stem is True and deep.conv1[0].stride == (1, 1)
    vit = create_backbone("timm:vit_tiny_patch16_224", num_classes=5)
    assert vit.cifar_stem is False


def test_unknown_timm_model_suggests_close_matches() -> None:
    with pytest.raises(UsageError, match=r"unknown timm model 'resnet5O'.*timm:resnet50"):
        create_backbone("timm:resnet5O")


@pytest.mark.parametrize("name", ["resnet20", "resnet50", "timm:resnet18"])
@pytest.mark.parametrize("num_classes", [1, 0, 2.5, True])
def test_bad_num_classes(name: str, num_classes) -> None:
    with pytest.raises(UsageError, match="num_classes"):
        create_backbone(name, num_classes=num_classes)


def test_registry_entries() -> None:
    reg = get_registry("backbones")
    for name in ("resnet20", "resnet56", "resnet110", "resnet50"):
        entry = reg.get(name)
        assert entry.defaults == {"num_classes": 10} and entry.reference
    family = reg.get("timm:resnet18")
    assert family.defaults == {"num_classes": 10, "pretrained": False}
    assert "timm:<name>" in reg.entries("timm:*")
