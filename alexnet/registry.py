"""The model zoo's registry: names -> builders plus the metadata a user needs before building.

Every builder has the signature ``builder(*, num_classes, in_channels, input_size, **kw)``.
"""
from __future__ import annotations

import fnmatch
import functools
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from alexnet.errors import UsageError


@dataclass(frozen=True)
class ModelInfo:
    name: str
    builder: Callable[..., nn.Module]
    input_size: int                      # default input side in pixels
    source: str                          # where the definition comes from
    description: str
    in_channels: int = 3                 # default channels (1 for the Fashion-MNIST nets)
    input_sizes: tuple[int, ...] = ()    # the only valid sizes; empty = any size >= min_input_size
    min_input_size: int = 1
    notes: tuple[str, ...] = field(default_factory=tuple)
    towers: bool = False                 # models the paper's two towers: create_model(..., towers=(dev0, dev1)) [3.2]

    def check_input_size(self, size: int) -> None:
        if self.input_sizes and size not in self.input_sizes:
            valid = " or ".join(str(s) for s in self.input_sizes)
            raise UsageError(f"{self.name} takes input size {valid}, not {size} (choose --input-size {valid})")
        if not self.input_sizes and size < self.min_input_size:
            raise UsageError(f"{self.name} needs inputs of at least {self.min_input_size}x{self.min_input_size} "
                             f"pixels, got {size} (use --input-size >= {self.min_input_size})")

    @functools.cached_property
    def num_params(self) -> int:
        """Parameters at 1000 classes and the default channels, counted without allocating weights."""
        with torch.device("meta"):
            model = self.builder(num_classes=1000, in_channels=self.in_channels, input_size=self.input_size)
        return sum(p.numel() for p in model.parameters())


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(name: str, *, input_size: int, source: str, description: str, **meta) -> Callable:
    """Decorator: register ``builder`` under ``name``; a second registration of a name is refused."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelInfo(name, builder, input_size, source, description, **meta)
        return builder

    return wrap


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``, in registration order."""
    _load_zoo()
    return [n for n in _REGISTRY if fnmatch.fnmatch(n, pattern)]


def model_info(name: str) -> ModelInfo:
    _load_zoo()
    if name not in _REGISTRY:
        raise UsageError(f"unknown model {name!r}; choose one of: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


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
        able = ", ".join(n for n, i in _REGISTRY.items() if i.towers)
        raise UsageError(f"{name} does not split into two towers (towers=...); {able} models the paper's "
                         "two-GPU split [3.2]")
    kw = {k: v for k, v in kw.items() if k != "towers" or v is not None}
    model = info.builder(num_classes=num_classes, in_channels=in_channels, input_size=input_size, **kw)
    model.model_name = name
    return model


def _load_zoo() -> None:
    import alexnet.models  # noqa: F401  (registers everything on import)
