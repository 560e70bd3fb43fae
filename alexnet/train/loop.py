"""The training loop, top to bottom: ``setup``, then ``train_one_epoch`` and ``end_of_epoch`` until done [5].

A run is three things kept apart: its parts (model, optimizer, schedule, loader, preprocessing: ``parts.py``,
built once), its position (epoch, step, history, best: ``state.py``, what ``last.pt`` saves and ``--resume``
restores) and its observers (TensorBoard, the stall watch, ``--diagnose``: ``observers.py``). Around them:
recipes (``recipes.py``), the run folder (``run_folder.py``), checkpoints (``alexnet.checkpoint``), data
(``alexnet.data``), --init (``finetune.py``). Here: precision, DDP, the SGD loop, validation, the plateau rule,
exact resume, signals, NaN.
"""
from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from alexnet.checkpoint import Checkpoint, atomic_save
from alexnet.errors import NonFiniteLoss, TrainingInterrupted, UsageError
from alexnet.inference.evaluate import accuracy_report, predict_probs
from alexnet.models import model_info
from alexnet.train import distributed
from alexnet.train.diagnose import format_diagnosis
from alexnet.train.observers import Observers
from alexnet.train.parts import Parts, build_parts, open_data, resolve_amp, resolve_device, resolve_towers
from alexnet.train.recipes import TrainConfig
from alexnet.train.run_folder import (append_metrics, clear_old_run, epoch_line, eta_line, prepare_out, releasing,
                                      stop_on_signals, write_config)
from alexnet.train.state import Position, restore_training, training_state
from alexnet.util.plots import plot_curves
from alexnet.util.progress import Progress

# Called before each step's forward with (rank, global step, input batch): the tests' fault injection.
StepHook = Callable[[int, int, torch.Tensor], None]
AfterStep = Callable[[int, torch.Tensor, torch.Tensor, int], None]   # after each step: steps done, loss, hits, n
STOP_CHECK_EVERY = 20   # DDP ranks agree on a stop every this many steps and at epoch ends; one process: each step


@dataclass
class Run:
    """One training run: its config and folder, its parts, where it is, and who watches."""
    cfg: TrainConfig
    out: Path
    parts: Parts
    position: Position = field(default_factory=Position)
    observers: Observers = field(default_factory=Observers)

    is_main = property(lambda self: self.parts.rank == 0)

    def log(self, *parts) -> None:
        if self.is_main and not self.cfg.quiet:
            _log(*parts)

    def checkpoint(self) -> Checkpoint:
        """This moment as a checkpoint (``last.pt``: resumable)."""
        parts = self.parts
        return Checkpoint(parts.spec, parts.classes, self.cfg.to_dict(), parts.prep, parts.eval_model.state_dict(),
                          training_state(parts, self.position))


def _log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def train(cfg: TrainConfig, *, resume: bool = False, force: bool = False, device: torch.device | None = None,
          on_step: StepHook | None = None, after_step: AfterStep | None = None) -> dict:
    """Train as ``cfg`` says; returns the final summary (best val, paths). ``resume``: continue the run in
    ``cfg.out`` from its ``last.pt`` (``cfg`` is then ``run_folder.resume_config``'s). ``device``: ``cfg.device``
    as the command line resolved it (``parts.resolve_device``); None resolves it here."""
    with releasing(cfg.out):                # the run folder's lock, taken in setup
        run = setup(cfg, resume=resume, force=force, device=device)
        stop = None
        with stop_on_signals() as signals:
            while run.position.epoch < cfg.epochs and stop is None:
                stop = train_one_epoch(run, signals, on_step, after_step)
                if stop and run.position.step < len(run.parts.loader):   # mid-epoch: position and sums are saved
                    break
                end_of_epoch(run)
        return finish(run, stop, signals)


def setup(cfg: TrainConfig, *, resume: bool, force: bool, device: torch.device | None = None) -> Run:
    """The run's folder, device(s), data and parts, then its position: the start, or where last.pt stopped."""
    model_info(cfg.model)                    # a bad --model is reported before anything else happens
    device = device or resolve_device(cfg.device)
    rank, world_size = distributed.init(device)
    out = prepare_out(Path(cfg.out), resume=resume, force=force, is_main=rank == 0)
    resumed = Checkpoint.load(out / "last.pt") if resume else None
    if cfg.batch_size % world_size:
        raise UsageError(f"--batch-size {cfg.batch_size} must be divisible by the {world_size} processes")
    towers = resolve_towers(cfg.towers, cfg.model_kwargs, resumed and resumed.config, world_size, out)
    device = towers[0] if towers else device
    cfg = resolve_amp(cfg, device, warn=rank == 0)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    train_set, val_set = open_data(cfg, rank)
    log = _log if rank == 0 and not cfg.quiet else (lambda *_: None)
    input_size, channels = cfg.resize_to or cfg.crop_size or train_set.images.shape[1], train_set.images.shape[-1]
    log(f"data: {train_set.source}: {len(train_set.labels)} train / {len(val_set.labels)} val images, "
        f"{len(train_set.classes)} classes, {channels} channel(s), input {input_size}px "
        f"({time.perf_counter() - t0:.1f}s)" + (f"; skipped {len(train_set.skipped)}" if train_set.skipped else ""))
    parts = build_parts(cfg, train_set, val_set, device=device, rank=rank, world_size=world_size, towers=towers,
                        resumed=resumed, log=log)
    run = Run(cfg, out, parts)
    if rank == 0:
        if not resume:                       # only now: data, model and --init were fine, the old run can go
            clear_old_run(out)
        write_config(out, cfg, resumed_epoch=Position.from_dict(resumed.training).epoch if resumed else None)
        run.observers = Observers.open(out, parts.raw_model, len(parts.classes), cfg.diagnose)
    if resumed:
        _restore(run, resumed)
    return run


def _restore(run: Run, resumed: Checkpoint) -> None:
    """Continue exactly where ``last.pt`` stopped: weights, momentum, schedule, position, sums and RNG."""
    run.position = restore_training(run.parts, resumed, str(run.out / "last.pt"))
    epoch = run.position.epoch
    run.log(f"resumed {run.out / 'last.pt'} at epoch {epoch + 1} step {run.position.step}" if epoch < run.cfg.epochs
            else f"{run.out / 'last.pt'} is a complete run ({epoch}/{run.cfg.epochs} epochs); nothing left to train")


def train_one_epoch(run: Run, signals: list, on_step: StepHook | None, after_step: AfterStep | None) -> str | None:
    """SGD steps from the position's step to the epoch's end or a stop; returns "signal", "max_steps" or None."""
    cfg, parts, pos = run.cfg, run.parts, run.position
    device, loader = parts.device, parts.loader
    parts.model.train()
    bar = Progress(len(loader) - pos.step, desc=f"epoch {pos.epoch + 1}/{cfg.epochs}",
                   enabled=run.is_main and not cfg.quiet)
    sums = pos.partial or {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
    loss_sum = torch.tensor(sums["loss_sum"], device=device)
    correct = torch.tensor(sums["correct"], device=device, dtype=torch.int64)
    seen, started = sums["seen"], time.perf_counter() - sums["seconds"]
    stop = None
    run.observers.arm_if_due(pos.global_step)    # this step's forward, gradients and update are recorded
    for step, (x, y) in enumerate(loader.iterate(pos.epoch, pos.step), start=pos.step):
        if on_step:
            on_step(parts.rank, pos.global_step, x)
        loss, logits = _sgd_step(run, x, y, step)
        run.observers.watch_loss(loss, pos.global_step)
        hits = (logits.detach().argmax(1) == y).sum()
        loss_sum, correct, seen = loss_sum + loss.detach() * len(y), correct + hits, seen + len(y)
        if after_step:
            after_step(pos.global_step, loss.detach(), hits, len(y))
        show = bar.tty and step % 10 == 0
        bar.update(1, n=len(y) * parts.world_size,
                   **({"loss": loss_sum.item() / seen, "acc": correct.item() / seen} if show else {}))
        agree = not distributed.active() or pos.global_step % STOP_CHECK_EVERY == 0 or step + 1 == len(loader)
        if agree and distributed.any_flag(bool(signals), device):
            stop = "signal"
        elif cfg.max_steps and pos.global_step >= cfg.max_steps:
            stop = "max_steps"
        if stop:
            break
    bar.close()
    if not torch.isfinite(loss_sum):
        raise NonFiniteLoss(f"loss became non-finite in epoch {pos.epoch + 1} before step {pos.global_step}")
    pos.step, pos.partial = step + 1, {"loss_sum": loss_sum.item(), "correct": correct.item(), "seen": seen,
                                       "seconds": time.perf_counter() - started}
    if stop and pos.step < len(loader) and run.is_main:
        atomic_save(run.checkpoint().to_dict(), run.out / "last.pt")
    return stop


def _sgd_step(run: Run, x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step [5]: the lr of this step, forward, loss, backward, update (and --diagnose)."""
    parts, pos, cfg = run.parts, run.position, run.cfg
    lr = parts.schedule.lr_at(pos.global_step)
    for group in parts.optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
    with torch.autocast(parts.device.type, dtype=torch.bfloat16, enabled=parts.use_bf16):
        logits = parts.model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
    if parts.device.type == "cpu" and not torch.isfinite(loss):   # a free check on CPU
        raise NonFiniteLoss(f"loss is {loss.item()} at epoch {pos.epoch + 1} step {step}")
    parts.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.clip_grad_norm:    # after DDP's all-reduce: every process scales by the same norm
        torch.nn.utils.clip_grad_norm_(parts.model.parameters(), cfg.clip_grad_norm)
    run.observers.before_update()
    parts.optimizer.step()
    if parts.ema:
        parts.ema.update()
    run.observers.after_update(pos.global_step, loss, lr)
    pos.global_step += 1
    run.observers.arm_if_due(pos.global_step)    # the next step's forward, gradients and update are recorded
    return loss, logits


def end_of_epoch(run: Run) -> None:
    """Validate, apply the plateau rule [5], log, and save last.pt (and best.pt when val top-1 improved)."""
    parts, pos = run.parts, run.position
    sums, device = pos.partial, parts.device
    started = time.perf_counter() - sums["seconds"]
    totals = distributed.sum_tensor(torch.tensor([sums["loss_sum"], float(sums["correct"]), float(sums["seen"])],
                                                 device=device))
    views = parts.prep.eval_transform(flip_view=run.cfg.flip_view)    # what eval of the checkpoint will use
    probs = predict_probs([parts.eval_model], parts.val_set.images, views,
                          batch_size=run.cfg.eval_batch_size, device=device, autocast=parts.use_bf16)
    val = accuracy_report(probs, parts.val_set.labels, parts.classes)
    if not math.isfinite(val["loss"]):      # diverged: this epoch is neither last.pt nor best.pt (every rank stops)
        raise NonFiniteLoss(f"the validation loss is {val['loss']} after epoch {pos.epoch + 1} (train loss "
                            f"{(totals[0] / totals[2]).item():.4g}): the weights diverged, and epoch "
                            f"{pos.epoch + 1} was not saved")
    dropped = parts.schedule.end_epoch(val["top1_error"])
    row = {"epoch": pos.epoch + 1, "lr": parts.optimizer.param_groups[0]["lr"],
           "train_loss": (totals[0] / totals[2]).item(), "train_top1": (totals[1] / totals[2]).item(),
           "val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"],
           "images_per_s": totals[2].item() / sums["seconds"], "seconds": time.perf_counter() - started}
    pos.end_epoch(row)
    if not run.is_main:
        return
    improved = val["top1"] > pos.best["val_top1"]
    if improved:
        pos.best = {"val_top1": val["top1"], "val_top5": val["top5"], "epoch": pos.epoch}
    state = run.checkpoint()
    atomic_save(state.to_dict(), run.out / "last.pt")
    if improved:                            # the weights of the best epoch, without the state only resume needs
        atomic_save(dict(state.to_dict(), optimizer={}, rng={}, ema={}), run.out / "best.pt")
    append_metrics(run.out, row, run.observers.writer)     # after last.pt: metrics.jsonl never runs ahead of it
    plot_curves(pos.history, run.out / "curves.png")
    run.log(epoch_line(row, run.cfg.epochs, parts.schedule.drops if dropped else None))
    if not run.observers.eta_said and pos.epoch < run.cfg.epochs:    # once, after the first epoch this process trains
        run.observers.eta_said = run.log(eta_line(row, pos.epoch, run.cfg.epochs)) or True
    if run.observers.last_diagnosis:
        run.log(format_diagnosis([run.observers.last_diagnosis]))


def finish(run: Run, stop: str | None, signals: list) -> dict:
    run.observers.close()
    distributed.shutdown()
    pos, hint = run.position, f"resume with: alexnet train --out {run.out} --resume"
    if stop == "signal":
        run.log(f"\ninterrupted at epoch {pos.epoch + 1}, step {pos.global_step}: saved {run.out / 'last.pt'}; {hint}")
        raise TrainingInterrupted(signals[0] if signals else signal.SIGTERM, hint)
    if stop == "max_steps":
        run.log(f"stopped after --max-steps {run.cfg.max_steps}: saved {run.out / 'last.pt'}; {hint}")
        return {"out": str(run.out), "stopped_at": pos.global_step, "best": pos.best, "history": pos.history}
    return {"out": str(run.out), "best": pos.best, "history": pos.history, "classes": run.parts.classes}
