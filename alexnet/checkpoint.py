"""Checkpoints: written atomically, read only as weights (``torch.load(weights_only=True)``).

A checkpoint is a plain dict of tensors and JSON-like values, so loading never runs pickled code:
``model`` (registry name and arguments), ``classes``, ``config`` (the resolved run config),
``data`` (what evaluation needs to preprocess exactly like training), ``state_dict`` and, for a
resumable ``last.pt``, ``optimizer``, ``schedule``, ``position`` and ``rng``.
"""
from __future__ import annotations

import errno
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alexnet.errors import Failure, UsageError
from alexnet.run import build_model

FORMAT = "alexnet-checkpoint-v1"
REQUIRED = ("model", "classes", "config", "data", "state_dict")   # what eval, predict and resume read
MODEL_KEYS = ("name", "num_classes", "in_channels", "input_size")


class NoSpace(Failure, OSError):
    """A checkpoint could not be written: the disk (or quota) is full. The previous file is untouched; exit 1."""


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temp file in the same folder, fsync, then ``os.replace`` onto ``path``.

    A crash at any moment leaves either the old file or the new one under ``path``, never a part; a failure
    removes the temp file. The file's mode follows the umask, like every other output (mkstemp's is 0600).
    A full disk or quota raises ``NoSpace`` (exit 1) naming the file and the checkpoint still good.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if _no_space(err, path.parent):
            good = f"the last good checkpoint is {path}" if path.exists() else "no checkpoint was written"
            raise NoSpace(f"no space left on device writing {path}; {good}") from err
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _no_space(err: BaseException, folder: Path) -> bool:
    """ENOSPC/EDQUOT anywhere in the chain, or torch's zip writer failing ("unexpected pos") on a full disk."""
    seen, depth = err, 0
    while seen is not None and depth < 10:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen, depth = seen.__cause__ or seen.__context__, depth + 1
    if isinstance(err, RuntimeError) and ("unexpected pos" in str(err) or "write" in str(err).lower()):
        try:
            return shutil.disk_usage(folder).free < 64 << 20
        except OSError:
            return False
    return False


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
