"""``alexnet prepare``: decode every image of a source once into a packed, memory-mappable cache.

The cache's layout is alexnet.data.cache's; this module decides what goes into it:
- the images: photo sources (folders, CSV files) are probed, then decoded in worker processes
  (alexnet.data.parallel), bad files skipped with a reason (or, with strict, an error listing them all);
  idx and CIFAR sources are loaded into memory;
- their shape, by ``decode.shape_rule``: kept when every image has one size that fits in size x size,
  else each rescaled so its short side is ``size`` and centre-cropped to size x size [4];
- channels: 1 when every image is greyscale, else 3, unless ``channels`` forces it;
- the held-out order of train when the source has no val split (``holdout.stored_order``, seeded);
- reuse: a second prepare of unchanged input with options giving the same result reuses the cache;
- the store (``store``): "raw" uint8 arrays, memory-mapped, nothing to decode while training; or "jpeg",
  each stored square as JPEG bytes at ``quality`` (alexnet.data.jpeg_store), about 10x smaller and decoded
  by the loader. "auto" (the default) chooses jpeg for ILSVRC-2012 sources and for photo sources whose raw
  store would exceed ``RAW_AUTO_LIMIT`` bytes, raw otherwise (small-image sources are always raw).
ILSVRC-2012 sources (alexnet.data.ilsvrc: the devkit layout, the three archives read in place, Kaggle's,
val sorted into synset folders) skip the probing pass: they are photographs of varied sizes, stored as
size x size squares with 3 channels (unless ``channels`` says 1); bad files are found while decoding.
Interrupted, a jpeg-store prepare keeps what it committed (every 4,096 images, alexnet.data.writing) in a hidden
partial folder, and the same command continues from there; a raw-store prepare leaves nothing and starts over.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from alexnet.data import cache
from alexnet.data.decode import shape_rule
from alexnet.data.jpeg_store import DEFAULT_QUALITY, jpeg_path
from alexnet.data.listing import Listing, list_csv, list_image_folder
from alexnet.data.resolve import Arrays, Source, fingerprint, load_arrays, resolve_source, source_files
from alexnet.data.stats import compute_stats
from alexnet.data.writing import JpegSplitWriter, write_arrays, write_photos
from alexnet.errors import NoSpace, Terminated, UsageError

SHOWN_SKIPPED = 20         # skipped items listed in a summary; all of them are in the metadata
STORES = ("auto", "raw", "jpeg")
RAW_AUTO_LIMIT = 8 << 30   # store "auto": a photo source whose raw store would be bigger than this goes to jpeg
PHOTO_KINDS = ("folder", "csv", "ilsvrc")


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
    store: str = "raw"
    quality: int | None = None                                     # the jpeg store's JPEG quality
    stored_bytes: int = 0                                          # the images' bytes on disk, all splits

    def summary(self) -> str:
        verb = "reused the existing cache (input unchanged)" if self.reused else "prepared"
        h, w, c = self.shape
        total = sum(self.counts.values())
        store = f"jpeg (quality {self.quality})" if self.store == "jpeg" else "raw (uint8 arrays)"
        lines = [f"{verb}: {self.out}", f"  source: {self.source}",
                 "  images: " + ", ".join(f"{s} {n:,}" for s, n in self.counts.items()) + f" of {h}x{w}x{c}",
                 f"  store: {store}, {self.stored_bytes / 1e9:,.2f} GB"
                 + (f", {self.stored_bytes / total / 1e3:,.1f} KB per image" if total else ""),
                 f"  skipped: {len(self.skipped)}"]
        lines += [f"    {item}: {reason}" for item, reason in self.skipped[:SHOWN_SKIPPED]]
        if len(self.skipped) > SHOWN_SKIPPED:
            lines.append(f"    ... and {len(self.skipped) - SHOWN_SKIPPED} more (all in {cache.CACHE_METADATA})")
        lines.append(f"  time: {self.seconds:.1f} s")
        return "\n".join(lines)

    __str__ = summary


def prepare(spec: str, out: str, *, size: int = 256, workers: int | None = None, strict: bool = False,
            channels: int | None = None, seed: int = 0, data_root: str | None = None,
            image_column: str | None = None, label_column: str | None = None, store: str = "auto",
            quality: int = DEFAULT_QUALITY, progress: bool = True) -> PrepareReport:
    """Decode the source ``spec`` once into a cache folder ``out`` (see the module docstring).

    workers: decoding processes (None: one per CPU core). strict: any bad item stops the run
    (UsageError listing them all) and nothing is left at ``out``. store: "auto", "raw" or "jpeg";
    quality: the jpeg store's JPEG quality (1-100).
    """
    check_options(size, channels, workers, store, quality)
    source = resolve_source(spec, data_root, progress=progress)
    if source.kind == "cache":
        raise UsageError(f"{spec} is already a cache made by `alexnet prepare`; use it directly (--data {spec})")
    return prepare_source(source, out, size=size, workers=workers, strict=strict, channels=channels, seed=seed,
                          image_column=image_column, label_column=label_column, store=store, quality=quality,
                          progress=progress)


def check_options(size: int, channels: int | None, workers: int | None, store: str = "auto",
                  quality: int = DEFAULT_QUALITY) -> None:
    if size < 1:
        raise UsageError(f"--image-size must be a positive number of pixels, got {size}")
    if channels not in (None, 1, 3):
        raise UsageError(f"--channels must be 1 or 3, got {channels}")
    if workers is not None and workers < 0:
        raise UsageError(f"--workers must be >= 0, got {workers}")
    if store not in STORES:
        raise UsageError(f"--store must be one of {', '.join(STORES)}, got {store!r}")
    if not 1 <= quality <= 100:
        raise UsageError(f"--quality must be a JPEG quality from 1 to 100, got {quality}")


def check_strict(skipped: list, strict: bool, where: str, note: str = "nothing was written") -> None:
    """With strict, any skipped item is an error listing them all."""
    if strict and skipped:
        listed = "\n".join(f"  {item}: {reason}" for item, reason in skipped)
        raise UsageError(f"{where}: {len(skipped)} bad item(s), and --strict is set ({note}):\n{listed}\n"
                         f"Fix or remove them, or run without --strict to skip them.")


def prepare_source(source: Source, out: str, *, size: int = 256, workers: int | None = None, strict: bool = False,
                   channels: int | None = None, seed: int = 0, image_column: str | None = None,
                   label_column: str | None = None, store: str = "auto", quality: int = DEFAULT_QUALITY,
                   progress: bool = True) -> PrepareReport:
    """``prepare`` for an already resolved source (open_dataset uses this for folders, CSV files and ILSVRC)."""
    check_options(size, channels, workers, store, quality)
    start = time.perf_counter()
    out = os.path.abspath(out)
    data: Listing | Arrays | None = None
    if source.kind == "folder":
        data = list_image_folder(source.path)
    elif source.kind == "csv":
        data = list_csv(source.path, image_column, label_column)
    elif source.kind == "ilsvrc":
        from alexnet.data.ilsvrc import list_ilsvrc
        data = list_ilsvrc(source.path, source.name or None)
    photos = data is not None
    # archive members are not files: the archives (in extra_files) stand for them in the fingerprint
    files = ([p for items in data.splits.values() for p, _ in items if isinstance(p, str)] + data.extra_files) \
        if photos else source_files(source)
    if source.kind in ("folder", "ilsvrc") and _inside(out, source.path):
        raise UsageError(f"--out {out} is inside the data folder {source.path}; it would be read as data "
                         f"next time. Choose a folder outside it")
    store = resolve_store(store, source.kind, sum(map(len, data.splits.values())) if photos else 0, size, channels)
    options = {"size": size, "channels": channels, "seed": seed, "image_column": image_column,
               "label_column": label_column, "store": store, "quality": quality if store == "jpeg" else None}
    input_fingerprint = fingerprint(files)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with cache.locked(out):
        meta = cache.read_metadata(out, required=False)
        if meta and meta["fingerprint"] == input_fingerprint and _same_result(meta, options):
            report = report_from_metadata(out, meta, reused=True, seconds=time.perf_counter() - start)
            check_strict(report.skipped, strict, out, "the existing cache was made without --strict")
            return report
        resume_key = _resume_key(input_fingerprint, options) if store == "jpeg" else None
        with _out_of_space_is_usage(out), _say_how_to_resume(out, resume_key), \
                cache.staging(out, resume_key) as tmp:
            if photos:
                written = write_photos(data, tmp, size=size, channels=channels, seed=seed, store=store,
                                       quality=quality, known_shape=source.kind == "ilsvrc",
                                       workers=(os.cpu_count() or 1) if workers is None else workers,
                                       progress=progress)
            else:
                data = load_arrays(source)
                written = write_arrays(data, tmp, size=size, channels=channels, seed=seed, store=store,
                                       quality=quality)
            JpegSplitWriter.forget_progress(tmp)
            check_strict(written["skipped"], strict, source.path)
            stats = written.pop("stats") or compute_stats(np.load(cache.images_path(tmp, "train"), mmap_mode="r"))
            extra = {"wnids": list(data.wnids), "layout": data.layout} if source.kind == "ilsvrc" else {}
            meta = cache.write_metadata(tmp, {"source": data.description, "kind": source.kind, "path": source.path,
                                              "classes": list(data.classes), **extra, **written,
                                              "fingerprint": input_fingerprint, "options": options,
                                              "seconds": round(time.perf_counter() - start, 3)},
                                        stats.to_dict())
    return report_from_metadata(out, meta, reused=False, seconds=time.perf_counter() - start)


def resolve_store(store: str, kind: str, count: int, size: int, channels: int | None) -> str:
    """The store "auto" stands for (see the module docstring); "raw" and "jpeg" are kept."""
    if store != "auto":
        return store
    if kind == "ilsvrc":
        return "jpeg"
    raw_bytes = count * size * size * (channels or 3)
    return "jpeg" if kind in PHOTO_KINDS and raw_bytes > RAW_AUTO_LIMIT else "raw"


def _resume_key(input_fingerprint: str, options: dict) -> str:
    """What an interrupted jpeg-store prepare must match to be continued: the same input, options and format."""
    text = json.dumps([input_fingerprint, options, cache.FORMAT_VERSION], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _say_how_to_resume(out: str, resume_key: str | None):
    """On an interrupt, say where the jpeg store's progress was kept and how to continue it."""
    try:
        yield
    except (KeyboardInterrupt, Terminated):
        if resume_key is not None:
            print(f"alexnet prepare: interrupted; the images written so far are kept in "
                  f"{cache.partial_path(out, resume_key)}: the same command continues from there",
                  file=sys.stderr, flush=True)
        raise


@contextlib.contextmanager
def _out_of_space_is_usage(out: str):
    """A full disk or quota while writing the cache: a UsageError (the staging folder is already gone)."""
    try:
        yield
    except NoSpace as err:        # a file written whole (alexnet.util.atomic): the jpeg store's progress
        raise UsageError(f"{err}; free some space or choose --out on another disk") from None
    except OSError as err:
        if err.errno in cache.NO_SPACE:
            raise cache.no_space(err.filename or out, err) from None
        raise


def _same_result(meta: dict, options: dict) -> bool:
    """Whether the cache described by ``meta`` is what ``options`` would produce from the same input.

    Compared by outcome: a 28x28 dataset prepared with size 256 or 28 is the same cache, and so is
    channels=None (auto) and channels=1 when every image is grey.
    """
    stored = meta["options"]
    if any(stored.get(k) != options[k] for k in ("seed", "image_column", "label_column")):
        return False
    if cache.store_of(meta) != options["store"] or stored.get("quality") != options["quality"]:
        return False
    channels = options["channels"] or (1 if meta["grey"] else 3)
    (height, width), _ = shape_rule(meta["native_shape"], options["size"])
    return [height, width, channels] == list(meta["shape"])


def report_from_metadata(out: str, meta: dict, *, reused: bool, seconds: float) -> PrepareReport:
    store = cache.store_of(meta)
    where = jpeg_path if store == "jpeg" else cache.images_path
    paths = {s: where(out, s) for s in meta["splits"]}
    stored = sum(os.path.getsize(p) for p in paths.values() if os.path.exists(p))
    return PrepareReport(out, meta["source"], dict(meta["splits"]), tuple(meta["shape"]),
                         [tuple(s) for s in meta["skipped"]], paths, reused, seconds, store,
                         meta["options"].get("quality"), stored)


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([os.path.realpath(path), os.path.realpath(folder)]) == os.path.realpath(folder)
