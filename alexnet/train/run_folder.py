"""A run folder on disk: claiming it, the config a resume continues with, and what each epoch leaves there.

``<out>/`` holds ``config.json`` (the resolved config), ``metrics.jsonl`` (one line per epoch),
``diagnose.jsonl`` (``--diagnose``), TensorBoard events, ``curves.png``, ``last.pt`` (everything a resume
needs) and ``best.pt`` (the best validation top-1, without optimizer state).
"""
from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import math
import os
import signal
import socket
from contextlib import contextmanager
from pathlib import Path

from alexnet.checkpoint import Checkpoint
from alexnet.errors import UsageError
from alexnet.train.recipes import NEUTRAL, RECIPES, TrainConfig, absolute_data, absolute_path, resolve_config

RUN_FILES = ("config.json", "metrics.jsonl", "diagnose.jsonl", "last.pt", "best.pt", "curves.png")
RETIRED_CONFIG_KEYS = ("optimizer",)     # stored by earlier versions, no longer read
# What --resume may change: how far to train and how to run it. Everything else (model, data, batch, crops,
# normalization, seed, optimizer and augmentation settings, ...) is the run's and is refused with exit 2.
# max_steps is a stop for one invocation: a resume does not inherit it (0 = no limit) unless given again.
# A fine-tuned run (--init) resumes from its last.pt: --init, --freeze, --reset-head, --head-lr-mult are the run's.
RESUME_MAY_CHANGE = ("epochs", "max_steps", "quiet", "device", "towers", "amp", "compile", "channels_last",
                     "loader_threads", "eval_batch_size", "diagnose", "workers", "ten_crop", "data_root")
LOCK_FILE = ".lock"
_held: dict[Path, object] = {}           # run folders this process holds the lock of -> the open lock file


def default_out(recipe: str | None) -> str:
    return RECIPES[recipe or "quick"]["out"]


def resume_config(out: str | Path, overrides: dict | None = None) -> TrainConfig:
    """The config of the run in ``out`` (from its ``last.pt``), with ``overrides`` applied on top."""
    path = Path(out) / "last.pt"
    check_unlocked(out)                  # a run in progress is named, not taken for "nothing to resume"
    if not path.exists():
        raise UsageError(f"--resume: {path} does not exist; nothing to resume (drop --resume to start)")
    saved = dict(Checkpoint.load(path).config)
    for key in RETIRED_CONFIG_KEYS:
        saved.pop(key, None)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None and k != "out"}
    changed = [k for k, v in overrides.items() if k not in RESUME_MAY_CHANGE and not _same(k, v, saved.get(k))]
    if changed:
        flags = ", ".join("--" + k.replace("_", "-") for k in changed)
        raise UsageError(f"--resume continues the run in {out} as it was configured; it cannot change {flags} "
                         f"(it may change only {', '.join('--' + k.replace('_', '-') for k in RESUME_MAY_CHANGE)}). "
                         "Start a new run with another --out, or --force to start over here")
    for name, value in NEUTRAL.items():          # a run from before a field existed ran without it
        saved.setdefault(name, value)
    saved.update({"max_steps": 0, **overrides}, out=str(out))
    cfg = resolve_config(saved.pop("recipe"), **saved)
    return dataclasses.replace(cfg, model_kwargs=dict(saved.get("model_kwargs", cfg.model_kwargs)))  # as it ran


def _same(key: str, given, saved) -> bool:
    if key == "model_kwargs" and isinstance(given, dict) and isinstance(saved, dict):
        return {**saved, **given} == saved
    if key == "data":
        return absolute_data(given) == absolute_data(saved)
    if key == "init":
        return (absolute_path(given) if given else "") == (saved or "")
    return given == saved


def _flock(out: Path):
    """``out/.lock`` opened and flocked (the kernel lets go when this process dies, so a killed run blocks
    nothing); a UsageError naming the holder when another process has it."""
    f = open(out / LOCK_FILE, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        f.seek(0)
        owner = f.read().strip() or "another process"
        f.close()
        raise UsageError(f"--out {out} is in use by another alexnet train ({owner}); wait for it to finish "
                         "or stop it, or choose another --out") from None
    return f


def _lock(out: Path) -> None:
    """Hold ``out/.lock`` until ``release``."""
    key = out.resolve()
    if key in _held:
        return
    f = _flock(out)
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on host {socket.gethostname()}\n")
    f.flush()
    _held[key] = f


def check_unlocked(out: str | Path) -> None:
    """A UsageError naming the holder when another process holds ``out``'s lock (nothing is taken)."""
    out = Path(out)
    if (out / LOCK_FILE).is_file() and out.resolve() not in _held:
        _flock(out).close()             # closing lets go of the lock just taken


def release(out: str | Path) -> None:
    """Let go of ``out``'s lock if this process holds it."""
    f = _held.pop(Path(out).resolve(), None)
    if f is not None:
        f.close()


@contextmanager
def releasing(out: str | Path):
    try:
        yield
    finally:
        release(out)


def prepare_out(out: Path, *, resume: bool, force: bool, is_main: bool) -> Path:
    """Refuse to mix two runs in one folder (or two processes in one run): the lock first, then the folder's run.

    A folder holds a run once it has a ``last.pt``: one whose run died before its first checkpoint (only
    ``config.json``, events) is started over without --force. Nothing is deleted here: ``clear_old_run`` does
    it once the new run's data, model and --init have been checked (a bad flag costs the old run nothing)."""
    if resume and force:
        raise UsageError("--resume continues the run in --out and --force starts it over; give one of them")
    if is_main and (out.is_dir() or not resume):
        out.mkdir(parents=True, exist_ok=True)
        _lock(out)
    if resume and not (out / "last.pt").exists():
        raise UsageError(f"--resume: {out}/last.pt does not exist; nothing to resume (drop --resume to start)")
    if (out / "last.pt").exists() and not (resume or force):
        raise UsageError(f"--out {out} already holds a run; pass --resume to continue it or --force to start over")
    return out


def clear_old_run(out: Path) -> None:
    """The files of the run a new one replaces (--force, or a run that died before its first checkpoint)."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for event in out.glob("events.out.tfevents.*"):
        event.unlink()


def check_training_set(train_set, loader, cfg: TrainConfig) -> None:
    if len(train_set.classes) < 2:
        raise UsageError(f"--data {cfg.data} has only one class ({', '.join(map(str, train_set.classes))}); "
                         "a classifier needs at least two (is the folder one level too deep?)")
    if len(loader) == 0:
        raise UsageError(f"{len(train_set.labels)} training images are fewer than one batch of {cfg.batch_size}; "
                         "lower --batch-size")


def write_config(out: Path, cfg: TrainConfig, resumed_epoch: int | None = None) -> None:
    """config.json; on a resume from epoch ``resumed_epoch``, metrics.jsonl loses any later line (a run of an
    earlier version could write an epoch's line and die before its last.pt: that epoch is trained again)."""
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    metrics = out / "metrics.jsonl"
    if resumed_epoch is not None and metrics.exists():
        lines = metrics.read_text().splitlines(keepends=True)
        kept = [line for line in lines if line.strip() and json.loads(line).get("epoch", 0) <= resumed_epoch]
        if kept != lines:
            metrics.write_text("".join(kept))


def append_metrics(out: Path, row: dict, writer) -> None:
    """One epoch's row to metrics.jsonl and to TensorBoard (x axis: epochs done)."""
    with open(out / "metrics.jsonl", "a") as f:         # JSON has no NaN or inf: null stands for them
        f.write(json.dumps({k: v if not isinstance(v, float) or math.isfinite(v) else None
                            for k, v in row.items()}) + "\n")
    for key, value in row.items():
        if key != "epoch":
            writer.add_scalar(key, value, row["epoch"])
    writer.flush()


def epoch_line(row: dict, epochs: int, dropped_to: int | None) -> str:
    return (f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f} top-1 {row['train_top1']:.4f} | "
            f"val loss {row['val_loss']:.4f} top-1 {row['val_top1']:.4f} top-5 {row['val_top5']:.4f} | "
            f"{row['images_per_s']:.0f} img/s, {row['seconds']:.1f}s"
            + (f" | lr divided by 10 (plateau, drop {dropped_to})" if dropped_to else ""))


def eta_line(row: dict, done: int, epochs: int) -> str:
    """After the first epoch a process trains: the whole run's estimated time, from that epoch's (train + val)."""
    each = row["seconds"]
    return (f"estimated time: {duration(each * epochs)} for the whole run ({epochs} epochs at {duration(each)} each, "
            f"as epoch {row['epoch']} took), about {duration(each * (epochs - done))} from now")


def duration(seconds: float) -> str:
    """3h 05m, 12m 30s or 42s."""
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds}s"


@contextmanager
def stop_on_signals():
    """Turn SIGINT/SIGTERM into a list the loop checks after each step (the signals received)."""
    received: list[int] = []
    handler = lambda signum, _frame: received.append(signum)  # noqa: E731
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def time_to_accuracy(history: list[dict], targets: tuple[float, ...] = (0.90, 0.93)) -> list[tuple[float, dict | None]]:
    """For each target val top-1, the first epoch that reached it and the run's time until then (each epoch's
    training and validation, summed; a resumed run counts only the epochs' own time): [(target, {"epoch",
    "seconds"} or None)]."""
    firsts: dict[float, dict] = {}
    elapsed = 0.0
    for row in history:
        elapsed += row["seconds"]
        for target in targets:
            if target not in firsts and row["val_top1"] is not None and row["val_top1"] >= target:
                firsts[target] = {"epoch": row["epoch"], "seconds": elapsed}
    return [(target, firsts.get(target)) for target in targets]


def time_to_accuracy_line(history: list[dict], targets: tuple[float, ...] = (0.90, 0.93)) -> str:
    """``val top-1 0.90 after epoch 3 (1m 40s), 0.93 not reached``."""
    parts = [f"{target:.2f} after epoch {hit['epoch']} ({duration(hit['seconds'])})" if hit else
             f"{target:.2f} not reached" for target, hit in time_to_accuracy(history, targets)]
    return "time to val top-1 " + ", ".join(parts)
