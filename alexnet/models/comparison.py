"""The seeds' comparison family. VGG and ResNet are torchvision's own builders; only the first conv
is swapped when ``in_channels`` is not 3. LeNet-5 (absent from torchvision) is seed 002's network.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torchvision
from torch import nn
from torchvision.models.vgg import VGG

from alexnet.errors import UsageError
from alexnet.ops.lrn import LocalResponseNorm
from alexnet.models.registry import register_model


class LeNet5(nn.Module):
    """Seed 002's LeNet-5: 5x5 convs, sigmoid, 2x2 average pooling, FC 120-84-classes. ``init``: "default"
    (PyTorch's) or "xavier" (d2l's ``train_ch6``: ``xavier_uniform_`` on every conv and linear weight)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = 28, init: str = "default") -> None:
        super().__init__()
        if init not in ("default", "xavier"):
            raise UsageError(f"lenet5: init must be default or xavier, got {init!r}")
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(in_channels, 6, 5, padding=2)), ("sigmoid1", nn.Sigmoid()),
            ("pool1", nn.AvgPool2d(2, 2)),
            ("conv2", nn.Conv2d(6, 16, 5)), ("sigmoid2", nn.Sigmoid()), ("pool2", nn.AvgPool2d(2, 2)),
        ]))
        side = ((input_size // 2) - 4) // 2
        self.classifier = nn.Sequential(OrderedDict([
            ("flatten", nn.Flatten()),
            ("fc1", nn.Linear(16 * side * side, 120)), ("sigmoid3", nn.Sigmoid()),
            ("fc2", nn.Linear(120, 84)), ("sigmoid4", nn.Sigmoid()),
            ("fc3", nn.Linear(84, num_classes)),
        ]))
        if init == "xavier":
            for module in self.modules():
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    nn.init.xavier_uniform_(module.weight)

    def forward(self, x):  # (B, C, H, W) -> (B, classes)
        return self.classifier(self.features(x))


@register_model("lenet5", input_size=28, min_input_size=12, in_channels=1, source="LeCun et al. 1998 via d2l (seed 002)",
                description="LeNet-5: sigmoid, average pooling, 5x5 convs")
def lenet5(*, num_classes: int, in_channels: int, input_size: int, init: str = "default") -> nn.Module:
    return LeNet5(num_classes, in_channels, input_size, init)


def _first_conv_to(model: nn.Module, path: str, in_channels: int) -> nn.Module:
    """Replace the conv at dotted ``path`` by one with ``in_channels`` inputs and the same settings."""
    if in_channels == 3:
        return model
    parent_path, _, leaf = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    old = parent.get_submodule(leaf)
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                    bias=old.bias is not None)
    if leaf.isdigit():
        parent[int(leaf)] = new
    else:
        setattr(parent, leaf, new)
    return model


def _register_torchvision(name: str, builder: Callable[..., nn.Module], first_conv: str, min_size: int,
                          description: str) -> None:
    def build(*, num_classes: int, in_channels: int, input_size: int, **kw) -> nn.Module:
        return _first_conv_to(builder(num_classes=num_classes, **kw), first_conv, in_channels)

    register_model(name, input_size=224, min_input_size=min_size, source=f"torchvision.models.{builder.__name__}",
                   description=description)(build)


for _depth in (11, 13, 16, 19):
    for _suffix in ("", "_bn"):
        _register_torchvision(f"vgg{_depth}{_suffix}", getattr(torchvision.models, f"vgg{_depth}{_suffix}"),
                              "features.0", 32, f"VGG-{_depth}{' with BatchNorm' if _suffix else ''} (Simonyan & Zisserman 2014)")
_register_torchvision("resnet18", torchvision.models.resnet18, "conv1", 32, "ResNet-18 (He et al. 2015)")
_register_torchvision("resnet34", torchvision.models.resnet34, "conv1", 32, "ResNet-34 (He et al. 2015)")


def _vgg_features(config: list, in_channels: int) -> nn.Sequential:
    """VGG feature stack from a config of widths, "M" (max-pool), "LRN" and (width, 1) for 1x1 convs."""
    layers: list[nn.Module] = []
    channels = in_channels
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        elif item == "LRN":   # VGG's A-LRN uses Krizhevsky's LRN constants (k=2, n=5, alpha=1e-4, beta=0.75)
            layers.append(LocalResponseNorm(5, 1e-4, 0.75, 2.0, alpha_on="sum"))
        else:
            width, kernel = item if isinstance(item, tuple) else (item, 3)
            layers += [nn.Conv2d(channels, width, kernel, padding=kernel // 2), nn.ReLU(inplace=True)]
            channels = width
    return nn.Sequential(*layers)


VGG_A_LRN = [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
VGG_C = [64, 64, "M", 128, 128, "M", 256, 256, (256, 1), "M", 512, 512, (512, 1), "M", 512, 512, (512, 1), "M"]


@register_model("vgg11_lrn", input_size=224, min_input_size=32, source="Simonyan & Zisserman 2014, Table 1 (A-LRN)",
                description="VGG configuration A-LRN on torchvision's VGG class: LRN after the first conv")
def vgg11_lrn(*, num_classes: int, in_channels: int, input_size: int, **kw) -> nn.Module:
    return VGG(_vgg_features(VGG_A_LRN, in_channels), num_classes=num_classes, **kw)


@register_model("vgg16_c", input_size=224, min_input_size=32, source="Simonyan & Zisserman 2014, Table 1 (C)",
                description="VGG configuration C on torchvision's VGG class: 1x1 convs in the last three blocks")
def vgg16_c(*, num_classes: int, in_channels: int, input_size: int, **kw) -> nn.Module:
    return VGG(_vgg_features(VGG_C, in_channels), num_classes=num_classes, **kw)
