"""A run folder on disk: claiming it, the config a resume continues with, and what each epoch leaves there.

``<out>/`` holds ``config.json`` (the resolved config), ``metrics.jsonl`` (one line per epoch),
``diagnose.jsonl`` (``--diagnose``), TensorBoard events, ``curves.png``, ``last.pt`` (everything a resume
needs) and ``best.pt`` (the best validation top-1, without optimizer state).
"""
from __future__ import annotations

import json
import signal
from contextlib import contextmanager
from pathlib import Path

from alexnet.checkpoint import load_checkpoint
from alexnet.errors import UsageError
from alexnet.recipes import RECIPES, TrainConfig, resolve_config

RUN_FILES = ("config.json", "metrics.jsonl", "diagnose.jsonl", "last.pt", "best.pt", "curves.png")
RETIRED_CONFIG_KEYS = ("optimizer",)     # stored by earlier versions, no longer read


def default_out(recipe: str | None) -> str:
    return RECIPES[recipe or "quick"]["out"]


def resume_config(out: str | Path, overrides: dict | None = None) -> TrainConfig:
    """The config of the run in ``out`` (from its ``last.pt``), with ``overrides`` applied on top."""
    path = Path(out) / "last.pt"
    if not path.exists():
        raise UsageError(f"--resume: {path} does not exist; nothing to resume (drop --resume to start)")
    saved = dict(load_checkpoint(path)["config"])
    for key in RETIRED_CONFIG_KEYS:
        saved.pop(key, None)
    saved.update(overrides or {}, out=str(out))
    return resolve_config(saved.pop("recipe"), **saved)


def prepare_out(out: Path, *, resume: bool, force: bool, is_main: bool) -> Path:
    """Refuse to mix two runs in one folder; ``force`` clears the last one's files first."""
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


def write_config(out: Path, cfg: TrainConfig) -> None:
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")


def append_metrics(out: Path, row: dict, writer) -> None:
    """One epoch's row to metrics.jsonl and to TensorBoard (x axis: epochs done)."""
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    for key, value in row.items():
        if key != "epoch":
            writer.add_scalar(key, value, row["epoch"])
    writer.flush()


def epoch_line(row: dict, epochs: int, dropped_to: int | None) -> str:
    return (f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f} top-1 {row['train_top1']:.4f} | "
            f"val loss {row['val_loss']:.4f} top-1 {row['val_top1']:.4f} top-5 {row['val_top5']:.4f} | "
            f"{row['images_per_s']:.0f} img/s, {row['seconds']:.1f}s"
            + (f" | lr divided by 10 (plateau, drop {dropped_to})" if dropped_to else ""))


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
