"""What watches a run without steering it (the main process only): TensorBoard, the stall watch, ``--diagnose``'s
per-layer statistics, and the once-only estimate of the whole run's time. None of them changes a step's result.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from alexnet.train.diagnose import LayerStats, StallWatch, record_diagnosis, stall_fixes


@dataclass
class Observers:
    writer: object = None                 # torch.utils.tensorboard.SummaryWriter
    watch: StallWatch | None = None       # loss stuck at ln K, or blown up
    stats: LayerStats | None = None       # --diagnose N
    diagnose_every: int = 0
    out: Path | None = None
    last_diagnosis: dict | None = None
    eta_said: bool = False                # the whole run's estimated time is printed once, after the first epoch

    @classmethod
    def open(cls, out: Path, model: torch.nn.Module, num_classes: int, diagnose: int) -> "Observers":
        from torch.utils.tensorboard import SummaryWriter
        return cls(SummaryWriter(str(out)), StallWatch(num_classes, fixes=stall_fixes(model)),
                   LayerStats(model) if diagnose else None, diagnose, out)

    def arm_if_due(self, global_step: int) -> None:
        """--diagnose N: the forward, gradients and update of every N-th step are recorded."""
        if self.stats and global_step % self.diagnose_every == 0:
            self.stats.arm()

    def before_update(self) -> None:
        if self.stats:
            self.stats.before_step()

    def after_update(self, global_step: int, loss: torch.Tensor, lr: float) -> None:
        if self.stats and (row := self.stats.after_step(global_step)):
            self.last_diagnosis = row = dict(row, loss=loss.item(), lr=lr)
            record_diagnosis(row, self.out / "diagnose.jsonl", self.writer, self.stats)

    def watch_loss(self, loss: torch.Tensor, global_step: int) -> None:
        """Every ``window`` steps the stall watch reads the window's mean loss; it speaks at most once a kind."""
        if self.watch and (message := self.watch.observe(loss.detach(), global_step)):
            print(f"alexnet train: warning: {message}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.writer:
            self.writer.close()
        if self.stats:
            self.stats.remove()
