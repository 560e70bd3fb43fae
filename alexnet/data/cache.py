"""``alexnet prepare``: decode every image once into a packed, memory-mappable cache.

Cache format (a folder, FORMAT_VERSION 1):
  <split>_images.npy   uint8 (N, H, W, C), one per split present (train, and val/test when the source has them)
  <split>_labels.npy   int64 (N,)
  alexnet-cache.json   classes, source, split sizes, shape, skipped items with reasons, train statistics
                       (DatasetStats.to_dict()), the input's fingerprint, the options, the format version.
When the source has no val split, train rows are stored in a seeded, class-stratified order whose LAST
round(fraction * N) rows are the held-out validation set for any fraction (see resolve.holdout_order),
so both parts are slices of one memory map. Statistics are over the whole train split.

Image shape rule: when every image has the same size and fits in size x size (28x28 digits, 32x32
CIFAR), images are stored as they are; otherwise each is rescaled so its short side is ``size`` and
centre-cropped to size x size [4] (smaller photos are upscaled). Channels: 1 when every image is greyscale, else 3,
unless ``channels`` forces it.

The cache is written to a temporary folder next to ``out`` and renamed into place at the end, so an
interrupted prepare leaves nothing at ``out``; a second prepare of unchanged input reuses the cache.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from alexnet.data.decode import convert_channels, fit_arrays
from alexnet.data.listing import Listing, list_csv, list_image_folder
from alexnet.data.parallel import decode_chunk, probe_chunk, run_chunks
from alexnet.data.resolve import (CACHE_METADATA, Arrays, Source, fingerprint, holdout_order, load_arrays,
                                  resolve_source, source_files)
from alexnet.data.stats import compute_stats
from alexnet.errors import UsageError

FORMAT_VERSION = 1
SHOWN_SKIPPED = 20         # skipped items listed in a summary; all of them are in the metadata


@dataclass
class PrepareReport:
    """What prepare did: counts per split, skipped items, where the arrays are, and how long it took."""

    out: str
    source: str
    counts: dict[str, int]
    shape: tuple[int, int, int]                                    # (H, W, C)
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (path or item, reason)
    paths: dict[str, str] = field(default_factory=dict)            # split -> images .npy
    reused: bool = False
    seconds: float = 0.0

    def summary(self) -> str:
        verb = "reused the existing cache (input unchanged)" if self.reused else "prepared"
        h, w, c = self.shape
        lines = [f"{verb}: {self.out}", f"  source: {self.source}",
                 "  images: " + ", ".join(f"{s} {n:,}" for s, n in self.counts.items()) + f" of {h}x{w}x{c}",
                 f"  skipped: {len(self.skipped)}"]
        lines += [f"    {item}: {reason}" for item, reason in self.skipped[:SHOWN_SKIPPED]]
        if len(self.skipped) > SHOWN_SKIPPED:
            lines.append(f"    ... and {len(self.skipped) - SHOWN_SKIPPED} more (all in {CACHE_METADATA})")
        lines.append(f"  time: {self.seconds:.1f} s")
        return "\n".join(lines)

    __str__ = summary


def prepare(spec: str, out: str, *, size: int = 256, workers: int | None = None, strict: bool = False,
            channels: int | None = None, seed: int = 0, data_root: str | None = None,
            image_column: str | None = None, label_column: str | None = None, progress: bool = True) -> PrepareReport:
    """Decode the source ``spec`` once into a cache folder ``out`` (see the module docstring).

    strict: any bad item stops the run (UsageError listing them all) and nothing is left at ``out``.
    """
    source = resolve_source(spec, data_root, progress=progress)
    if source.kind == "cache":
        raise UsageError(f"{spec} is already a cache made by `alexnet prepare`; use it directly (--data {spec})")
    return prepare_source(source, out, size=size, workers=workers, strict=strict, channels=channels, seed=seed,
                          image_column=image_column, label_column=label_column, progress=progress)


def check_options(size: int, channels: int | None, workers: int | None) -> None:
    if size < 1:
        raise UsageError(f"--size must be a positive number of pixels, got {size}")
    if channels not in (None, 1, 3):
        raise UsageError(f"--channels must be 1 or 3, got {channels}")
    if workers is not None and workers < 0:
        raise UsageError(f"--workers must be >= 0, got {workers}")


def prepare_source(source: Source, out: str, *, size: int = 256, workers: int | None = None, strict: bool = False,
                   channels: int | None = None, seed: int = 0, image_column: str | None = None,
                   label_column: str | None = None, progress: bool = True) -> PrepareReport:
    """``prepare`` for an already resolved source (open_dataset uses this for folders and CSV files)."""
    check_options(size, channels, workers)
    start = time.perf_counter()
    out = os.path.abspath(out)
    data: Listing | Arrays | None = None
    if source.kind == "folder":
        data = list_image_folder(source.path)
    elif source.kind == "csv":
        data = list_csv(source.path, image_column, label_column)
    photos = data is not None
    files = ([p for items in data.splits.values() for p, _ in items] + data.extra_files) if photos \
        else source_files(source)
    if source.kind == "folder" and _inside(out, source.path):
        raise UsageError(f"--out {out} is inside the data folder {source.path}; it would be read as a class "
                         f"folder next time. Choose a folder outside it")
    options = {"size": size, "channels": channels, "seed": seed,
               "image_column": image_column, "label_column": label_column}
    input_fingerprint = fingerprint(files)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with _lock(out):
        meta = _metadata_or_none(out)
        if meta and meta["fingerprint"] == input_fingerprint and _same_result(meta, options):
            report = report_from_metadata(out, meta, reused=True, seconds=time.perf_counter() - start)
            check_strict(report.skipped, strict, out, "the existing cache was made without --strict")
            return report
        _check_replaceable(out)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=os.path.dirname(out))
        os.chmod(tmp, 0o755)   # mkdtemp's 0700 would hide a shared cache from the rest of a team
        try:
            if photos:
                written = _write_photos(data, tmp, size=size, channels=channels, seed=seed,
                                        workers=(os.cpu_count() or 1) if workers is None else workers,
                                        progress=progress)
            else:
                data = load_arrays(source)
                written = _write_arrays(data, tmp, size=size, channels=channels, seed=seed)
            check_strict(written["skipped"], strict, source.path)
            stats = compute_stats(np.load(os.path.join(tmp, "train_images.npy"), mmap_mode="r"))
            meta = {"format": "alexnet-cache", "format_version": FORMAT_VERSION, "source": data.description,
                    "kind": source.kind, "path": source.path, "classes": list(data.classes), **written,
                    "fingerprint": input_fingerprint, "options": options,
                    "seconds": round(time.perf_counter() - start, 3)}
            text = json.dumps(meta, indent=1)[:-2] + ',\n "stats": ' + json.dumps(stats.to_dict()) + "\n}\n"
            with open(os.path.join(tmp, CACHE_METADATA), "w") as f:
                f.write(text)
            _install(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return report_from_metadata(out, meta, reused=False, seconds=time.perf_counter() - start)


def _same_result(meta: dict, options: dict) -> bool:
    """Whether the cache described by ``meta`` is what ``options`` would produce from the same input.

    Compared by outcome: a 28x28 dataset prepared with size 256 or 28 is the same cache, and so is
    channels=None (auto) and channels=1 when every image is grey.
    """
    stored = meta["options"]
    if any(stored.get(k) != options[k] for k in ("seed", "image_column", "label_column")):
        return False
    channels = options["channels"] or (1 if meta["grey"] else 3)
    native, size = meta["native_shape"], options["size"]
    height, width = native if native and max(native) <= size else (size, size)
    return [height, width, channels] == list(meta["shape"])


def check_strict(skipped: list, strict: bool, where: str, note: str = "nothing was written") -> None:
    """With strict, any skipped item is an error listing them all."""
    if strict and skipped:
        listed = "\n".join(f"  {item}: {reason}" for item, reason in skipped)
        raise UsageError(f"{where}: {len(skipped)} bad item(s), and --strict is set ({note}):\n{listed}\n"
                         f"Fix or remove them, or run without --strict to skip them.")


def report_from_metadata(out: str, meta: dict, *, reused: bool, seconds: float) -> PrepareReport:
    return PrepareReport(out, meta["source"], dict(meta["splits"]), tuple(meta["shape"]),
                         [tuple(s) for s in meta["skipped"]],
                         {s: os.path.join(out, f"{s}_images.npy") for s in meta["splits"]}, reused, seconds)


def _write_arrays(data: Arrays, tmp: str, *, size: int, channels: int | None, seed: int) -> dict:
    native = list(data.splits["train"][0].shape[1:3])
    splits = {s: (fit_arrays(convert_channels(images, channels or images.shape[-1]), size), labels)
              for s, (images, labels) in data.splits.items()}
    holdout = "val" not in splits
    if holdout:
        images, labels = splits["train"]
        order = holdout_order(labels, seed)[::-1]
        splits["train"] = (images[order], labels[order])
    for split, (images, labels) in splits.items():
        np.save(os.path.join(tmp, f"{split}_images.npy"), np.ascontiguousarray(images))
        np.save(os.path.join(tmp, f"{split}_labels.npy"), labels.astype(np.int64))
    shape = splits["train"][0].shape[1:]
    return {"splits": {s: len(v[1]) for s, v in splits.items()}, "shape": list(shape), "skipped": [],
            "holdout": {"seed": seed} if holdout else None, "grey": data.splits["train"][0].shape[-1] == 1,
            "native_shape": native}


def _write_photos(data: Listing, tmp: str, *, size: int, channels: int | None, seed: int, workers: int,
                  progress: bool) -> dict:
    skipped = list(data.skipped)
    entries = [(split, path, label) for split, items in data.splits.items() for path, label in items]
    probes = run_chunks(probe_chunk, [path for _, path, _ in entries], (), workers, "checking", progress)
    usable: dict[str, list[tuple[str, int]]] = {split: [] for split in data.splits}
    shapes, all_grey = set(), True
    with contextlib.closing(probes):
        for (split, path, label), probe in zip(entries, probes):
            if isinstance(probe, str):
                skipped.append((path, probe))
                continue
            usable[split].append((path, label))
            shapes.add((probe.height, probe.width))
            all_grey &= probe.grey
    if not usable["train"]:
        raise UsageError(f"{data.description}: no usable training images ({len(skipped)} skipped"
                         + (f"; e.g. {skipped[0][0]}: {skipped[0][1]}" if skipped else "") + ")")
    if len(shapes) == 1 and max(next(iter(shapes))) <= size:
        (height, width), resize = next(iter(shapes)), None          # small images of one size: as they are
    else:
        (height, width), resize = (size, size), size                # short side to size, central crop [4]
    shape = (height, width, channels or (1 if all_grey else 3))
    holdout = "val" not in usable
    if holdout:
        order = holdout_order(np.array([label for _, label in usable["train"]]), seed)[::-1]
        usable["train"] = [usable["train"][i] for i in order]
    counts = {}
    for split, items in usable.items():
        counts[split], bad = _write_split(tmp, split, items, shape, resize, workers, progress)
        skipped += bad
    if counts["train"] == 0:
        raise UsageError(f"{data.description}: none of the training images could be decoded "
                         f"(e.g. {skipped[-1][0]}: {skipped[-1][1]})")
    return {"splits": counts, "shape": list(shape), "skipped": [list(s) for s in skipped],
            "holdout": {"seed": seed} if holdout else None, "grey": all_grey,
            "native_shape": list(next(iter(shapes))) if len(shapes) == 1 else None}


def _write_split(tmp: str, split: str, items: list[tuple[str, int]], shape: tuple[int, int, int],
                 resize: int | None, workers: int, progress: bool) -> tuple[int, list[tuple[str, str]]]:
    """Decode ``items`` in order into ``tmp/<split>_images.npy``; returns (rows written, skipped)."""
    path = os.path.join(tmp, f"{split}_images.npy")
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(len(items), *shape))
    labels, bad, n = [], [], 0
    results = run_chunks(decode_chunk, [p for p, _ in items], (shape[2], resize), workers, f"decoding {split}",
                          progress)
    with contextlib.closing(results):
        for (item, label), result in zip(items, results):
            if isinstance(result, str):
                bad.append((item, result))
            elif result.shape != shape:
                bad.append((item, f"decoded to {result.shape}, expected {shape} (its header size was wrong)"))
            else:
                images[n] = result
                labels.append(label)
                n += 1
    images.flush()
    del images
    if n < len(items):
        _shrink_npy(path, n)
    np.save(os.path.join(tmp, f"{split}_labels.npy"), np.asarray(labels, dtype=np.int64))
    return n, bad


def _shrink_npy(path: str, rows: int) -> None:
    """Cut a .npy file to its first ``rows`` rows in place: rewrite the shape (same header length), truncate."""
    with open(path, "r+b") as f:
        version = np.lib.format.read_magic(f)
        length_start = f.tell()
        shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                 else np.lib.format.read_array_header_2_0(f))
        data_start = f.tell()
        text_start = length_start + (2 if version == (1, 0) else 4)
        header = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran,
                       "shape": (rows, *shape[1:])})
        f.seek(text_start)
        f.write(header.ljust(data_start - text_start - 1).encode("latin1") + b"\n")
        f.truncate(data_start + rows * int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)


def _metadata_or_none(folder: str) -> dict | None:
    try:
        with open(os.path.join(folder, CACHE_METADATA)) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format_version") == FORMAT_VERSION else None


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([os.path.realpath(path), os.path.realpath(folder)]) == os.path.realpath(folder)


def _check_replaceable(out: str) -> None:
    if os.path.isfile(out):
        raise UsageError(f"--out {out} is a file; give a folder path for the cache")
    if os.path.isdir(out) and os.listdir(out) and not os.path.isfile(os.path.join(out, CACHE_METADATA)):
        raise UsageError(f"--out {out} exists and is not an alexnet cache; refusing to overwrite it, "
                         f"choose a new folder")


def _install(tmp: str, out: str) -> None:
    """Move the finished cache in place of ``out`` (an old cache there is replaced)."""
    old = None
    if os.path.isdir(out):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=os.path.dirname(out))
        os.replace(out, old)   # an empty folder is replaced by rename; a non-empty one is moved aside first
    os.replace(tmp, out)
    if old:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _lock(out: str) -> Iterator[None]:
    """An exclusive lock on ``out`` between processes (torchrun ranks opening one folder): one prepares."""
    try:
        import fcntl
    except ImportError:          # not POSIX: no lock
        yield
        return
    lock_path = os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.lock")
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
