"""The model zoo: importing this package registers every model; ``create_model`` builds one by name."""
from __future__ import annotations

import fnmatch

from torch import nn

from alexnet.errors import UsageError
from alexnet.models import alexnet, comparison, fig1  # noqa: F401  (registers every builder)
from alexnet.models.alexnet import AlexNet
from alexnet.models.comparison import LeNet5
from alexnet.models.towers import TwoTowerAlexNet
from alexnet.models.registry import REGISTRY, ModelInfo

__all__ = ["AlexNet", "LeNet5", "create_model", "list_models", "model_info"]


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``, in registration order."""
    return [n for n in REGISTRY if fnmatch.fnmatch(n, pattern)]


def model_info(name: str) -> ModelInfo:
    if name not in REGISTRY:
        raise UsageError(f"unknown model {name!r}; choose one of: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def create_model(name: str, *, num_classes: int = 1000, in_channels: int | None = None,
                 input_size: int | None = None, **kw) -> nn.Module:
    """Build a registered model. ``in_channels`` and ``input_size`` default to the model's own."""
    info = model_info(name)
    if num_classes < 1:
        raise UsageError(f"num_classes must be >= 1, got {num_classes}")
    in_channels = info.in_channels if in_channels is None else in_channels
    if in_channels < 1:
        raise UsageError(f"in_channels must be >= 1, got {in_channels}")
    input_size = info.input_size if input_size is None else input_size
    info.check_input_size(input_size)
    if kw.get("towers") is not None and not info.towers:
        able = ", ".join(n for n, i in REGISTRY.items() if i.towers)
        raise UsageError(f"{name} does not split into two towers (towers=...); {able} models the paper's "
                         "two-GPU split [3.2]")
    towers = kw.pop("towers", None)
    model = info.builder(num_classes=num_classes, in_channels=in_channels, input_size=input_size, **kw)
    if towers is not None:                # [3.2] the grouped network cut into two towers on two devices
        model = TwoTowerAlexNet(model, towers)
    model.model_name = name
    return model
