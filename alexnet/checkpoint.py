"""The checkpoint contract: one typed record that every command reads and writes.

A checkpoint file is a plain dict of tensors and JSON-like values, read with ``torch.load(weights_only=True)``
so that loading never runs pickled code. ``Checkpoint`` is that dict as a type, the one place its keys are read
by name (``from_dict``/``to_dict``; the training position is ``alexnet.train.position``'s, the export metadata
``alexnet.interchange.export``'s strings of ``model_dict``/``data_dict``):

- ``model``: a ``ModelSpec``, the registry name and the arguments that rebuild the network;
- ``classes``: the class names, in label order;
- ``config``: the resolved run config (``alexnet.train.recipes.TrainConfig.to_dict()``): the data set it names,
  its val fraction and seed, the recipe's test-time views (``ten_crop``);
- ``data``: the ``Preprocessing`` (statistics, sizes, normalisation) training used, so evaluation feeds the
  network what training fed it [4];
- ``state_dict``: the weights (empty for an export's metadata, whose weights live in the export);
- for a resumable ``last.pt``, ``training``: optimizer, schedule, position, history, best and RNG states (with
  ``--ema``, ``state_dict`` is the averaged weights and ``training['ema']`` the trained ones and the count);
- anything else (``alexnet convert``'s ``source``: the file converted and its hash) in ``extra``, kept as it is.

``Checkpoint.load(path)`` checks the marker and the parts (a ``UsageError`` naming the file and what is wrong);
``save`` writes atomically (``alexnet.util.atomic``); ``open_split`` opens a split the way the checkpoint's run
opened it; ``ten_crop`` and ``flip_view`` are the recipe's default views.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alexnet.data.preprocessing import Preprocessing
from alexnet.errors import UsageError
from alexnet.util.atomic import atomic_path
from alexnet.weights import FORMAT, export_kind, load_checked

REQUIRED = ("model", "classes", "config", "data", "state_dict")   # what eval, predict and resume read
MODEL_KEYS = ("name", "num_classes", "in_channels", "input_size")
TRAINING_KEYS = ("optimizer", "schedule", "position", "history", "best", "rng", "ema")   # last.pt's, for resume
__all__ = ["FORMAT", "Checkpoint", "ModelSpec", "atomic_save", "load_checkpoint", "load_model", "peek_model"]


@dataclass(frozen=True)
class ModelSpec:
    """What rebuilds a network: the registry name, the head, the input, and the model's own arguments."""

    name: str
    num_classes: int
    in_channels: int
    input_size: int
    kwargs: dict = field(default_factory=dict)

    def build(self, **extra) -> nn.Module:
        """The network (``extra``: placement arguments such as ``towers``), freshly initialised."""
        from alexnet.models import create_model
        return create_model(self.name, num_classes=self.num_classes, in_channels=self.in_channels,
                            input_size=self.input_size, **self.kwargs, **extra)

    def to_dict(self) -> dict:
        return {"name": self.name, "num_classes": self.num_classes, "in_channels": self.in_channels,
                "input_size": self.input_size, "kwargs": dict(self.kwargs)}

    @classmethod
    def from_dict(cls, spec: dict) -> "ModelSpec":
        return cls(spec["name"], spec["num_classes"], spec["in_channels"], spec["input_size"],
                   dict(spec.get("kwargs", {})))


@dataclass
class Checkpoint:
    model: ModelSpec
    classes: list[str]
    config: dict
    preprocessing: Preprocessing
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)
    training: dict | None = None          # TRAINING_KEYS of a resumable last.pt
    extra: dict = field(default_factory=dict)   # other entries (convert's "source"), kept on a round trip

    # ---- what the run said ------------------------------------------------------------------------------------
    @property
    def ten_crop(self) -> bool:
        """The recipe's test-time views: the paper's 10 crops [4], or the centre view."""
        return bool(self.config.get("ten_crop", False))

    @property
    def flip_view(self) -> bool:
        """The recipe's test-time mirror: the centre view's softmax averaged with its mirror image's."""
        return bool(self.config.get("flip_view", False))

    def views(self, ten_crop: bool | None = None, flip_view: bool | None = None) -> str:
        """The test-time views in words: "10-crop", "centre + mirror" or "centre crop" (None: the recipe's)."""
        ten_crop = self.ten_crop if ten_crop is None else ten_crop
        flip_view = self.flip_view if flip_view is None else flip_view
        return "10-crop" if ten_crop else ("centre + mirror" if flip_view else "centre crop")

    @property
    def data(self) -> str | None:
        """The data set the run trained on, as ``--data`` named it (None: converted weights)."""
        return self.config.get("data") or None

    def open_split(self, split: str, *, data: str | None = None, data_root: str | None = None,
                   progress: bool = True, source: str = "the checkpoint"):
        """One split of ``data`` (default: the training data) opened as the checkpoint's run opened it: the same
        stored size and channels, the same held-out fraction and seed."""
        from alexnet.data import open_dataset
        spec = data or self.data
        if not spec:
            if self.config.get("converted_from"):    # published weights: no data set of their own
                raise UsageError(f"{source} holds weights converted from {self.config['converted_from']} and no data "
                                 "set of its own; pass --data (e.g. an ImageNet validation folder)")
            raise UsageError(f"{source} does not name its training data; give DATA (--data)")
        return open_dataset(spec, split, data_root=data_root or self.config.get("data_root"),
                            size=self.preprocessing.image_size[0], val_fraction=self.config.get("val_fraction", 0.1),
                            seed=self.config.get("seed", 0), channels=self.preprocessing.channels, progress=progress)

    def eval_transform(self, ten_crop: bool | None = None, flip_view: bool | None = None):
        """The evaluation views of this checkpoint's preprocessing (``ten_crop``, ``flip_view`` None: the recipe's)."""
        return self.preprocessing.eval_transform(self.ten_crop if ten_crop is None else ten_crop,
                                                 self.flip_view if flip_view is None else flip_view)

    # ---- the network ------------------------------------------------------------------------------------------
    def build_model(self, **extra) -> nn.Module:
        """The network with these weights loaded (shapes checked), in eval mode."""
        model = self.model.build(**extra)
        load_checked(model, self.state_dict)
        return model.eval()

    def without_weights(self) -> "Checkpoint":
        """The same record with no tensors: what an export's metadata carries and predict/eval keep."""
        return Checkpoint(self.model, list(self.classes), dict(self.config), self.preprocessing)

    # ---- the file ---------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        out = {"format": FORMAT, "model": self.model.to_dict(), "classes": list(self.classes), "config": self.config,
               "data": self.preprocessing.to_dict(), "state_dict": self.state_dict}
        return {**self.extra, **out, **(self.training or {})}

    @classmethod
    def from_dict(cls, ckpt: Any, source: str | os.PathLike = "checkpoint") -> "Checkpoint":
        """The record of a loaded dict; a UsageError naming ``source`` and the parts missing or malformed."""
        if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
            raise UsageError(f"{source} is not an alexnet checkpoint (no '{FORMAT}' marker); "
                             "to load plain state dicts use alexnet.weights.load_checked")
        model = ckpt.get("model")
        missing = [key for key in REQUIRED if key not in ckpt]
        missing += [f"model.{key}" for key in MODEL_KEYS if isinstance(model, dict) and key not in model]
        if missing or not isinstance(model, dict) or not isinstance(ckpt.get("state_dict"), dict):
            raise UsageError(f"{source} is an alexnet checkpoint with parts missing or malformed: "
                             f"{', '.join(missing) or 'model/state_dict is not a dict'}; was it written by a broken "
                             "or edited run?")
        training = {key: ckpt[key] for key in TRAINING_KEYS if key in ckpt} or None
        extra = {key: value for key, value in ckpt.items() if key not in (*REQUIRED, *TRAINING_KEYS, "format")}
        return cls(ModelSpec.from_dict(model), list(ckpt["classes"]), dict(ckpt["config"]),
                   Preprocessing.from_dict(ckpt["data"]), ckpt["state_dict"], training, extra)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> "Checkpoint":
        """``path`` read as weights only and checked (``load_checkpoint``, then ``from_dict``)."""
        return cls.from_dict(load_checkpoint(path, map_location), path)

    def save(self, path: str | os.PathLike) -> None:
        atomic_save(self.to_dict(), path)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` whole or not at all, fsynced (``alexnet.util.atomic``): a crash at any moment leaves the old
    file or the new one under ``path``, never a part. A full disk or quota raises ``NoSpace`` (exit 1) saying
    whether the earlier checkpoint is still there."""
    with atomic_path(path, durable=True) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """The raw dict of an alexnet checkpoint, loaded as weights only; anything that would need arbitrary
    unpickling is refused. Most callers want ``Checkpoint.load``."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint {path} does not exist")
    if kind := export_kind(path):
        raise UsageError(f"{path} is an {kind} export; this command needs the training checkpoint (.pt) it was "
                         f"exported from: an {kind} export has no layers to read")
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
                         "to load plain state dicts use alexnet.weights.load_checked")
    return ckpt


def peek_model(path: str | os.PathLike) -> ModelSpec | None:
    """The ``ModelSpec`` of the alexnet checkpoint ``path`` without reading its tensors (memory-mapped), or None
    for anything else or anything unreadable (the full load says what is wrong)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return ModelSpec.from_dict(ckpt["model"]) if ckpt.get("format") == FORMAT else None
    except Exception:                 # not a zip checkpoint, not a dict, no model: not ours to say here
        return None


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, Checkpoint]:
    """The network of ``path`` in eval mode, and its checkpoint."""
    ckpt = Checkpoint.load(path, map_location)
    return ckpt.build_model(), ckpt
