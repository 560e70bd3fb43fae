"""What ``alexnet study`` measures on a trained run: test errors (centre, 10 views, ensembles), the train error
in eval mode, LRN's divisor, parameters, and the training-error curve of Fig. 1.

Errors are percentages (100 - accuracy). Each run folder keeps its measurements in ``study_metrics.json``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from alexnet.checkpoint import Checkpoint, load_model
from alexnet.util.atomic import write_atomically
from alexnet.inference.evaluate import accuracy_report, predict_probs
from alexnet.models.alexnet import LocalResponseNorm
from alexnet.ops.lrn import lrn_scale

_DATASETS: dict[tuple, object] = {}


def write_json(obj, path: str | os.PathLike) -> None:
    """``obj`` as JSON at ``path``, atomically (``alexnet.util.atomic``)."""
    write_atomically(path, json.dumps(obj, indent=1) + "\n")


def _images(ckpt: Checkpoint, split: str, subset: int):
    """uint8 images and labels of ``split`` as the run saw its data; the first ``subset`` only when > 0. The runs
    of a study share their data: each split is opened once (the test split does not depend on the seed)."""
    config, prep = ckpt.config, ckpt.preprocessing
    key = (ckpt.data, config.get("data_root"), split, config.get("val_fraction"),
           config.get("seed") if split != "test" else None, prep.image_size[0], prep.channels)
    if key not in _DATASETS:
        _DATASETS[key] = ckpt.open_split(split, progress=False)
    dataset = _DATASETS[key]
    n = subset or len(dataset.labels)
    return dataset.images[:n], dataset.labels[:n], dataset.classes


def errors(checkpoints: list[str], split: str, subset: int, *, ten_crop: bool = False) -> dict:
    """Top-1/top-5 error (%) of one net or the softmax average of several [6] on a split."""
    loaded = [load_model(path) for path in checkpoints]
    images, labels, classes = _images(loaded[0][1], split, subset)
    probs = 0
    for model, ckpt in loaded:
        transform = ckpt.preprocessing.eval_transform(ten_crop)
        probs = probs + predict_probs([model.to(memory_format=torch.channels_last)], images, transform)
    report = accuracy_report(probs / len(loaded), labels, classes)
    return {"top1_error": 100 * report["top1_error"], "top5_error": 100 * report["top5_error"]}


def lrn_divisor(model: torch.nn.Module, x: torch.Tensor) -> float | None:
    """Mean of (k + alpha * window sum of squares)^beta over every LRN input of batch ``x``; None without LRN."""
    values: list[float] = []

    def hook(module, inputs, output):
        scale = lrn_scale(inputs[0].float(), module.size, module.alpha_sum, module.k, module.groups)
        values.append(scale.pow(module.beta).mean().item())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, LocalResponseNorm)]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for handle in handles:
            handle.remove()
    return sum(values) / len(values) if values else None


def lrn_divisors(checkpoint: str, seed: int) -> dict:
    """LRN's divisor on 256 test images for the trained net and for a fresh net of the same spec and seed."""
    model, ckpt = load_model(checkpoint)
    images, _, _ = _images(ckpt, "test", 256)
    x = ckpt.preprocessing.eval_transform()(torch.tensor(np.asarray(images)).permute(0, 3, 1, 2))
    torch.manual_seed(seed)
    fresh = ckpt.model.build()
    return {"lrn_divisor_init": lrn_divisor(fresh, x), "lrn_divisor_end": lrn_divisor(model, x)}


def parameters(checkpoint: str) -> int:
    model, _ = load_model(checkpoint)
    return sum(p.numel() for p in model.parameters())


def crossing(curve: dict, threshold: float = 25.0) -> dict:
    """Epochs and seconds at the first block of the training-error curve at or below ``threshold`` percent
    (None when the curve never gets there), and the last block's error."""
    for epoch, seconds, error in zip(curve["epoch"], curve["seconds"], curve["error"]):
        if error <= threshold:
            return {"epochs_to_25": epoch, "seconds_to_25": seconds, "final_train_error": curve["error"][-1]}
    return {"epochs_to_25": None, "seconds_to_25": None, "final_train_error": curve["error"][-1] if curve["error"]
            else None}


def read_cache(path: Path) -> dict:
    """``study_metrics.json``: the metrics measured so far; absent or damaged from outside, none (measured again)."""
    try:
        cache = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        cache = {}
    return cache if isinstance(cache, dict) else {}


def measure(run_dir: Path, record: dict, names: list[str], budget: dict, evaluation: dict) -> dict:
    """The run's value of each metric in ``names`` (cached in the run folder's ``study_metrics.json``)."""
    path = run_dir / "study_metrics.json"
    cache = read_cache(path)
    ckpt, config = str(run_dir / "last.pt"), record["config"]
    view = "10" if evaluation.get("ten_crop") else "1"

    def need(key: str) -> float | None:
        if key in cache:
            return cache[key]
        if key.startswith("test_"):
            found = errors([ckpt], "test", budget["test_subset"], ten_crop=view == "10")
            cache[f"test_top1_error@{view}"], cache[f"test_top5_error@{view}"] = found["top1_error"], found["top5_error"]
        elif key == "train_top1_error":
            subset = min(budget["train_eval_subset"], config["train_subset"]) if config["train_subset"] else 0
            cache[key] = errors([ckpt], "train", subset)["top1_error"]
        elif key.startswith("lrn_divisor"):
            cache.update(lrn_divisors(ckpt, config["seed"]))
        elif key == "params":
            cache[key] = parameters(ckpt)
        else:                                   # epochs_to_25, seconds_to_25, final_train_error
            cache.update(crossing(record["curve"]))
        return cache[key]

    out = {}
    for name in names:
        if name == "gap":                       # how much better the net does on its own training images
            out[name] = need(f"test_top1_error@{view}") - need("train_top1_error")
        else:
            out[name] = need(f"{name}@{view}" if name.startswith("test_") else name)
    write_json(cache, path)
    return out
