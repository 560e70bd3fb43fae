"""The optimiser's parameter groups [5] and the learning-rate schedules (a small, saved state: resume is exact)."""
from __future__ import annotations

import math

from torch import nn

from alexnet.train.recipes import TrainConfig


class LRSchedule:
    """``lr_at(step)`` for per-step shapes; ``end_epoch(val_error)`` for the paper's plateau rule.

    plateau [5]: lr / 10 when the validation error has not improved for ``plateau_patience``
    epochs, at most ``plateau_max_drops`` times. onecycle: linear warm-up to ``lr`` then linear
    decay to 0. cosine: warm-up then cosine to 0. constant: ``lr`` throughout. ``warmup_epochs``
    ramps every shape linearly up from lr / warm-up steps (plateau and constant then hold ``lr``).
    """

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int) -> None:
        self.kind, self.base_lr = cfg.schedule, cfg.lr
        self.total = max(1, cfg.epochs * steps_per_epoch)
        self.warmup = int(cfg.warmup_epochs * steps_per_epoch)
        self.patience, self.max_drops = cfg.plateau_patience, cfg.plateau_max_drops
        self.scale, self.best, self.bad_epochs, self.drops = 1.0, math.inf, 0, 0

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.base_lr * self.scale * (step + 1) / self.warmup
        if self.kind in ("plateau", "constant"):
            return self.base_lr * self.scale
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        if self.kind == "onecycle":
            return self.base_lr * (1.0 - progress)
        return self.base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    def end_epoch(self, val_error: float) -> bool:
        """Record an epoch's validation error; True when the plateau rule just divided the lr."""
        if self.kind != "plateau":
            return False
        if val_error < self.best - 1e-9:
            self.best, self.bad_epochs = val_error, 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience and self.drops < self.max_drops:
            self.scale, self.bad_epochs, self.drops = self.scale / 10, 0, self.drops + 1
            return True
        return False

    def state_dict(self) -> dict:
        return {"scale": self.scale, "best": self.best, "bad_epochs": self.bad_epochs, "drops": self.drops}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.best = state["scale"], state["best"]
        self.bad_epochs, self.drops = state["bad_epochs"], state["drops"]


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Weights, and biases/norm parameters (1-d) when they decay or learn differently; ``lr_mult`` scales lr.

    Frozen parameters (``--freeze``) are left out. With ``--head-lr-mult M`` the head's parameters (the last
    fully connected layer, ``finetune.head_name``) form their own groups at M times their rate (Caffe's
    fine-tuning: fc8 at lr_mult 10, its bias at 20 with ``--bias-lr-mult 2``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    head: set[int] = set()
    if cfg.head_lr_mult != 1.0:
        from alexnet.train.finetune import head_parameters
        head = {id(p) for p in head_parameters(model)}
    groups = []
    for part, mult in (([p for p in params if id(p) not in head], 1.0), ([p for p in params if id(p) in head],
                                                                          cfg.head_lr_mult)):
        if cfg.decay_norm_and_bias and cfg.bias_lr_mult == 1.0:      # [5] the paper's text: one rate, all decayed
            groups.append({"params": part, "weight_decay": cfg.weight_decay, "lr_mult": mult})
            continue
        weights, biases = [p for p in part if p.dim() > 1], [p for p in part if p.dim() <= 1]
        groups += [{"params": weights, "weight_decay": cfg.weight_decay, "lr_mult": mult},
                   {"params": biases, "weight_decay": cfg.weight_decay if cfg.decay_norm_and_bias else 0.0,
                    "lr_mult": mult * cfg.bias_lr_mult}]
    return [g for g in groups if g["params"]]
