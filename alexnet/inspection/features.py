"""Activations of any layer as feature vectors: what ``alexnet features`` writes and ``alexnet show neighbors`` reads.

A layer is named as ``alexnet summary`` prints it (``features.conv5``, ``classifier.fc7``) or by its last
part when that is unique (``conv5``, ``fc7``, ``relu7``, ``pool5``). The default, ``last-hidden``, is the
input of the model's final ``nn.Linear``: for the AlexNet family in eval mode that is the post-ReLU fc7
(dropout is the identity), the 4096-dimensional vector the paper compares in Fig. 4 [6.1].
Activations are taken with forward hooks, so every model computes exactly what it computes in ``eval``
(a hook on relu/LRN/pool also turns off the CPU fusion of that block: see ``AlexNet._features``).
"""
from __future__ import annotations

import math
import os
from typing import Callable

import numpy as np
import torch
from torch import nn

from alexnet.checkpoint import load_model
from alexnet.errors import UsageError
from alexnet.inference.evaluate import as_nchw
from alexnet.util.atomic import atomic_path
from alexnet.util.progress import Progress
from alexnet.train.parts import resolve_device

LAST_HIDDEN = "last-hidden"


def layer_names(model: nn.Module) -> list[str]:
    """Every layer's full name (``named_modules``, as ``alexnet summary`` lists them), in order."""
    return [name for name, _ in model.named_modules() if name]


def resolve_layer(model: nn.Module, layer: str | None = None) -> tuple[str, str]:
    """(full module name, "output" or "input") of ``layer``; a UsageError lists the valid names otherwise."""
    names = layer_names(model)
    if layer in (None, LAST_HIDDEN):
        linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
        if not linears:
            raise UsageError(f"{type(model).__name__} has no nn.Linear layer, so no last hidden layer; "
                             f"give --layer, one of: {', '.join(names)}")
        return linears[-1], "input"
    if layer in names:
        return layer, "output"
    matches = [name for name in names if name.rsplit(".", 1)[-1] == layer]
    if len(matches) == 1:
        return matches[0], "output"
    if matches:
        raise UsageError(f"--layer {layer} is ambiguous: {', '.join(matches)}; give the full name")
    raise UsageError(f"--layer {layer}: no such layer in {getattr(model, 'model_name', type(model).__name__)}; "
                     f"choose {LAST_HIDDEN} or one of: {', '.join(names)}")


def layer_label(model: nn.Module, layer: str | None) -> str:
    """A readable name of the resolved layer, e.g. ``classifier.relu7`` or ``last hidden layer (input of classifier.fc8)``."""
    name, where = resolve_layer(model, layer)
    return name if where == "output" else f"last hidden layer (input of {name})"


@torch.no_grad()
def extract_features(model: nn.Module, images: np.ndarray | torch.Tensor, transform: Callable,
                     layer: str | None = None, *, batch_size: int = 256, device: str | torch.device = "cpu",
                     progress: bool = False, desc: str = "features") -> np.ndarray:
    """float32 (N, D): ``layer``'s activations of uint8 (N, H, W, C) ``images``, flattened per image.

    ``transform`` maps a uint8 NCHW batch to network inputs (a checkpoint's ``eval_transform()``).
    The model is put in eval mode; the whole forward runs (outputs after the layer are discarded).
    """
    name, where = resolve_layer(model, layer)
    module = model.get_submodule(name)
    device = torch.device(device)
    model.eval()
    caught: list[torch.Tensor] = []

    def keep(value) -> None:
        value = value[0] if where == "input" and isinstance(value, tuple) else value
        if not isinstance(value, torch.Tensor):
            raise UsageError(f"layer {name} gives a {type(value).__name__}, not a tensor; choose another --layer")
        # a copy: an in-place ReLU after a conv would otherwise change what was kept
        caught.append(torch.flatten(value.detach(), 1).to("cpu", torch.float32, copy=True))

    hook = (module.register_forward_pre_hook(lambda _m, args: keep(args)) if where == "input"
            else module.register_forward_hook(lambda _m, _args, out: keep(out)))
    fuse = getattr(model, "fuse", None)
    if fuse and any(True for _ in module.children()):
        model.fuse = False    # a fused AlexNet runs its blocks, not the `features` container: no hook would fire
    out: np.ndarray | None = None
    bar = Progress(math.ceil(len(images) / batch_size), desc=desc, enabled=progress)
    try:
        for start in range(0, len(images), batch_size):
            x = transform(as_nchw(images[start:start + batch_size]).to(device))
            model(x.contiguous(memory_format=torch.channels_last))
            if not caught:
                raise UsageError(f"layer {name} is not run by {type(model).__name__}'s forward; choose another --layer")
            batch = caught[-1]    # a module run twice per forward (a ResNet block's relu): its last output
            caught.clear()
            if out is None:       # one array for the whole set: no list of chunks to concatenate
                out = np.empty((len(images), batch.shape[1]), np.float32)
            out[start:start + len(batch)] = batch.numpy()
            bar.update(1, n=len(batch))
    finally:
        hook.remove()
        bar.close()
        if fuse is not None:
            model.fuse = fuse
    return out if out is not None else np.empty((0, 0), np.float32)


def checkpoint_features(checkpoint: str, data: str | None = None, split: str = "test", layer: str | None = None, *,
                        batch_size: int = 256, device: str = "auto", data_root: str | None = None,
                        progress: bool = True) -> dict:
    """Features of one split of ``data`` (default: the checkpoint's training data) through its eval view.

    Returns the arrays of the npz (``features``, ``labels``, ``classes``, ``indices``: positions in the
    split as ``alexnet eval`` opens it, ``paths`` when the dataset knows them) and ``layer``, ``data``, ``split``.
    """
    model, ckpt = load_model(checkpoint)
    resolve_layer(model, layer)        # a bad --layer is refused before any data is opened
    dataset = ckpt.open_split(split, data=data, data_root=data_root, progress=progress)
    device = resolve_device(device)
    transform = ckpt.preprocessing.eval_transform()
    features = extract_features(model.to(device), dataset.images, transform, layer, batch_size=batch_size,
                                device=device, progress=progress, desc=f"features {split}")
    result = {"features": features, "labels": np.asarray(dataset.labels, np.int64),
              "classes": np.asarray(dataset.classes, dtype=str), "indices": np.arange(len(dataset.labels)),
              "layer": layer_label(model, layer), "data": data or ckpt.data, "split": split}
    if getattr(dataset, "paths", None) is not None:
        result["paths"] = np.asarray(dataset.paths, dtype=str)
    return result


def default_out(checkpoint: str, layer: str, split: str) -> str:
    """``features_<layer>_<split>.npz`` next to the checkpoint (dots in the layer name become dashes)."""
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in layer)
    return os.path.join(os.path.dirname(os.path.abspath(checkpoint)), f"features_{safe}_{split}.npz")


def save_features(result: dict, path: str | os.PathLike) -> None:
    """The npz, written atomically (``alexnet.util.atomic``)."""
    arrays = {k: (np.asarray(v) if k in ("features", "labels", "classes", "indices", "paths") else np.asarray(str(v)))
              for k, v in result.items()}
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
