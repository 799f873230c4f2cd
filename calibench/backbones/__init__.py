"""Built-in backbones. Importing this package registers each of them."""

from calibench.backbones import resnet_cifar, timm_backbones

__all__ = ["resnet_cifar", "timm_backbones"]
