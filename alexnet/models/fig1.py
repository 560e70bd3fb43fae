"""Fig. 1's four-layer CNN [3.1]: the network the paper uses to show ReLUs train six times faster than tanh.

The paper does not give this net's layers. Ours is a reconstruction modelled on cuda-convnet's CIFAR-10
example (layers-80sec.cfg): three 5x5 conv layers of 32, 32 and 64 maps, each followed by the activation and
a 3/2 max-pool, then one fully connected layer to the classes. No dropout, no normalisation.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from alexnet.errors import UsageError
from alexnet.models.registry import register_model


class FourLayerCNN(nn.Module):
    """conv5x5(32) act pool, conv5x5(32) act pool, conv5x5(64) act pool, fc -> classes."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, *, input_size: int = 32,
                 widths: tuple[int, int, int] = (32, 32, 64), activation: str = "relu") -> None:
        super().__init__()
        if activation not in ("relu", "tanh"):
            raise UsageError(f"activation must be relu or tanh, got {activation!r}")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels, size = in_channels, input_size
        for i, width in enumerate(widths, start=1):
            layers[f"conv{i}"] = nn.Conv2d(channels, width, 5, padding=2)
            layers[f"{activation}{i}"] = nn.ReLU(inplace=True) if activation == "relu" else nn.Tanh()
            layers[f"pool{i}"] = nn.MaxPool2d(3, stride=2, padding=1)
            channels, size = width, (size + 2 - 3) // 2 + 1
        self.features = nn.Sequential(layers)
        self.classifier = nn.Linear(channels * size * size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, classes)
        return self.classifier(torch.flatten(self.features(x), 1))


@register_model("cnn4_fig1", input_size=32, min_input_size=8, in_channels=3,
                source="Krizhevsky et al. 2012 Fig. 1 (our reconstruction)",
                description="Fig. 1's four-layer CNN: three 5x5 convs (32-32-64) with 3/2 pooling, one fc layer",
                notes=("[3.1] the paper does not give Fig. 1's layers; modelled on cuda-convnet's CIFAR-10 "
                       "layers-80sec.cfg", "activation='relu' or 'tanh' (the two curves of Fig. 1)"))
def cnn4_fig1(*, num_classes: int, in_channels: int, input_size: int, **kw) -> FourLayerCNN:
    return FourLayerCNN(num_classes, in_channels, input_size=input_size, **kw)
