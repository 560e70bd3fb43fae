"""Evaluation the paper's way [6]: top-1/top-5, centre view or 10-crop [4], and ensembles.

Probabilities are averaged, not logits: the paper averages the softmax outputs over the ten
patches [4.1] and over several CNNs [6] (the 5-CNN result).
"""
from __future__ import annotations

import math
import os
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alexnet.inference import backends
from alexnet.data.jpeg_store import JpegImages
from alexnet.errors import UsageError
from alexnet.util.plots import plot_confusion
from alexnet.util.progress import Progress


def as_nchw(batch: np.ndarray | torch.Tensor | JpegImages) -> torch.Tensor:
    """uint8 (B, H, W, C) -> (B, C, H, W) view in channels_last memory (a jpeg store's batch decoded by as many
    threads as torch uses)."""
    if isinstance(batch, JpegImages):
        batch = batch.read(np.arange(len(batch)), threads=torch.get_num_threads())
    batch = torch.tensor(batch) if isinstance(batch, np.ndarray) else batch   # copy: memmaps are read-only
    return batch.permute(0, 3, 1, 2)


@torch.no_grad()
def predict_probs(models: Sequence[nn.Module | backends.OnnxModel], images: np.ndarray | torch.Tensor,
                  transform: Callable, *, batch_size: int = 256, device: str | torch.device = "cpu",
                  autocast: bool = False, progress: bool = False, desc: str = "eval") -> torch.Tensor:
    """Softmax outputs (N, K) averaged over the transform's views and over ``models``.

    ``images`` are uint8 (N, H, W, C); ``transform`` maps a uint8 NCHW batch to (B, C, h, w) or,
    for 10-crop, (V, B, C, h, w).
    """
    device = torch.device(device)
    for model in models:
        model.eval()
    chunks = []
    bar = Progress(math.ceil(len(images) / batch_size), desc=desc, enabled=progress)
    for start in range(0, len(images), batch_size):
        x = transform(as_nchw(images[start:start + batch_size]).to(device))
        views = x if x.dim() == 5 else x.unsqueeze(0)                      # (V, B, C, h, w)
        flat = views.flatten(0, 1).contiguous(memory_format=torch.channels_last)
        probs = 0
        for model in models:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = model(flat)
            probs = probs + F.softmax(logits.float(), dim=1).view(views.shape[0], views.shape[1], -1).mean(0)
        chunks.append((probs / len(models)).cpu())
        bar.update(1, n=len(chunks[-1]))
    bar.close()
    return torch.cat(chunks) if chunks else torch.empty(0, 0)


def topk_correct(probs: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Per-sample bool: the true label is among the ``k`` most probable classes."""
    k = min(k, probs.shape[1])
    return (probs.topk(k, dim=1).indices == labels[:, None]).any(dim=1)


def accuracy_report(probs: torch.Tensor, labels: np.ndarray | torch.Tensor, classes: list[str]) -> dict:
    """top1/top5 (fractions), errors, mean NLL, per-class accuracy and the confusion matrix."""
    labels = torch.tensor(np.asarray(labels), dtype=torch.int64)   # a copy: labels may be read-only memmaps
    n = len(labels)
    top1 = topk_correct(probs, labels, 1).float().mean().item() if n else 0.0
    top5 = topk_correct(probs, labels, 5).float().mean().item() if n else 0.0
    predicted = probs.argmax(1)
    confusion = torch.zeros(len(classes), len(classes), dtype=torch.int64)
    confusion.index_put_((labels, predicted), torch.ones(n, dtype=torch.int64), accumulate=True)
    per_class = {name: (confusion[i, i] / confusion[i].sum()).item() if confusion[i].sum() else None
                 for i, name in enumerate(classes)}
    nll = F.nll_loss(probs.clamp_min(1e-12).log(), labels).item() if n else 0.0
    return {"top1": top1, "top5": top5, "top1_error": 1 - top1, "top5_error": 1 - top5, "loss": nll,
            "n": n, "per_class": per_class, "confusion": confusion.tolist()}


def evaluate_checkpoints(checkpoints: list[str], *, data: str | None = None, split: str = "test",
                         ten_crop: bool | None = None, flip_view: bool | None = None, device: str = "auto",
                         batch_size: int = 256,
                         data_root: str | None = None, confusion_png: str | None = None,
                         progress: bool = True, backend: str | None = None) -> dict:
    """Evaluate one checkpoint, or the softmax average of several (an ensemble [6]), on a split.

    ``ten_crop=None``, ``flip_view=None`` use the checkpoint's recipe settings (``Checkpoint.ten_crop``, ``.flip_view``). Checkpoints or exports
    (``alexnet.inference.backends.load``; ``backend`` None: each file's default).
    """
    loaded = [backends.load(path, backend, device) for path in checkpoints]
    first = loaded[0].info
    for path, item in zip(checkpoints[1:], loaded[1:]):
        if item.info.classes != first.classes:
            raise UsageError(f"--ensemble: {path} was trained on other classes than {checkpoints[0]}")
    if ten_crop is None:          # the recipe decides: the paper's is 10-crop [4], the quick one the centre view
        ten_crop = first.ten_crop
    if flip_view is None:
        flip_view = first.flip_view
    spec = data or first.data
    dataset = first.open_split(split, data=data, data_root=data_root, progress=progress, source=checkpoints[0])
    if dataset.classes != first.classes:
        raise UsageError(f"{spec} ({split}) has classes {dataset.classes[:5]}... but the checkpoint was trained on "
                         f"{first.classes[:5]}...; evaluate on data with the same classes")
    probs = 0
    for path, item in zip(checkpoints, loaded):
        transform = item.info.eval_transform(ten_crop, flip_view)
        probs = probs + predict_probs([item.model], dataset.images, transform,
                                      batch_size=batch_size, device=item.device, progress=progress,
                                      desc=f"eval {os.path.basename(path)}")
    report = accuracy_report(probs / len(loaded), dataset.labels, dataset.classes)
    report.update(checkpoints=list(checkpoints), backends=[item.backend for item in loaded], data=spec, split=split,
                  ten_crop=ten_crop, flip_view=flip_view and not ten_crop, views=first.views(ten_crop, flip_view),
                  skipped=len(dataset.skipped), skipped_items=[list(s) for s in dataset.skipped])
    if confusion_png:
        plot_confusion(np.asarray(report["confusion"]), dataset.classes, confusion_png,
                       f"{os.path.basename(checkpoints[0])} on {split}: top-1 {report['top1']:.4f}")
        report["confusion_png"] = confusion_png
    return report


def format_accuracy(report: dict) -> str:
    views = report.get("views") or ("10-crop" if report["ten_crop"] else "centre crop")
    models = f"ensemble of {len(report['checkpoints'])}" if len(report["checkpoints"]) > 1 else report["checkpoints"][0]
    lines = [f"{models} on {report['data']} ({report['split']}, {report['n']} images, {views}, "
             f"{report['skipped']} skipped)",
             f"top-1 accuracy {report['top1']:.4f} (error {report['top1_error']:.4f})   "
             f"top-5 accuracy {report['top5']:.4f} (error {report['top5_error']:.4f})", "per-class accuracy:"]
    lines += [f"  {name:<24} {acc:.4f}" if acc is not None else f"  {name:<24} (no images)"
              for name, acc in report["per_class"].items()]
    if report.get("confusion_png"):
        lines.append(f"confusion matrix: {report['confusion_png']}")
    return "\n".join(lines)
