"""Writing a cache's images (``alexnet prepare``'s inner loops): photo sources decoded (and for the jpeg store
encoded) in worker processes, small-image sources from memory; each returns the cache metadata it determined.

The rules (shape, channels, held-out order, the stores) are alexnet.data.preparation's docstring; the file layout
alexnet.data.cache's and alexnet.data.jpeg_store's. The statistics of what is stored are summed as it is written
(StatsSums, exact), so nothing reads the cache back.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys

import numpy as np

from alexnet.util.atomic import write_atomically
from alexnet.data import cache
from alexnet.data.decode import convert_channels, fit_arrays, shape_rule
from alexnet.data.holdout import stored_order
from alexnet.data.jpeg_store import decode_pil, encode, index_path, jpeg_path
from alexnet.data.listing import Listing
from alexnet.data.parallel import CHUNK, ENCODE_CHUNK, decode_chunk, encode_chunk, probe_chunk, run_chunks
from alexnet.data.resolve import Arrays
from alexnet.data.stats import StatsSums
from alexnet.errors import UsageError

COMMIT = 32 * ENCODE_CHUNK    # the jpeg store commits its progress every 4,096 images (a multiple of the chunk)


class JpegSplitWriter:
    """A split of the jpeg store, written image by image: ``append(blob, label)``, then ``close(sums)``. Each
    image's end offset and label go to a records file beside the bytes (16 bytes an image, read back once by
    ``close`` to write the index and labels), so nothing grows in memory.

    Resumable: ``commit(consumed, skipped, sums)`` fsyncs the bytes and the records, then replaces one progress
    file atomically: the state (items of the split's list handled, images and bytes kept, the skipped items) and
    the train statistics' sums at that point, together, so they can never disagree. A writer opened on the same
    folder after an interrupt cuts the files back to the last commit and continues from there. ``done``: the split
    was closed before the interrupt (its index and labels are written; ``close`` saved its final sums)."""

    def __init__(self, folder: str, split: str, labels_file: str) -> None:
        self.folder, self.split, self.labels_file = folder, split, labels_file
        self.data_path, self.records_path = jpeg_path(folder, split), os.path.join(folder, f".{split}_records.bin")
        self.progress_path = os.path.join(folder, f".{split}_progress.npz")
        self.state, self.saved_sums = _read_progress(self.progress_path)
        if self.state and not self.state["done"] and not (os.path.exists(self.data_path)
                                                          and os.path.exists(self.records_path)):
            self.state = None                        # a partial folder missing its files: start the split again
        if self.state is None:
            self.state, self.saved_sums = {"consumed": 0, "images": 0, "bytes": 0, "skipped": [], "done": False}, None
            self.file, self.records = open(self.data_path, "wb"), open(self.records_path, "wb")
        elif not self.state["done"]:                 # continue after the last commit: cut what came after it
            self.file, self.records = open(self.data_path, "r+b"), open(self.records_path, "r+b")
            self.file.truncate(self.state["bytes"])
            self.records.truncate(self.state["images"] * 16)
            self.file.seek(0, os.SEEK_END)
            self.records.seek(0, os.SEEK_END)
        self.size, self.count = self.state["bytes"], self.state["images"]

    done = property(lambda self: self.state["done"])
    consumed = property(lambda self: self.state["consumed"])
    skipped = property(lambda self: [tuple(s) for s in self.state["skipped"]])

    def restore(self, sums: StatsSums) -> None:
        """Add the statistics' sums saved with the progress of an interrupted run to ``sums``."""
        if self.saved_sums is not None:
            sums.merge(self.saved_sums)

    def append(self, blob: bytes, label: int) -> None:
        self.file.write(blob)
        self.size += len(blob)
        self.count += 1
        self.records.write(np.array([self.size, label], np.int64).tobytes())

    def commit(self, consumed: int, skipped: list, sums: StatsSums | None = None) -> None:
        """Make everything appended durable; ``consumed`` items of the split handled, ``skipped`` of them bad."""
        for f in (self.file, self.records):
            f.flush()
            os.fsync(f.fileno())
        self._save(sums, consumed=consumed, images=self.count, bytes=self.size, skipped=[list(s) for s in skipped])

    def discard(self) -> None:
        """Close the files after a failure or an interrupt (what was committed stays for a resume)."""
        if not self.done:
            self.file.close()
            self.records.close()

    def close(self, sums: StatsSums | None = None) -> int:
        """Write the index and labels; returns the number of images. Idempotent after a resume."""
        if not self.done:
            self.file.close()
            self.records.close()
            pairs = np.fromfile(self.records_path, np.int64).reshape(-1, 2)      # (end, label) per image
            np.save(index_path(self.folder, self.split), np.concatenate([[0], pairs[:, 0]]))
            np.save(self.labels_file, pairs[:, 1].copy())
            self._save(sums, images=self.count, done=True)
        return self.state["images"]

    def _save(self, sums: StatsSums | None, **changes) -> None:
        """The progress file: the state and the sums in one atomic replace."""
        self.state.update(changes)
        buffer = io.BytesIO()
        np.savez(buffer, state=json.dumps(self.state), **(sums.to_arrays() if sums is not None else {}))
        write_atomically(self.progress_path, buffer.getvalue())

    @staticmethod
    def forget_progress(folder: str) -> None:
        """Remove the progress files of every split, once the cache is complete."""
        for name in os.listdir(folder):
            if name.startswith(".") and name.endswith(("_records.bin", "_progress.npz")):
                os.remove(os.path.join(folder, name))


def _read_progress(path: str) -> tuple[dict | None, StatsSums | None]:
    """(state, sums or None) of a progress file; (None, None) when there is none or it cannot be read."""
    try:
        with np.load(path) as saved:
            return json.loads(str(saved["state"])), StatsSums.from_arrays(saved) if "image_sum" in saved else None
    except (OSError, ValueError, KeyError):
        return None, None


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
        writer.restore(sums)                 # a split closed before an interrupt is kept, with its sums
        for image, label in ([] if writer.done else zip(images, labels)):   # never committed midway: all or none
            blob = encode(image, quality)
            writer.append(blob, int(label))
            if split == "train":
                sums.add(decode_pil(blob, images.shape[-1])[None])
        writer.close(sums)
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

    raw: the decoded arrays are appended to the split's .npy file. jpeg: the workers encode them, and every
    ``COMMIT`` images the writer commits its progress (at a chunk's end, where ``sums`` holds exactly the images
    written), so an interrupted prepare continues from there. Either way the workers add what is stored (for
    jpeg, the decoded JPEGs) to the statistics ``sums`` (train), so no pass reads the cache back.
    """
    on_extra = sums.merge if sums is not None else None
    if store == "jpeg":
        writer = JpegSplitWriter(tmp, split, cache.labels_path(tmp, split))
        if sums is not None:
            writer.restore(sums)
        if writer.done:
            return writer.close(sums), writer.skipped
        start, bad = writer.consumed, writer.skipped
        if start and progress:
            print(f"{split}: continuing an interrupted prepare after {start:,} of {len(items):,} images",
                  file=sys.stderr, flush=True)
        results = run_chunks(encode_chunk, [item for item, _ in items[start:]], (shape, resize, quality,
                             sums is not None), workers, f"encoding {split}", progress, chunk=ENCODE_CHUNK,
                             on_extra=on_extra, done=start)
    else:
        start, bad = 0, []
        writer = cache.SplitWriter(tmp, split, len(items), shape)
        results = run_chunks(decode_chunk, [item for item, _ in items], (shape, resize, sums is not None), workers,
                             f"decoding {split}", progress, chunk=ENCODE_CHUNK if sums is not None else CHUNK,
                             on_extra=on_extra)
    try:
        with contextlib.closing(results):
            for handled, ((item, label), result) in enumerate(zip(items[start:], results), start + 1):
                if isinstance(result, str):
                    bad.append((str(item), result))
                else:
                    writer.append(result, label)
                if store == "jpeg" and (handled - start) % COMMIT == 0:
                    writer.commit(handled, bad, sums)
    except BaseException:
        writer.discard()
        raise
    return (writer.close(sums) if store == "jpeg" else writer.close()), bad
