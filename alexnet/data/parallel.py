"""Running the decoder over many files in a process pool, results in input order, bad files as reasons.

An item is a path, or anything with ``read() -> bytes`` (an ILSVRC archive member read in place,
alexnet.data.ilsvrc.TarMember); its ``str`` names it in reports.
"""
from __future__ import annotations

import ctypes
import io
import os
import signal
import sys
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterator

import numpy as np
from tqdm import tqdm

from alexnet.data.decode import BadImage, decode_image, probe_image

CHUNK = 32                 # files per task sent to a worker process
ENCODE_CHUNK = 128         # ... when encoding for the jpeg store (each task also returns its statistics sums)
PR_SET_PDEATHSIG = 1       # linux/prctl.h


def die_with_parent(parent: int) -> None:
    """Worker initializer: end this worker when the process that started it ends (killed included), so no
    decoder outlives ``prepare`` holding its pipes open; Ctrl-C is the parent's to handle (it stops the pool)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)     # not the parent's handler, inherited by fork
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:                        # the parent ended before prctl took effect
        os._exit(1)


def probe_chunk(paths: list[str]) -> list:
    """A Probe, or the reason it is unusable, for each path."""
    return [safely(probe_image, path) for path in paths]


def decode_chunk(items: list, shape: tuple[int, int, int], size: int | None, with_sums: bool) -> tuple[list, object]:
    """For the raw store: (a uint8 ``shape`` array, or the reason it is unusable, for each item; the StatsSums of
    those arrays when ``with_sums``, else None)."""
    return _chunk(items, shape, size, with_sums, None)


def encode_chunk(items: list, shape: tuple[int, int, int], size: int | None, quality: int,
                 with_sums: bool) -> tuple[list, object]:
    """For the jpeg store: (the JPEG bytes, or the reason it is unusable, for each item; the StatsSums of the
    decoded JPEGs, the pixels training will see, when ``with_sums``, else None)."""
    return _chunk(items, shape, size, with_sums, quality)


def _chunk(items: list, shape: tuple[int, int, int], size: int | None, with_sums: bool,
           quality: int | None) -> tuple[list, object]:
    """Decode each item to ``shape`` (and with a ``quality``, encode it as JPEG); sum the statistics of the pixels
    stored (for JPEG: decoded again) in this worker, so the main process never reads the images back."""
    from alexnet.data.jpeg_store import decode_pil, encode
    from alexnet.data.stats import StatsSums

    results, kept = [], []
    for item in items:
        pixels = safely(decode_image, item, channels=shape[2], size=size)
        if isinstance(pixels, str):
            results.append(pixels)
        elif pixels.shape != tuple(shape):
            results.append(f"decoded to {pixels.shape}, expected {tuple(shape)} (its header size was wrong)")
        elif quality is None:
            results.append(pixels)
            kept.append(pixels)
        else:
            blob = encode(pixels, quality)
            results.append(blob)
            if with_sums:
                kept.append(decode_pil(blob, shape[2]))
    sums = StatsSums(*shape) if with_sums else None
    if sums is not None and kept:
        sums.add(np.stack(kept))
    return results, sums


def safely(func: Callable, path, **kw):
    """func(path) or the reason it failed: a bad file never stops the run. ``path``: a file path, or an
    item with ``read()`` (its bytes are read here, in the worker)."""
    try:
        if hasattr(path, "read"):
            try:
                path = io.BytesIO(path.read())
            except OSError as err:
                return f"cannot read it from its archive: {err}"
        return func(path, **kw)
    except BadImage as err:
        return str(err)
    except Exception as err:   # a decoder bug on one file must not end a long run; it is reported
        return f"unexpected decoder error ({type(err).__name__}: {err})"


def run_chunks(func: Callable, paths: list, args: tuple, workers: int, desc: str, progress: bool, *,
               chunk: int = CHUNK, on_extra: Callable | None = None, done: int = 0) -> Iterator:
    """func(chunk, *args) over chunks of ``paths`` in a process pool; yields per-path results in order.

    A ``func`` that returns (results, extra) has each chunk's extra passed to ``on_extra``, in order, before the
    chunk's first result is yielded. ``done``: items handled before (a resumed run), shown in the progress bar.
    """
    chunks = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]

    def unpack(returned):
        if isinstance(returned, tuple):
            results, extra = returned
            if on_extra is not None and extra is not None:
                on_extra(extra)
            return results
        return returned

    tty = sys.stderr.isatty()
    with tqdm(total=len(paths) + done, initial=done, desc=desc, unit="img", disable=not progress or not paths,
              file=sys.stderr, ascii=not tty, mininterval=0.2 if tty else 10.0) as bar:
        if workers <= 1 or len(chunks) <= 1:
            for part in chunks:
                results = unpack(func(part, *args))
                bar.update(len(part))
                yield from results
            return
        pool = ProcessPoolExecutor(max_workers=min(workers, len(chunks)), initializer=die_with_parent,
                                   initargs=(os.getpid(),))
        try:
            pending, remaining = deque(), iter(chunks)
            for part in remaining:
                pending.append(pool.submit(func, part, *args))
                if len(pending) >= 2 * workers:   # bounded: at most 2 chunks per worker in flight
                    break
            while pending:
                try:
                    results = unpack(pending.popleft().result())
                except BrokenProcessPool:
                    raise RuntimeError("a decoding process died (out of memory?); run again with fewer "
                                       "--workers") from None
                if (part := next(remaining, None)) is not None:
                    pending.append(pool.submit(func, part, *args))
                bar.update(len(results))
                yield from results
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
