"""The training loop: one function, ``train(cfg)``, readable top to bottom.

Recipes live in ``recipes.py``, data in ``data/``, checkpoints in ``checkpoint.py``. What is here:
device and precision, DDP, the SGD loop [5], per-epoch validation and the plateau rule, the run
folder (config.json, metrics.jsonl, TensorBoard, curves.png, last.pt, best.pt), exact resume,
signals and non-finite losses.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alexnet import distributed
from alexnet.checkpoint import FORMAT, atomic_save, load_checkpoint, load_state_dict_checked
from alexnet.data import DatasetStats, ImageSet, compute_stats, open_dataset
from alexnet.data.transforms import EvalTransform, TrainTransform
from alexnet.data.loader import BatchLoader
from alexnet.diagnose import LayerStats, StallWatch, format_report, record_diagnosis
from alexnet.errors import UsageError
from alexnet.evaluate import accuracy_report, predict_probs
from alexnet.plots import plot_curves
from alexnet.progress import Progress
from alexnet.recipes import TrainConfig, resolve_config
from alexnet.registry import create_model, model_info
from alexnet.schedule import LRSchedule

RUN_FILES = ("config.json", "metrics.jsonl", "diagnose.jsonl", "last.pt", "best.pt", "curves.png")


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM arrived; ``last.pt`` was written. ``exit_code`` is 130 or 143."""

    def __init__(self, signum: int, resume_hint: str) -> None:
        super().__init__(resume_hint)
        self.exit_code = 128 + signum


class NonFiniteLoss(Exception):
    """The loss became NaN/inf; the last good checkpoint was left untouched."""


def _inject_fault(spec: str, rank: int, step: int, x: torch.Tensor) -> None:
    """Test hook (env ALEXNET_FAULT_INJECT): "raise,rank=R,step=S" raises on rank R at global step S;
    "nan,step=S" turns the batch into NaNs there, as a corrupt input or a diverging run would."""
    fields = dict(item.split("=") for item in spec.split(",")[1:])
    if int(fields.get("step", -1)) != step or int(fields.get("rank", rank)) != rank:
        return
    if spec.startswith("raise"):
        raise RuntimeError(f"injected fault on rank {rank} at step {step}")
    if spec.startswith("nan"):
        x.fill_(float("nan"))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    return device


def model_spec(cfg: TrainConfig, num_classes: int, in_channels: int, input_size: int) -> dict:
    return {"name": cfg.model, "num_classes": num_classes, "in_channels": in_channels,
            "input_size": input_size, "kwargs": dict(cfg.model_kwargs)}


def data_spec(cfg: TrainConfig, train_set: ImageSet, input_size: int) -> dict:
    """What evaluation and prediction need to preprocess exactly like training."""
    stats = train_set.stats or compute_stats(np.asarray(train_set.images))
    _, height, width, channels = train_set.images.shape
    return {"stats": stats.to_dict(), "image_size": [height, width], "channels": channels,
            "crop_size": input_size, "resize_to": cfg.resize_to or None, "normalization": cfg.normalization,
            "pixel_scale": cfg.pixel_scale,
            "source": train_set.source}


def eval_transform(data: dict, ten_crop: bool = False) -> EvalTransform:
    return EvalTransform(crop_size=data["crop_size"], normalization=data["normalization"],
                         stats=DatasetStats.from_dict(data["stats"]), resize_to=data["resize_to"], ten_crop=ten_crop,
                         pixel_scale=data.get("pixel_scale", 1.0))


def _param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Weights, and biases/norm parameters (1-d) when they decay or learn differently; ``lr_mult`` scales lr."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.decay_norm_and_bias and cfg.bias_lr_mult == 1.0:      # [5] the paper's text: one rate, all decayed
        return [{"params": params, "weight_decay": cfg.weight_decay, "lr_mult": 1.0}]
    weights, biases = [p for p in params if p.dim() > 1], [p for p in params if p.dim() <= 1]
    return [{"params": weights, "weight_decay": cfg.weight_decay, "lr_mult": 1.0},
            {"params": biases, "weight_decay": cfg.weight_decay if cfg.decay_norm_and_bias else 0.0,
             "lr_mult": cfg.bias_lr_mult}]


# Under DDP the ranks agree on a stop signal (an all-reduce and a host sync) every this many steps and at
# each epoch's end, not every step; a single process checks its own flag every step, for free.
STOP_CHECK_EVERY = 20


@contextmanager
def _stop_on_signals():
    """Turn SIGINT/SIGTERM into a flag the loop checks after each step."""
    received: list[int] = []
    handler = lambda signum, _frame: received.append(signum)  # noqa: E731
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _prepare_out(cfg: TrainConfig, resume: bool, force: bool, is_main: bool) -> Path:
    out = Path(cfg.out)
    holds_run = any((out / f).exists() for f in ("config.json", "last.pt"))
    if resume and not (out / "last.pt").exists():
        raise UsageError(f"--resume: {out}/last.pt does not exist; nothing to resume (drop --resume to start)")
    if holds_run and not (resume or force):
        raise UsageError(f"--out {out} already holds a run; pass --resume to continue it or --force to start over")
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        if force and not resume:
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
            for event in out.glob("events.out.tfevents.*"):
                event.unlink()
    return out


def train(cfg: TrainConfig | None = None, *, resume: bool = False, force: bool = False,
          overrides: dict | None = None) -> dict:
    """Train as ``cfg`` says; returns the final summary (best val, paths, timings).

    With ``resume``, the config stored in ``<out>/last.pt`` is used, updated by ``overrides``.
    """
    cfg = cfg or resolve_config()
    model_info(cfg.model)                    # a bad --model is reported before anything else happens
    device = resolve_device(cfg.device)
    rank, world_size = distributed.init(device)
    is_main = rank == 0
    out = _prepare_out(cfg, resume, force, is_main)
    ckpt = None
    if resume:
        ckpt = load_checkpoint(out / "last.pt")
        saved = dict(ckpt["config"])
        saved.update(overrides or {}, out=str(out))
        cfg = resolve_config(saved.pop("recipe"), **saved)
    if cfg.batch_size % world_size:
        raise UsageError(f"--batch-size {cfg.batch_size} must be divisible by the {world_size} processes")
    towers = None
    if "towers" in cfg.model_kwargs:
        raise UsageError("put the towers' devices in --towers DEV0,DEV1, not in --model-kwargs")
    if cfg.towers:                           # [3.2] two towers on two devices: inputs, loss and fc8 on the first
        from alexnet.models.towers import tower_devices
        towers = tower_devices(cfg.towers)
        if world_size > 1:
            raise UsageError("--towers runs one process on two devices; it does not combine with torchrun")
        device = towers[0]
    if ckpt and bool(ckpt["config"].get("towers")) != bool(towers):   # momentum buffers are per parameter
        raise UsageError(f"{out}/last.pt was trained {'with' if towers is None else 'without'} --towers; "
                         "resume it the same way (checkpoints, not optimizer states, move between the two)")
    torch.manual_seed(cfg.seed)
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if (is_main and not cfg.quiet) else (lambda *a: None)

    # ---- data [4] -------------------------------------------------------------------------
    t0 = time.perf_counter()
    common = dict(data_root=cfg.data_root, size=cfg.image_size, val_fraction=cfg.val_fraction, seed=cfg.seed,
                  workers=cfg.workers or None, progress=is_main and not cfg.quiet)
    train_set, val_set = open_dataset(cfg.data, "train", **common), open_dataset(cfg.data, "val", **common)
    if cfg.train_subset:
        train_set.images, train_set.labels = train_set.images[:cfg.train_subset], train_set.labels[:cfg.train_subset]
    if cfg.val_subset:
        val_set.images, val_set.labels = val_set.images[:cfg.val_subset], val_set.labels[:cfg.val_subset]
    classes, channels = train_set.classes, train_set.images.shape[-1]
    input_size = cfg.resize_to or cfg.crop_size or train_set.images.shape[1]
    data = ckpt["data"] if ckpt else data_spec(cfg, train_set, input_size)
    stats = DatasetStats.from_dict(data["stats"])
    train_transform = TrainTransform(crop_size=input_size, padding=cfg.padding, flip=cfg.flip, pca_std=cfg.pca_std,
                                     normalization=cfg.normalization, stats=stats, resize_to=cfg.resize_to or None,
                                     pixel_scale=cfg.pixel_scale)
    loader = BatchLoader(train_set.images, train_set.labels, cfg.batch_size // world_size, transform=train_transform,
                         shuffle=True, drop_last=True, seed=cfg.seed, rank=rank, world_size=world_size, device=device,
                         threads=cfg.loader_threads)
    if len(loader) == 0:
        raise UsageError(f"{len(train_set.labels)} training images are fewer than one batch of {cfg.batch_size}; "
                         "lower --batch-size")
    log(f"data: {train_set.source}: {len(train_set.labels)} train / {len(val_set.labels)} val images, "
        f"{len(classes)} classes, {channels} channel(s), input {input_size}px "
        f"({time.perf_counter() - t0:.1f}s){'; skipped ' + str(len(train_set.skipped)) if train_set.skipped else ''}")

    # ---- model and optimiser [5] ------------------------------------------------------------
    spec = ckpt["model"] if ckpt else model_spec(cfg, len(classes), channels, input_size)
    model = create_model(spec["name"], num_classes=spec["num_classes"], in_channels=spec["in_channels"],
                         input_size=spec["input_size"], towers=towers, **spec["kwargs"])
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format) if towers else model.to(device, memory_format=memory_format)
    # fused: one kernel per parameter for decay + momentum + update (2-5x faster optimizer step on CPU)
    optimizer = torch.optim.SGD(_param_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum,
                                nesterov=cfg.nesterov and cfg.momentum > 0, fused=True)
    schedule = LRSchedule(cfg, len(loader))
    epoch, start_step, global_step, history, best = 0, 0, 0, [], {"val_top1": -1.0, "epoch": -1}
    if ckpt:
        load_state_dict_checked(model, ckpt["state_dict"], str(out / "last.pt"))
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["schedule"])
        epoch, start_step, global_step = (ckpt["position"][k] for k in ("epoch", "step", "global_step"))
        history, best = ckpt["history"], ckpt["best"]
        torch.set_rng_state(ckpt["rng"]["torch"])
        if "cuda" in ckpt["rng"] and device.type == "cuda":
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], device)
        if "cuda_tower1" in ckpt["rng"] and towers and towers[1].type == "cuda":
            torch.cuda.set_rng_state(ckpt["rng"]["cuda_tower1"], towers[1])
        log(f"resumed {out / 'last.pt'} at epoch {epoch + 1} step {start_step}" if epoch < cfg.epochs
            else f"{out / 'last.pt'} is a complete run ({epoch}/{cfg.epochs} epochs); nothing left to train")
    raw_model = model
    if world_size > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    step_fn = torch.compile(model) if cfg.compile else model
    use_bf16 = device.type == "cuda" and (cfg.amp == "bf16" or (cfg.amp == "auto" and not cfg.recipe.startswith("paper")))
    eval_tf = eval_transform(data)

    def checkpoint(position: dict) -> dict:
        return {"format": FORMAT, "model": spec, "classes": classes, "config": cfg.to_dict(), "data": data,
                "state_dict": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(), "position": position, "history": history, "best": best,
                "rng": {"torch": torch.get_rng_state(),
                        **({"cuda": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
                        **({"cuda_tower1": torch.cuda.get_rng_state(towers[1])}
                           if towers and towers[1].type == "cuda" and towers[1] != device else {})}}

    if is_main:
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out))
    resume_hint = f"resume with: alexnet train --out {out} --resume"
    fault = os.environ.get("ALEXNET_FAULT_INJECT", "")  # tests only, see _inject_fault
    watch = StallWatch(len(classes)) if is_main else None            # loss stuck at ln K, or blown up
    stats = LayerStats(raw_model) if cfg.diagnose and is_main else None   # --diagnose N
    window_loss, last_diagnosis = torch.zeros((), device=device), None

    # ---- the loop -----------------------------------------------------------------------------
    stop_reason = None                      # "signal" or "max_steps"
    partial = ckpt["position"].get("partial") if ckpt else None
    lr = schedule.lr_at(global_step)
    if stats and global_step % cfg.diagnose == 0:
        stats.arm()                              # step 0: the statistics at initialisation
    with _stop_on_signals() as signals:
        while epoch < cfg.epochs and stop_reason is None:
            model.train()
            bar = Progress(len(loader) - start_step, desc=f"epoch {epoch + 1}/{cfg.epochs}", enabled=is_main and not cfg.quiet)
            partial = partial or {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
            loss_sum = torch.tensor(partial["loss_sum"], device=device)
            correct = torch.tensor(partial["correct"], device=device, dtype=torch.int64)
            seen, epoch_start = partial["seen"], time.perf_counter() - partial["seconds"]
            partial = None
            for step, (x, y) in enumerate(loader.iterate(epoch, start_step), start=start_step):
                if fault:
                    _inject_fault(fault, rank, global_step, x)
                lr = schedule.lr_at(global_step)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_mult", 1.0)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    logits = step_fn(x)
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
                if device.type == "cpu" and not torch.isfinite(loss):   # a free check on CPU
                    raise NonFiniteLoss(f"loss is {loss.item()} at epoch {epoch + 1} step {step}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if stats:
                    stats.before_step()
                optimizer.step()
                if stats and (row := stats.after_step(global_step)):
                    last_diagnosis = row = dict(row, loss=loss.item(), lr=lr)
                    record_diagnosis(row, out / "diagnose.jsonl", writer, stats)
                global_step += 1
                window_loss += loss.detach()
                if watch and global_step % watch.window == 0:
                    message = watch.check(window_loss.item() / watch.window, global_step)
                    window_loss.zero_()
                    if message:
                        print(f"alexnet train: warning: {message}", file=sys.stderr, flush=True)
                if stats and global_step % cfg.diagnose == 0:
                    stats.arm()          # the next step's forward, gradients and update are recorded
                loss_sum += loss.detach() * len(y)
                correct += (logits.detach().argmax(1) == y).sum()
                seen += len(y)
                show = bar.tty and step % 10 == 0
                bar.update(1, n=len(y) * world_size,
                           **({"loss": loss_sum.item() / seen, "acc": correct.item() / seen} if show else {}))
                agree = not distributed.active() or global_step % STOP_CHECK_EVERY == 0 or step + 1 == len(loader)
                if agree and distributed.any_flag(bool(signals), device):
                    stop_reason = "signal"
                elif cfg.max_steps and global_step >= cfg.max_steps:
                    stop_reason = "max_steps"
                if stop_reason:
                    break
            bar.close()
            if not torch.isfinite(loss_sum):
                raise NonFiniteLoss(f"loss became non-finite in epoch {epoch + 1} before step {global_step}")
            if stop_reason and step + 1 < len(loader):   # mid-epoch: save the position and the partial sums
                if is_main:
                    atomic_save(checkpoint({"epoch": epoch, "step": step + 1, "global_step": global_step, "partial": {
                        "loss_sum": loss_sum.item(), "correct": correct.item(), "seen": seen,
                        "seconds": time.perf_counter() - epoch_start}}), out / "last.pt")
                break
            totals = distributed.sum_tensor(torch.stack([loss_sum.float(), correct.float(),
                                                         torch.tensor(float(seen), device=device)]))
            train_seconds = time.perf_counter() - epoch_start
            probs = predict_probs([raw_model], val_set.images, eval_tf, batch_size=cfg.eval_batch_size, device=device,
                                  autocast=use_bf16)
            val = accuracy_report(probs, val_set.labels, classes)
            dropped = schedule.end_epoch(val["top1_error"])
            row = {"epoch": epoch + 1, "lr": lr, "train_loss": (totals[0] / totals[2]).item(),
                   "train_top1": (totals[1] / totals[2]).item(), "val_loss": val["loss"], "val_top1": val["top1"],
                   "val_top5": val["top5"], "images_per_s": totals[2].item() / train_seconds,
                   "seconds": time.perf_counter() - epoch_start}
            history.append(row)
            epoch, start_step = epoch + 1, 0
            if is_main:
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
                for key, value in row.items():
                    if key != "epoch":
                        writer.add_scalar(key, value, epoch)
                writer.flush()
                improved = val["top1"] > best["val_top1"]
                if improved:
                    best = {"val_top1": val["top1"], "val_top5": val["top5"], "epoch": epoch}
                state = checkpoint({"epoch": epoch, "step": 0, "global_step": global_step})
                atomic_save(state, out / "last.pt")
                if improved:
                    atomic_save(dict(state, optimizer={}, rng={}), out / "best.pt")
                plot_curves(history, out / "curves.png")
                log(f"epoch {epoch}/{cfg.epochs}: train loss {row['train_loss']:.4f} top-1 {row['train_top1']:.4f} | "
                    f"val loss {row['val_loss']:.4f} top-1 {row['val_top1']:.4f} top-5 {row['val_top5']:.4f} | "
                    f"{row['images_per_s']:.0f} img/s, {row['seconds']:.1f}s"
                    + (f" | lr divided by 10 (plateau, drop {schedule.drops})" if dropped else ""))
                if last_diagnosis:
                    log(format_report([last_diagnosis]))
    if is_main:
        writer.close()
    if stats:
        stats.remove()
    if stop_reason == "signal":
        log(f"\ninterrupted at epoch {epoch + 1}, step {global_step}: saved {out / 'last.pt'}; {resume_hint}")
        raise TrainingInterrupted(signals[0] if signals else signal.SIGTERM, resume_hint)
    if stop_reason == "max_steps":
        log(f"stopped after --max-steps {cfg.max_steps}: saved {out / 'last.pt'}; {resume_hint}")
        return {"out": str(out), "stopped_at": global_step, "best": best, "history": history}
    return {"out": str(out), "best": best, "history": history, "classes": classes}
