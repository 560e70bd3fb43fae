"""The training loop, top to bottom: ``setup``, then ``train_one_epoch`` and ``end_of_epoch`` until done [5].

Around it: recipes (``recipes.py``), the run contract (``run.py``), the run folder (``run_folder.py``),
checkpoints (``checkpoint.py``), data (``data/``), --init (``finetune.py``). Here: precision, DDP, the SGD loop,
validation, the plateau rule, exact resume (position, an epoch's sums, RNG), signals, NaN, stall watch, --diagnose.
"""
from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from alexnet.train import distributed
from alexnet.train import finetune
from alexnet.checkpoint import FORMAT, atomic_save, load_checkpoint, load_state_dict_checked
from alexnet.data import open_dataset
from alexnet.data.loader import BatchLoader
from alexnet.train.diagnose import LayerStats, StallWatch, format_diagnosis, record_diagnosis, stall_fixes
from alexnet.errors import NonFiniteLoss, TrainingInterrupted, UsageError
from alexnet.inference.evaluate import accuracy_report, predict_probs
from alexnet.models import model_info
from alexnet.util.plots import plot_curves
from alexnet.util.progress import Progress
from alexnet.train.recipes import TrainConfig
from alexnet.train.parts import Preprocessing, build_model, model_spec, resolve_device, resolve_towers
from alexnet.train.run_folder import (append_metrics, check_training_set, epoch_line, eta_line, prepare_out, releasing,
                                stop_on_signals, write_config)
from alexnet.train.schedule import LRSchedule, param_groups

# Called before each step's forward with (rank, global step, input batch): the tests' fault injection.
StepHook = Callable[[int, int, torch.Tensor], None]
AfterStep = Callable[[int, torch.Tensor, torch.Tensor, int], None]   # after each step: steps done, loss, hits, n
STOP_CHECK_EVERY = 20   # DDP ranks agree on a stop every this many steps and at epoch ends; one process: each step


@dataclass
class Run:
    """Everything the loop carries between steps and epochs."""
    cfg: TrainConfig
    out: Path
    device: torch.device
    rank: int
    world_size: int
    towers: tuple | None
    classes: list[str]
    val_set: object
    loader: BatchLoader
    prep: Preprocessing
    spec: dict
    raw_model: nn.Module
    model: nn.Module                      # what the step calls: DDP and/or torch.compile around raw_model
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    use_bf16: bool
    epoch: int = 0
    step: int = 0                         # the next step within the epoch
    global_step: int = 0
    history: list = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"val_top1": -1.0, "epoch": -1})
    partial: dict | None = None           # an interrupted epoch's running sums
    writer: object = None
    watch: StallWatch | None = None
    stats: LayerStats | None = None
    last_diagnosis: dict | None = None
    eta_said: bool = False                # the whole run's estimated time is printed once, after the first epoch

    is_main = property(lambda self: self.rank == 0)

    def log(self, *parts) -> None:
        if self.is_main and not self.cfg.quiet:
            print(*parts, file=sys.stderr, flush=True)

    def state(self, position: dict) -> dict:
        """A checkpoint (alexnet.checkpoint's format) of this moment."""
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.towers and self.towers[1].type == "cuda" and self.towers[1] != self.device:
            rng["cuda_tower1"] = torch.cuda.get_rng_state(self.towers[1])
        return {"format": FORMAT, "model": self.spec, "classes": self.classes, "config": self.cfg.to_dict(),
                "data": self.prep.to_dict(), "state_dict": self.raw_model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "position": position, "history": self.history, "best": self.best, "rng": rng}


def train(cfg: TrainConfig, *, resume: bool = False, force: bool = False, on_step: StepHook | None = None,
          after_step: AfterStep | None = None) -> dict:
    """Train as ``cfg`` says; returns the final summary (best val, paths). ``resume``: continue the run in
    ``cfg.out`` from its ``last.pt`` (``cfg`` is then ``run_folder.resume_config``'s)."""
    with releasing(cfg.out):                # the run folder's lock, taken in setup
        run = setup(cfg, resume=resume, force=force)
        stop = None
        with stop_on_signals() as signals:
            while run.epoch < cfg.epochs and stop is None:
                stop = train_one_epoch(run, signals, on_step, after_step)
                if stop and run.step < len(run.loader):     # mid-epoch: the position and partial sums are saved
                    break
                end_of_epoch(run)
        return finish(run, stop, signals)


def setup(cfg: TrainConfig, *, resume: bool, force: bool) -> Run:
    model_info(cfg.model)                    # a bad --model is reported before anything else happens
    device = resolve_device(cfg.device)
    rank, world_size = distributed.init(device)
    out = prepare_out(Path(cfg.out), resume=resume, force=force, is_main=rank == 0)
    ckpt = load_checkpoint(out / "last.pt") if resume else None
    if cfg.batch_size % world_size:
        raise UsageError(f"--batch-size {cfg.batch_size} must be divisible by the {world_size} processes")
    towers = resolve_towers(cfg.towers, cfg.model_kwargs, ckpt and ckpt["config"], world_size, out)
    device = towers[0] if towers else device
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    common = dict(data_root=cfg.data_root, size=cfg.image_size, val_fraction=cfg.val_fraction, seed=cfg.seed,
                  workers=cfg.workers or None, progress=rank == 0 and not cfg.quiet)
    train_set, val_set = open_dataset(cfg.data, "train", **common), open_dataset(cfg.data, "val", **common)
    if cfg.train_subset:
        train_set.images, train_set.labels = train_set.images[:cfg.train_subset], train_set.labels[:cfg.train_subset]
    if cfg.val_subset:
        val_set.images, val_set.labels = val_set.images[:cfg.val_subset], val_set.labels[:cfg.val_subset]
    input_size = cfg.resize_to or cfg.crop_size or train_set.images.shape[1]
    prep = Preprocessing.from_dict(ckpt["data"]) if ckpt else Preprocessing.of(
        train_set, crop_size=input_size, resize_to=cfg.resize_to, normalization=cfg.normalization,
        pixel_scale=cfg.pixel_scale)
    loader = BatchLoader(train_set.images, train_set.labels, cfg.batch_size // world_size,
                         transform=prep.train_transform(padding=cfg.padding, flip=cfg.flip, pca_std=cfg.pca_std),
                         shuffle=True, drop_last=True, seed=cfg.seed, rank=rank, world_size=world_size, device=device,
                         threads=cfg.loader_threads)
    check_training_set(train_set, loader, cfg)
    classes, channels = train_set.classes, train_set.images.shape[-1]
    run = _build(cfg, out, device, rank, world_size, towers, classes, val_set, loader, prep,
                 ckpt["model"] if ckpt else model_spec(cfg.model, cfg.model_kwargs, len(classes), channels, input_size))
    if rank == 0:
        run.log(f"data: {train_set.source}: {len(train_set.labels)} train / {len(val_set.labels)} val images, "
                f"{len(classes)} classes, {channels} channel(s), input {input_size}px ({time.perf_counter() - t0:.1f}s)"
                + (f"; skipped {len(train_set.skipped)}" if train_set.skipped else ""))
        write_config(out, cfg, resumed_epoch=ckpt["position"]["epoch"] if ckpt else None)
        from torch.utils.tensorboard import SummaryWriter
        run.writer = SummaryWriter(str(out))
        run.watch = StallWatch(len(classes), fixes=stall_fixes(run.raw_model))   # loss stuck at ln K, blown up
        run.stats = LayerStats(run.raw_model) if cfg.diagnose else None  # --diagnose N
    finetune.start(run, ckpt)                 # --init's weights (not its optimizer state), unless resumed
    if ckpt:
        _restore(run, ckpt)
    return run


def _build(cfg, out, device, rank, world_size, towers, classes, val_set, loader, prep, spec) -> Run:
    """The model, its optimizer [5] and schedule, on the device(s)."""
    model = build_model(spec, towers=towers)
    finetune.freeze(model, cfg)               # --freeze: before the optimizer takes the parameters
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format) if towers else model.to(device, memory_format=memory_format)
    # fused: one kernel per parameter for decay + momentum + update (2-5x faster optimizer step on CPU)
    optimizer = torch.optim.SGD(param_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum,
                                nesterov=cfg.nesterov and cfg.momentum > 0, fused=True)
    wrapped = model
    if world_size > 1:
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    wrapped = torch.compile(wrapped) if cfg.compile else wrapped
    use_bf16 = device.type == "cuda" and (cfg.amp == "bf16" or (cfg.amp == "auto" and not cfg.recipe.startswith("paper")))
    return Run(cfg, out, device, rank, world_size, towers, classes, val_set, loader, prep, spec, model, wrapped,
               optimizer, LRSchedule(cfg, len(loader)), use_bf16)


def _restore(run: Run, ckpt: dict) -> None:
    """Continue exactly where ``last.pt`` stopped: weights, momentum, schedule, position, sums and RNG."""
    load_state_dict_checked(run.raw_model, ckpt["state_dict"], str(run.out / "last.pt"))
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.schedule.load_state_dict(ckpt["schedule"])
    run.epoch, run.step, run.global_step = (ckpt["position"][k] for k in ("epoch", "step", "global_step"))
    run.partial = ckpt["position"].get("partial")
    run.history, run.best = ckpt["history"], ckpt["best"]
    torch.set_rng_state(ckpt["rng"]["torch"])
    if "cuda" in ckpt["rng"] and run.device.type == "cuda":
        torch.cuda.set_rng_state(ckpt["rng"]["cuda"], run.device)
    if "cuda_tower1" in ckpt["rng"] and run.towers and run.towers[1].type == "cuda":
        torch.cuda.set_rng_state(ckpt["rng"]["cuda_tower1"], run.towers[1])
    run.log(f"resumed {run.out / 'last.pt'} at epoch {run.epoch + 1} step {run.step}" if run.epoch < run.cfg.epochs
            else f"{run.out / 'last.pt'} is a complete run ({run.epoch}/{run.cfg.epochs} epochs); nothing left to train")


def train_one_epoch(run: Run, signals: list, on_step: StepHook | None, after_step: AfterStep | None) -> str | None:
    """SGD steps from ``run.step`` to the epoch's end or a stop; returns "signal", "max_steps" or None."""
    cfg, device = run.cfg, run.device
    run.model.train()
    bar = Progress(len(run.loader) - run.step, desc=f"epoch {run.epoch + 1}/{cfg.epochs}",
                   enabled=run.is_main and not cfg.quiet)
    sums = run.partial or {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
    loss_sum = torch.tensor(sums["loss_sum"], device=device)
    correct = torch.tensor(sums["correct"], device=device, dtype=torch.int64)
    seen, started = sums["seen"], time.perf_counter() - sums["seconds"]
    stop = None
    if run.stats and run.global_step % cfg.diagnose == 0:
        run.stats.arm()                      # this step's forward, gradients and update are recorded
    for step, (x, y) in enumerate(run.loader.iterate(run.epoch, run.step), start=run.step):
        if on_step:
            on_step(run.rank, run.global_step, x)
        loss, logits = _sgd_step(run, x, y, step)
        _watch(run, loss)
        hits = (logits.detach().argmax(1) == y).sum()
        loss_sum, correct, seen = loss_sum + loss.detach() * len(y), correct + hits, seen + len(y)
        if after_step:
            after_step(run.global_step, loss.detach(), hits, len(y))
        show = bar.tty and step % 10 == 0
        bar.update(1, n=len(y) * run.world_size,
                   **({"loss": loss_sum.item() / seen, "acc": correct.item() / seen} if show else {}))
        agree = not distributed.active() or run.global_step % STOP_CHECK_EVERY == 0 or step + 1 == len(run.loader)
        if agree and distributed.any_flag(bool(signals), device):
            stop = "signal"
        elif cfg.max_steps and run.global_step >= cfg.max_steps:
            stop = "max_steps"
        if stop:
            break
    bar.close()
    if not torch.isfinite(loss_sum):
        raise NonFiniteLoss(f"loss became non-finite in epoch {run.epoch + 1} before step {run.global_step}")
    run.step, run.partial = step + 1, {"loss_sum": loss_sum.item(), "correct": correct.item(), "seen": seen,
                                       "seconds": time.perf_counter() - started}
    if stop and run.step < len(run.loader) and run.is_main:
        atomic_save(run.state({"epoch": run.epoch, "step": run.step, "global_step": run.global_step,
                               "partial": run.partial}), run.out / "last.pt")
    return stop


def _sgd_step(run: Run, x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step [5]: the lr of this step, forward, loss, backward, update (and --diagnose)."""
    lr = run.schedule.lr_at(run.global_step)
    for group in run.optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.use_bf16):
        logits = run.model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=run.cfg.label_smoothing)
    if run.device.type == "cpu" and not torch.isfinite(loss):   # a free check on CPU
        raise NonFiniteLoss(f"loss is {loss.item()} at epoch {run.epoch + 1} step {step}")
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if run.cfg.clip_grad_norm:    # after DDP's all-reduce: every process scales by the same norm
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.clip_grad_norm)
    if run.stats:
        run.stats.before_step()
    run.optimizer.step()
    if run.stats and (row := run.stats.after_step(run.global_step)):
        run.last_diagnosis = row = dict(row, loss=loss.item(), lr=lr)
        record_diagnosis(row, run.out / "diagnose.jsonl", run.writer, run.stats)
    run.global_step += 1
    if run.stats and run.global_step % run.cfg.diagnose == 0:
        run.stats.arm()                      # the next step's forward, gradients and update are recorded
    return loss, logits


def _watch(run: Run, loss: torch.Tensor) -> None:
    """Every ``window`` steps the stall watch reads the window's mean loss; it speaks at most once a kind."""
    if run.watch and (message := run.watch.observe(loss.detach(), run.global_step)):
        print(f"alexnet train: warning: {message}", file=sys.stderr, flush=True)


def end_of_epoch(run: Run) -> None:
    """Validate, apply the plateau rule [5], log, and save last.pt (and best.pt when val top-1 improved)."""
    sums, device = run.partial, run.device
    started = time.perf_counter() - sums["seconds"]
    totals = distributed.sum_tensor(torch.tensor([sums["loss_sum"], float(sums["correct"]), float(sums["seen"])],
                                                 device=device))
    probs = predict_probs([run.raw_model], run.val_set.images, run.prep.eval_transform(),
                          batch_size=run.cfg.eval_batch_size, device=device, autocast=run.use_bf16)
    val = accuracy_report(probs, run.val_set.labels, run.classes)
    dropped = run.schedule.end_epoch(val["top1_error"])
    row = {"epoch": run.epoch + 1, "lr": run.optimizer.param_groups[0]["lr"],
           "train_loss": (totals[0] / totals[2]).item(), "train_top1": (totals[1] / totals[2]).item(),
           "val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"],
           "images_per_s": totals[2].item() / sums["seconds"], "seconds": time.perf_counter() - started}
    run.history.append(row)
    run.epoch, run.step, run.partial = run.epoch + 1, 0, None
    if not run.is_main:
        return
    improved = val["top1"] > run.best["val_top1"]
    if improved:
        run.best = {"val_top1": val["top1"], "val_top5": val["top5"], "epoch": run.epoch}
    state = run.state({"epoch": run.epoch, "step": 0, "global_step": run.global_step})
    atomic_save(state, run.out / "last.pt")
    if improved:
        atomic_save(dict(state, optimizer={}, rng={}), run.out / "best.pt")
    append_metrics(run.out, row, run.writer)     # after last.pt: metrics.jsonl never runs ahead of it
    plot_curves(run.history, run.out / "curves.png")
    run.log(epoch_line(row, run.cfg.epochs, run.schedule.drops if dropped else None))
    if not run.eta_said and run.epoch < run.cfg.epochs:    # once, after the first epoch this process trains
        run.eta_said = run.log(eta_line(row, run.epoch, run.cfg.epochs)) or True
    if run.last_diagnosis:
        run.log(format_diagnosis([run.last_diagnosis]))


def finish(run: Run, stop: str | None, signals: list) -> dict:
    if run.writer:
        run.writer.close()
    if run.stats:
        run.stats.remove()
    distributed.shutdown()
    hint = f"resume with: alexnet train --out {run.out} --resume"
    if stop == "signal":
        run.log(f"\ninterrupted at epoch {run.epoch + 1}, step {run.global_step}: saved {run.out / 'last.pt'}; {hint}")
        raise TrainingInterrupted(signals[0] if signals else signal.SIGTERM, hint)
    if stop == "max_steps":
        run.log(f"stopped after --max-steps {run.cfg.max_steps}: saved {run.out / 'last.pt'}; {hint}")
        return {"out": str(run.out), "stopped_at": run.global_step, "best": run.best, "history": run.history}
    return {"out": str(run.out), "best": run.best, "history": run.history, "classes": run.classes}
