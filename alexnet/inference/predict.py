"""``alexnet predict``: top-k classes for image files, preprocessed like training's evaluation.

Files are decoded by a pool of threads (Pillow releases the GIL while it decodes and resizes) a batch or two
ahead of the network, so decoding overlaps inference; results and skipped files come in input order.
"""
from __future__ import annotations

import io
import math
import os
import sys
import unicodedata
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np

from alexnet.inference import backends
from alexnet.data.decode import MAX_PIXELS, BadImage, decode_image, is_image_file
from alexnet.errors import UsageError
from alexnet.inference.evaluate import predict_probs
from alexnet.util.machine import usable_cpus
from alexnet.util.progress import Progress

ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
PROGRESS_FROM = 512          # images: a progress bar (stderr) for folders at least this large


def decode_threads() -> int:
    """Decoding threads: one per usable core (measured in docs/inference/: more gain nothing on 2 cores)."""
    return usable_cpus()


def expand_paths(inputs: list[str]) -> list[str]:
    """Files as given; folders expanded to the image files below them (sorted)."""
    paths: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            paths += sorted(str(p) for p in Path(item).rglob("*") if p.is_file() and is_image_file(p.name))
        elif os.path.exists(item):
            paths.append(item)
        else:
            raise UsageError(f"{item} does not exist")
    return paths


class Predictor:
    """A network loaded once with its own evaluation preprocessing: what ``alexnet predict`` runs for files
    and ``alexnet serve`` for uploads, one code path. ``checkpoint``: a checkpoint or an export
    (``alexnet.inference.backends.load``; ``backend`` None: the file's default)."""

    def __init__(self, checkpoint: str, *, ten_crop: bool | None = None, flip_view: bool | None = None,
                 device: str = "auto",
                 batch_size: int = 64, backend: str | None = None, images: int | None = None,
                 intra_op_threads: int = 0) -> None:
        self.loaded = backends.load(checkpoint, backend, device, images, intra_op_threads)   # images: for "auto"
        self.info = self.loaded.info
        self.preprocessing, self.classes = self.info.preprocessing, self.info.classes
        if ten_crop is None:      # as `alexnet eval`: the recipe decides (paper: 10 views [4], quick: the centre)
            ten_crop = self.info.ten_crop
        if flip_view is None:
            flip_view = self.info.flip_view
        self.ten_crop, self.flip_view, self.batch_size = ten_crop, flip_view and not ten_crop, batch_size
        self.transform = self.preprocessing.eval_transform(ten_crop, self.flip_view)

    @property
    def side(self) -> int:
        return self.preprocessing.image_size[0]

    def decode(self, path: str | io.BytesIO, max_pixels: int = MAX_PIXELS) -> np.ndarray:
        """uint8 (H, W, C) as the model's data was decoded [4]; raises BadImage with the reason."""
        return decode_image(path, channels=self.preprocessing.channels, size=self.side,
                            rule=self.preprocessing.decode_rule, max_pixels=max_pixels)

    def decode_bytes(self, data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
        """``decode`` for an image file's bytes (an upload): the same decoding, the same BadImage reasons."""
        return self.decode(io.BytesIO(data), max_pixels)

    def decode_or_reason(self, path: str) -> np.ndarray | str:
        """``decode(path)``, or the reason the file is unusable."""
        try:
            return self.decode(path)
        except BadImage as err:
            return str(err)

    def predict_paths(self, paths: list[str], k: int = 5, *, threads: int | None = None, ahead: int = 1,
                      progress: bool = False) -> Iterator[tuple[str, list[dict] | None, str | None]]:
        """(path, top-k, None) or (path, None, why it was skipped) for each path, in input order. ``threads``
        decode each batch's files in parallel, up to ``ahead`` batches ahead of the one the network runs."""
        chunks = [paths[i:i + self.batch_size] for i in range(0, len(paths), self.batch_size)]
        bar = Progress(len(chunks), desc="predict", enabled=progress)
        pool = ThreadPoolExecutor(max(1, threads or decode_threads()), thread_name_prefix="decode")
        pending: deque = deque()
        try:
            for index in range(len(chunks)):
                for upcoming in chunks[index + len(pending):index + ahead + 1]:
                    pending.append([pool.submit(self.decode_or_reason, path) for path in upcoming])
                chunk, decoded = chunks[index], [future.result() for future in pending.popleft()]
                tops = iter(self.topk([d for d in decoded if not isinstance(d, str)], k))
                for path, d in zip(chunk, decoded):
                    yield (path, None, d) if isinstance(d, str) else (path, next(tops), None)
                bar.update(1, n=len(chunk))
        finally:
            bar.close()
            pool.shutdown(wait=True, cancel_futures=True)

    def probabilities(self, images: list[np.ndarray] | np.ndarray):
        """Softmax (N, K) for decoded images, averaged over the views."""
        return predict_probs([self.loaded.model], np.stack(images) if isinstance(images, list) else images,
                             self.transform, batch_size=self.batch_size, device=self.loaded.device)

    def topk(self, images: list[np.ndarray] | np.ndarray, k: int = 5) -> list[list[dict]]:
        """For each decoded image, its ``k`` most probable classes: [{label, index, prob}], best first."""
        if len(images) == 0:
            return []
        values, indices = self.probabilities(images).topk(min(k, len(self.classes)), dim=1)
        return [[{"label": self.classes[i], "index": i, "prob": v if math.isfinite(v) else None}   # JSON's null
                 for v, i in zip(vals, idxs)] for vals, idxs in zip(values.tolist(), indices.tolist())]


def predict(checkpoint: str, inputs: list[str], *, topk: int = 5, ten_crop: bool | None = None,
            flip_view: bool | None = None, device: str = "auto",
            batch_size: int = 64, backend: str | None = backends.AUTO, threads: int | None = None,
            progress: bool | None = None) -> tuple[list[dict], list[tuple[str, str]]]:
    """Returns ([{path, topk: [{label, index, prob}]}], [(path, reason) skipped]); each skipped file is named on
    stderr with the reason. ``backend`` auto: ``backends.auto_backend`` for this many files; ``progress`` None:
    a bar for PROGRESS_FROM files or more."""
    paths = expand_paths(inputs)
    predictor = Predictor(checkpoint, ten_crop=ten_crop, flip_view=flip_view, device=device, batch_size=batch_size, backend=backend,
                          images=len(paths))
    results, skipped = [], []
    show = len(paths) >= PROGRESS_FROM if progress is None else progress
    for path, top, reason in predictor.predict_paths(paths, topk, threads=threads, progress=show):
        if reason is None:
            results.append({"path": path, "topk": top})
        else:
            skipped.append((path, reason))
            print(f"skipped {printable(path)}: {printable(reason)}", file=sys.stderr)
    broken = sum(any(t["prob"] is None for t in r["topk"]) for r in results)
    if broken:
        print(f"warning: {printable(checkpoint)} gives probabilities that are not finite (NaN or infinity) for "
              f"{broken} of {len(results)} image(s), shown as null (n/a); its weights are broken (a diverged run?)",
              file=sys.stderr)
    return results, skipped


def printable(text: str) -> str:
    """``text`` with its control characters (newlines, carriage returns, escape sequences) written as Python
    escapes: a file name cannot start a line of its own or rewrite the terminal."""
    return "".join(ESCAPES.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}")
                   if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)


def format_predictions(results: list[dict]) -> str:
    """One line an image: ``path: label prob, ...``, names escaped (``printable``), a non-finite prob as n/a."""
    lines = []
    for r in results:
        best = ", ".join(f"{printable(str(t['label']))} {'n/a' if t['prob'] is None else format(t['prob'], '.3f')}"
                         for t in r["topk"])
        lines.append(f"{printable(r['path'])}: {best}")
    return "\n".join(lines)
