"""What a ``--data`` spec names (``Source``, ``resolve_source``), and loading the small-image kinds into memory.

Resolution order: a builtin name (fashion-mnist, mnist); then a path: a ``.csv`` file; a folder
holding a cache made by ``alexnet prepare``; ILSVRC-2012 as distributed (alexnet.data.ilsvrc: the
devkit layout, the three archives, Kaggle's layout, val sorted into synset folders; ``Source.name`` is
the layout); a folder of idx files; a CIFAR python-batches folder; a folder of class sub-folders.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from alexnet.data.builtin import BUILTINS, find_builtin
from alexnet.data.cache import is_cache
from alexnet.data.formats import Splits, cifar_folder, idx_files, load_cifar_folder, load_idx_folder
from alexnet.errors import UsageError

ACCEPTED = ("--data accepts: a builtin name (" + ", ".join(BUILTINS) + "); a folder of class sub-folders "
            "(optionally under train/ val/ test/); a CSV file of image paths or ids and labels; a folder of "
            "MNIST-style idx files; a CIFAR-10/100 python-batches folder; ILSVRC-2012 as distributed (train/ + "
            "val/ + the devkit, the three downloaded archives, or Kaggle's ILSVRC/Data/CLS-LOC layout); or a "
            "cache made by `alexnet prepare`")
BUILTIN_FOLDER_NAMES = {"fashion-mnist": "fashion-mnist", "fashion_mnist": "fashion-mnist",
                        "fashionmnist": "fashion-mnist", "mnist": "mnist"}


@dataclass(frozen=True)
class Source:
    """A resolved spec. kind: idx, cifar, folder, csv, ilsvrc or cache; name: the builtin it is, if any, or
    the ILSVRC-2012 layout."""

    kind: str
    path: str
    name: str = ""


@dataclass
class Arrays:
    """A small-image source held in memory."""

    splits: Splits
    classes: list[str]
    description: str
    files: list[str]


def resolve_source(spec: str, data_root: str | None = None, *, progress: bool = True) -> Source:
    """The Source ``spec`` names; builtin datasets are found (or downloaded) here."""
    if spec in BUILTINS:
        return Source("idx", find_builtin(spec, data_root, progress=progress), spec)
    path = os.path.abspath(os.path.expanduser(spec))
    if not os.path.exists(path):
        raise UsageError(f"--data {spec!r}: no such file or folder, and not a builtin dataset. {ACCEPTED}")
    if os.path.isfile(path):
        if path.lower().endswith(".csv"):
            return Source("csv", path)
        raise UsageError(f"--data {spec!r} is a file but not a .csv. {ACCEPTED}")
    if is_cache(path):
        return Source("cache", path)
    from alexnet.data.ilsvrc import detect
    if layout := detect(path):
        return Source("ilsvrc", path, layout)
    if idx_files(path):
        names = [os.path.basename(path).lower(), os.path.basename(os.path.dirname(path)).lower()]
        builtin = next((BUILTIN_FOLDER_NAMES[n] for n in names if n in BUILTIN_FOLDER_NAMES), "")
        return Source("idx", path, builtin)
    if (batches := cifar_folder(path)) is not None:
        return Source("cifar", batches)
    if any(d.is_dir() and not d.name.startswith(".") for d in os.scandir(path)):
        return Source("folder", path)
    raise UsageError(f"--data {spec!r}: a folder, but not in a layout alexnet reads. {ACCEPTED}")


def source_files(source: Source) -> list[str]:
    """The input files of an idx or CIFAR source (for its fingerprint), without reading them."""
    if source.kind == "idx":
        return sorted(idx_files(source.path).values())
    return sorted(os.path.join(source.path, f) for f in os.listdir(source.path)
                  if os.path.isfile(os.path.join(source.path, f)))


def load_arrays(source: Source) -> Arrays:
    """An idx or CIFAR source, in memory at its own image size."""
    if source.kind == "cifar":
        splits, classes, name = load_cifar_folder(source.path)
        description = f"{name} python batches in {source.path}"
    elif source.kind == "idx":
        splits = load_idx_folder(source.path)
        found = max(int(labels.max(initial=-1)) for _, labels in splits.values()) + 1
        classes = list(BUILTINS[source.name].classes) if source.name else [str(i) for i in range(found)]
        description = f"{source.name or 'idx'} files in {source.path}"
    else:
        raise ValueError(f"load_arrays reads idx and cifar sources, not {source.kind}")
    for split, (_, labels) in splits.items():
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise UsageError(f"{source.path}: {split} labels run from {labels.min()} to {labels.max()}, but there "
                             f"are {len(classes)} classes ({', '.join(classes[:12])}...)")
    return Arrays(splits, classes, description, source_files(source))


def fingerprint(files: list[str]) -> str:
    """A hash of the files' paths, sizes and modification times: it changes when the input does."""
    digest = hashlib.sha256()
    for path in files:
        try:
            st = os.stat(path)
            digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()
