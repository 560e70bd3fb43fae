"""Where a run is: the part of a checkpoint that moves, apart from the parts it moves (``alexnet.train.parts``) and
the observers that watch it (``alexnet.train.observers``).

``Position`` is the epoch, the next step within it, the global step, an interrupted epoch's running sums, the
history of finished epochs and the best one so far. ``to_dict``/``from_dict`` are what ``last.pt`` holds under
``position``, ``history`` and ``best``; with the optimizer's, the schedule's and the RNG's states
(``training_state``, ``restore_training``) a resumed run continues exactly where the interrupted one stopped:
the same batches, the same augmentation draws, the same weights, bit for bit (tests/train/test_loop.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Position:
    epoch: int = 0                        # epochs finished
    step: int = 0                         # the next step within the epoch
    global_step: int = 0                  # steps taken in all
    partial: dict | None = None           # an interrupted epoch's running sums (loss_sum, correct, seen, seconds)
    history: list = field(default_factory=list)        # one row per finished epoch (metrics.jsonl's)
    best: dict = field(default_factory=lambda: {"val_top1": -1.0, "epoch": -1})

    def to_dict(self) -> dict:
        """``last.pt``'s position, history and best (the partial sums only mid-epoch)."""
        position = {"epoch": self.epoch, "step": self.step, "global_step": self.global_step}
        if self.partial is not None:
            position["partial"] = self.partial
        return {"position": position, "history": self.history, "best": self.best}

    @classmethod
    def from_dict(cls, training: dict) -> "Position":
        position = training["position"]
        return cls(position["epoch"], position["step"], position["global_step"], position.get("partial"),
                   training["history"], training["best"])

    def end_epoch(self, row: dict) -> None:
        """An epoch finished with ``row``: the next starts at step 0 with fresh sums."""
        self.history.append(row)
        self.epoch, self.step, self.partial = self.epoch + 1, 0, None


def rng_state(device: torch.device, towers: tuple | None) -> dict:
    """The generators a step draws from: the CPU's, the device's, and the second tower's GPU."""
    rng = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    if towers and towers[1].type == "cuda" and towers[1] != device:
        rng["cuda_tower1"] = torch.cuda.get_rng_state(towers[1])
    return rng


def set_rng_state(rng: dict, device: torch.device, towers: tuple | None) -> None:
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)
    if "cuda_tower1" in rng and towers and towers[1].type == "cuda":
        torch.cuda.set_rng_state(rng["cuda_tower1"], towers[1])


def training_state(parts, position: Position) -> dict:
    """Everything ``--resume`` needs besides the checkpoint's weights: the optimizer's momentum, the schedule, the
    position and the RNG (``Checkpoint.training``); with ``--ema`` the trained weights and the average's count
    (the checkpoint's weights are then the average's)."""
    state = {"optimizer": parts.optimizer.state_dict(), "schedule": parts.schedule.state_dict(),
             **position.to_dict(), "rng": rng_state(parts.device, parts.towers)}
    if parts.ema:
        state["ema"] = {"updates": parts.ema.updates, "trained": parts.raw_model.state_dict()}
    return state


def restore_training(parts, resumed, source: str) -> Position:
    """The weights, optimizer, schedule and RNG of the checkpoint ``resumed`` (read from ``source``) put back into
    ``parts``; the position returned."""
    from alexnet.weights import load_checked
    training, ema = resumed.training, resumed.training.get("ema")
    if parts.ema and ema:                  # the trained weights and the average, each where it belongs
        load_checked(parts.raw_model, ema["trained"], source)
        parts.ema.load(resumed.state_dict, ema["updates"])
    else:
        load_checked(parts.raw_model, resumed.state_dict, source)
    parts.optimizer.load_state_dict(training["optimizer"])
    parts.schedule.load_state_dict(training["schedule"])
    set_rng_state(training["rng"], parts.device, parts.towers)
    return Position.from_dict(training)
