"""``open_dataset``: any ``--data`` spec, one split of it, as uint8 images plus labels and train statistics.

Small-image sources (idx, CIFAR, the builtins) load into memory at their own size (rescaled only when
``size`` is smaller than they are, by ``decode.shape_rule``).
Folders of photos, CSV files and ILSVRC-2012 trees and archives are prepared implicitly into a cache (``cache_dir/<name>-<key>`` or
``~/.cache/alexnet/prepared/<name>-<key>``, key = hash of the resolved path and CSV columns) and opened
from it; the cache is rebuilt when the files or the requested size/channels change, and reused
otherwise. Caches are memory-mapped, never read into RAM.

Splits: "train", "val", "test". Without a val split in the source, a fixed seeded, class-stratified
``val_fraction`` of train is held out and "train" excludes it (alexnet.data.holdout). For a cache the
held-out order was fixed when it was prepared (``prepare --seed``; HOLDOUT_SEED 0 for implicit caches, so
that training with another seed does not decode everything again); ``seed`` applies to in-memory sources only.
Images are read-only; statistics are those of the source's whole train split, attached to every split.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from alexnet.data import cache
from alexnet.data.builtin import cache_root
from alexnet.data.decode import convert_channels, fit_arrays
from alexnet.data.holdout import HOLDOUT_SEED, holdout_order, select
from alexnet.data.preparation import PHOTO_KINDS, check_options, check_strict, prepare_source
from alexnet.data.resolve import Source, fingerprint, load_arrays, resolve_source, source_files
from alexnet.data.stats import DatasetStats, compute_stats
from alexnet.errors import UsageError

SPLITS = ("train", "val", "test")


@dataclass
class ImageSet:
    """One split of a dataset."""

    images: np.ndarray                       # uint8 (N, H, W, C), C in {1, 3}; read-only, may be a np.memmap
    labels: np.ndarray                       # int64 (N,)
    classes: list[str]
    source: str                              # human description: spec, split, how it was selected
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (path or item, reason) of bad items
    stats: DatasetStats | None = None        # statistics of the source's TRAIN split

    def __len__(self) -> int:
        return len(self.labels)


def open_dataset(spec: str, split: str = "train", *, data_root: str | None = None, size: int = 256,
                 val_fraction: float = 0.1, seed: int = 0, strict: bool = False, image_column: str | None = None,
                 label_column: str | None = None, channels: int | None = None, cache_dir: str | None = None,
                 progress: bool = True, workers: int | None = None) -> ImageSet:
    """One split of the dataset ``spec`` (see the module docstring and alexnet.data.resolve for specs)."""
    if split not in SPLITS:
        raise UsageError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not 0 <= val_fraction < 1:
        raise UsageError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    check_options(size, channels, workers)
    source = resolve_source(spec, data_root, progress=progress)
    if source.kind in PHOTO_KINDS:
        out = implicit_cache_path(source, cache_dir, image_column=image_column, label_column=label_column)
        report = prepare_source(source, out, size=size, workers=workers, strict=strict, channels=channels,
                                seed=HOLDOUT_SEED,
                                image_column=image_column, label_column=label_column, progress=progress)
        if progress and not report.reused:
            print(report.summary(), file=sys.stderr)
        source = Source("cache", out)
    if source.kind == "cache":
        return _open_cache(source.path, spec, split, val_fraction, channels, strict)
    return _open_arrays(source, spec, split, val_fraction, seed, channels, size)


def implicit_cache_path(source: Source, cache_dir: str | None, **options) -> str:
    """Where open_dataset keeps the prepared cache of a folder or CSV source."""
    key = json.dumps({"path": source.path, "version": cache.FORMAT_VERSION, **options}, sort_keys=True)
    name = f"{os.path.basename(source.path.rstrip(os.sep)) or 'data'}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    return os.path.join(cache_dir or os.path.join(cache_root(), "prepared"), name)


def _missing_split(spec: str, split: str, available: list[str]) -> UsageError:
    return UsageError(f"{spec} has no {split} split (it has: {', '.join(available)}); use a source with one "
                      f"(a {split}/ folder, t10k-* idx files, a CIFAR test batch), or another --split")


def _open_arrays(source: Source, spec: str, split: str, val_fraction: float, seed: int,
                 channels: int | None, size: int) -> ImageSet:
    splits, classes, description, stats = _load_small(source, channels, size, fingerprint(source_files(source)))
    available = list(splits) + (["val"] if "val" not in splits and "train" in splits else [])
    if split in splits:
        images, labels = splits[split]
        note = f"{split}: {len(labels):,} images"
    elif split == "val":
        images, labels = splits["train"]
        images, labels, note = select(images, labels, "val", spec, val_fraction, holdout_order(labels, seed))
    else:
        raise _missing_split(spec, split, available)
    if split == "train" and "val" not in splits:
        images, labels, note = select(images, labels, "train", spec, val_fraction, holdout_order(labels, seed))
        note += f", seed {seed}"
    return ImageSet(_read_only(images), _read_only(labels), list(classes), f"{description}, {note}", [], stats)


@lru_cache(maxsize=2)
def _load_small(source: Source, channels: int | None, size: int, input_fingerprint: str):
    """Arrays and train statistics of an idx/CIFAR source, memoised per process (train and val share them)."""
    arrays = load_arrays(source)
    splits = {s: (_read_only(fit_arrays(convert_channels(images, channels or images.shape[-1]), size)),
                  _read_only(labels)) for s, (images, labels) in arrays.splits.items()}
    return splits, tuple(arrays.classes), arrays.description, compute_stats(splits["train"][0])


def _read_only(array: np.ndarray) -> np.ndarray:
    array = array.view()
    array.flags.writeable = False
    return array


def _open_cache(folder: str, spec: str, split: str, val_fraction: float, channels: int | None,
                strict: bool) -> ImageSet:
    meta = cache.read_metadata(folder)
    check_strict(meta["skipped"], strict, folder, "the cache was made without --strict")
    if channels is not None and channels != meta["shape"][2]:
        raise UsageError(f"{folder} holds {meta['shape'][2]}-channel images, {channels} were asked for; prepare "
                         f"it again with --channels {channels}")
    available = list(meta["splits"]) + (["val"] if "val" not in meta["splits"] else [])
    if split not in available:
        raise _missing_split(spec, split, available)
    stored = split if split in meta["splits"] else "train"
    images, labels = cache.load_split(folder, meta, stored)
    note = f"{split}: {len(labels):,} images"
    if "val" not in meta["splits"] and split in ("train", "val"):
        images, labels, note = select(images, labels, split, spec, val_fraction, None)
        note += f", seed {meta['holdout']['seed']} fixed when prepared"
    if len(labels) == 0:
        raise UsageError(f"the {split} split of {spec} has no images (see the skipped items in {folder})")
    stats = DatasetStats.from_dict(meta["stats"])
    return ImageSet(images, _read_only(labels), list(meta["classes"]), f"{meta['source']} via cache {folder}, {note}",
                    [tuple(s) for s in meta["skipped"]], stats)
