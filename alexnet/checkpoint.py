"""Checkpoints: written atomically, read only as weights (``torch.load(weights_only=True)``).

A checkpoint is a plain dict of tensors and JSON-like values, so loading never runs pickled code:
``model`` (registry name and arguments), ``classes``, ``config`` (the resolved run config),
``data`` (what evaluation needs to preprocess exactly like training), ``state_dict`` and, for a
resumable ``last.pt``, ``optimizer``, ``schedule``, ``position`` and ``rng``.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alexnet.errors import UsageError
from alexnet.train.parts import build_model
from alexnet.util.atomic import atomic_path

FORMAT = "alexnet-checkpoint-v1"
REQUIRED = ("model", "classes", "config", "data", "state_dict")   # what eval, predict and resume read
MODEL_KEYS = ("name", "num_classes", "in_channels", "input_size")


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` whole or not at all, fsynced (``alexnet.util.atomic``): a crash at any moment leaves the old
    file or the new one under ``path``, never a part. A full disk or quota raises ``NoSpace`` (exit 1) saying
    whether the earlier checkpoint is still there."""
    with atomic_path(path, durable=True) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint as weights only; anything that would need arbitrary unpickling is refused."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UsageError(f"refusing to load {path}: it is not a weights-only checkpoint "
                         f"(loading it would run code from the file). Details: {str(err).splitlines()[0]}") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise UsageError(f"{path} is not a readable checkpoint ({err}); was it truncated or written by another tool?") from None
    except Exception as err:          # a text or other non-torch file: torch.load fails in its own ways (KeyError 101)
        raise UsageError(f"{path} is not a checkpoint file (torch.load: {type(err).__name__} {err}); "
                         "give a .pt written by alexnet train") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UsageError(f"{path} is not an alexnet checkpoint (no '{FORMAT}' marker); "
                         "to load plain state dicts use alexnet.checkpoint.load_state_dict_checked")
    return ckpt


def check_complete(ckpt: dict, path: str | os.PathLike) -> None:
    """Every part eval, predict and resume read is there (a UsageError naming the file and the parts, else)."""
    missing = [key for key in REQUIRED if key not in ckpt]
    missing += [f"model.{key}" for key in MODEL_KEYS if isinstance(ckpt.get("model"), dict) and key not in ckpt["model"]]
    if missing or not isinstance(ckpt.get("model"), dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise UsageError(f"{path} is an alexnet checkpoint with parts missing or malformed: "
                         f"{', '.join(missing) or 'model/state_dict is not a dict'}; was it written by a broken or "
                         "edited run?")


def load_state_dict_checked(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """``model.load_state_dict`` with errors that name the layer and both shapes."""
    own = model.state_dict()
    for key, value in state_dict.items():
        if key in own and own[key].shape != value.shape:
            raise UsageError(f"{source}: layer {key} has shape {tuple(value.shape)} but the model expects "
                             f"{tuple(own[key].shape)} (trained for a different number of classes or channels?)")
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise UsageError(f"{source} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.load_state_dict(state_dict)


def model_from_checkpoint(ckpt: dict) -> nn.Module:
    """Rebuild the model from the arguments stored in ``ckpt`` and load its weights (eval mode)."""
    model = build_model(ckpt["model"])
    load_state_dict_checked(model, ckpt["state_dict"])
    return model.eval()


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Load ``path`` and return (model in eval mode, checkpoint dict)."""
    ckpt = load_checkpoint(path, map_location)
    check_complete(ckpt, path)
    return model_from_checkpoint(ckpt), ckpt
