"""Writing a cache's images (``alexnet prepare``'s inner loops): photo sources decoded (and for the jpeg store
encoded) in worker processes, small-image sources from memory; each returns the cache metadata it determined.

The rules (shape, channels, held-out order, the stores) are alexnet.data.preparation's docstring; the file layout
alexnet.data.cache's and alexnet.data.jpeg_store's. The statistics of what is stored are summed as it is written
(StatsSums, exact), so nothing reads the cache back.
"""
from __future__ import annotations

import contextlib

import numpy as np

from alexnet.data import cache
from alexnet.data.decode import convert_channels, fit_arrays, shape_rule
from alexnet.data.holdout import stored_order
from alexnet.data.jpeg_store import JpegSplitWriter, decode_pil, encode
from alexnet.data.listing import Listing
from alexnet.data.parallel import CHUNK, ENCODE_CHUNK, decode_chunk, encode_chunk, probe_chunk, run_chunks
from alexnet.data.resolve import Arrays
from alexnet.data.stats import StatsSums
from alexnet.errors import UsageError


def write_arrays(data: Arrays, tmp: str, *, size: int, channels: int | None, seed: int, store: str,
                  quality: int) -> dict:
    native = list(data.splits["train"][0].shape[1:3])
    splits = {s: (fit_arrays(convert_channels(images, channels or images.shape[-1]), size), labels)
              for s, (images, labels) in data.splits.items()}
    holdout = "val" not in splits
    if holdout:
        images, labels = splits["train"]
        order = stored_order(labels, seed)
        splits["train"] = (images[order], labels[order])
    stats = None
    for split, (images, labels) in splits.items():
        if store == "raw":
            cache.save_split(tmp, split, images, labels)
            continue
        writer, sums = JpegSplitWriter(tmp, split, cache.labels_path(tmp, split)), StatsSums(*images.shape[1:])
        for image, label in zip(images, labels):
            blob = encode(image, quality)
            writer.append(blob, int(label))
            if split == "train":
                sums.add(decode_pil(blob, images.shape[-1])[None])
        writer.close()
        stats = sums.result() if split == "train" else stats
    shape = splits["train"][0].shape[1:]
    return {"splits": {s: len(v[1]) for s, v in splits.items()}, "shape": list(shape), "store": store,
            "skipped": [], "holdout": {"seed": seed} if holdout else None,
            "grey": data.splits["train"][0].shape[-1] == 1, "native_shape": native, "stats": stats}


def write_photos(data: Listing, tmp: str, *, size: int, channels: int | None, seed: int, store: str, quality: int,
                  known_shape: bool, workers: int, progress: bool) -> dict:
    """Decode (and for the jpeg store encode) every image of ``data`` into the cache in ``tmp``.

    known_shape (ILSVRC-2012): no probing pass; photographs of varied sizes, 3 channels unless ``channels``.
    """
    skipped = list(data.skipped)
    usable: dict[str, list[tuple]] = {split: list(items) for split, items in data.splits.items()}
    shapes, all_grey = set(), False
    if not known_shape:
        entries = [(split, item, label) for split, items in data.splits.items() for item, label in items]
        probes = run_chunks(probe_chunk, [item for _, item, _ in entries], (), workers, "checking", progress)
        usable = {split: [] for split in data.splits}
        all_grey = True
        with contextlib.closing(probes):
            for (split, item, label), probe in zip(entries, probes):
                if isinstance(probe, str):
                    skipped.append((str(item), probe))
                    continue
                usable[split].append((item, label))
                shapes.add((probe.height, probe.width))
                all_grey &= probe.grey
    if not usable.get("train"):
        raise UsageError(f"{data.description}: no usable training images ({len(skipped)} skipped"
                         + (f"; e.g. {skipped[0][0]}: {skipped[0][1]}" if skipped else "") + ")")
    native = next(iter(shapes)) if len(shapes) == 1 else None
    (height, width), resize = shape_rule(native, size)
    shape = (height, width, channels or (1 if all_grey else 3))
    holdout = "val" not in usable
    if holdout:
        order = stored_order(np.array([label for _, label in usable["train"]]), seed)
        usable["train"] = [usable["train"][i] for i in order]
    counts, sums = {}, StatsSums(*shape)
    for split, items in usable.items():
        counts[split], bad = write_split(tmp, split, items, shape, resize, workers, progress, store, quality,
                                          sums if split == "train" else None)
        skipped += bad
    if counts["train"] == 0:
        raise UsageError(f"{data.description}: none of the training images could be decoded "
                         f"(e.g. {skipped[-1][0]}: {skipped[-1][1]})")
    return {"splits": counts, "shape": list(shape), "store": store, "skipped": [list(s) for s in skipped],
            "holdout": {"seed": seed} if holdout else None, "grey": all_grey,
            "native_shape": list(native) if native else None, "stats": sums.result()}


def write_split(tmp: str, split: str, items: list[tuple], shape: tuple[int, int, int], resize: int | None,
                 workers: int, progress: bool, store: str, quality: int,
                 sums: StatsSums | None) -> tuple[int, list[tuple[str, str]]]:
    """Decode ``items`` in order into the cache's ``split``; returns (rows written, skipped).

    raw: the decoded arrays are appended to the split's .npy file. jpeg: the workers encode them. Either way the
    workers add what is stored (for jpeg, the decoded JPEGs) to the statistics ``sums`` (train), so no pass reads
    the cache back.
    """
    bad = []
    paths = [item for item, _ in items]
    on_extra = sums.merge if sums is not None else None
    if store == "jpeg":
        writer = JpegSplitWriter(tmp, split, cache.labels_path(tmp, split))
        results = run_chunks(encode_chunk, paths, (shape, resize, quality, sums is not None), workers,
                             f"encoding {split}", progress, chunk=ENCODE_CHUNK, on_extra=on_extra)
    else:
        writer = cache.SplitWriter(tmp, split, len(items), shape)
        results = run_chunks(decode_chunk, paths, (shape, resize, sums is not None), workers, f"decoding {split}",
                             progress, chunk=ENCODE_CHUNK if sums is not None else CHUNK, on_extra=on_extra)
    try:
        with contextlib.closing(results):
            for (item, label), result in zip(items, results):
                if isinstance(result, str):
                    bad.append((str(item), result))
                else:
                    writer.append(result, label)
    except BaseException:
        writer.discard()
        raise
    return writer.close(), bad
