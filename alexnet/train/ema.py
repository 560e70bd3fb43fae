"""``--ema D``: an exponential moving average of the weights (Polyak & Juditsky 1992; not in the paper).

After every optimizer step each floating-point parameter and buffer (BatchNorm's running statistics too) of the
average moves towards the trained model's: ``avg = d * avg + (1 - d) * w``, with ``d = min(D, (1 + t) / (10 + t))``
at the t-th update (the warm-up of TensorFlow's ExponentialMovingAverage and timm's ModelEmaV2, so the first steps
are not dominated by the random init). Integer buffers (BatchNorm's batch count) are copied. Validation, best.pt,
eval, predict and export see the average: a checkpoint's weights are the averaged ones, and a resumable last.pt
keeps the trained ones beside them for ``--resume`` (``alexnet.train.state``).
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """The averaged copy of ``model`` (``self.model``, in eval mode, no gradients) and its update count."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay, self.updates = decay, 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self._pair(model)

    def _pair(self, model: nn.Module) -> None:
        ours, theirs = self.model.state_dict(keep_vars=True), model.state_dict(keep_vars=True)
        names = [n for n in ours if ours[n].is_floating_point()]
        self._floats = ([ours[n].detach() for n in names], [theirs[n].detach() for n in names])
        self._others = [(ours[n].detach(), theirs[n].detach()) for n in ours if not ours[n].is_floating_point()]

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """One step of the average towards the trained model's present weights."""
        torch._foreach_lerp_(self._floats[0], self._floats[1], 1.0 - self.current_decay())
        for ours, theirs in self._others:
            ours.copy_(theirs)
        self.updates += 1

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load(self, state_dict: dict, updates: int) -> None:
        """The average and its count, as a checkpoint kept them (``--resume``)."""
        from alexnet.weights import load_checked
        load_checked(self.model, state_dict)
        self.updates = int(updates)
