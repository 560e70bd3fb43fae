"""The model zoo's registry: names -> builders plus the metadata a user needs before building.

Every builder has the signature ``builder(*, num_classes, in_channels, input_size, **kw)``. This module only
holds the table; ``alexnet.models`` fills it (importing every builder) and builds from it (``create_model``).
"""
from __future__ import annotations

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


REGISTRY: dict[str, ModelInfo] = {}


def register_model(name: str, *, input_size: int, source: str, description: str, **meta) -> Callable:
    """Decorator: register ``builder`` under ``name``; a second registration of a name is refused."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        REGISTRY[name] = ModelInfo(name, builder, input_size, source, description, **meta)
        return builder

    return wrap
