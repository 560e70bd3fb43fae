"""Running the decoder over many files in a process pool, results in input order, bad files as reasons."""
from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterator

from tqdm import tqdm

from alexnet.data.decode import BadImage, decode_image, probe_image

CHUNK = 32                 # files per task sent to a worker process
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


def decode_chunk(paths: list[str], channels: int, size: int | None) -> list:
    """A uint8 (H, W, C) array, or the reason it is unusable, for each path."""
    return [safely(decode_image, path, channels=channels, size=size) for path in paths]


def safely(func: Callable, path: str, **kw):
    """func(path) or the reason it failed: a bad file never stops the run."""
    try:
        return func(path, **kw)
    except BadImage as err:
        return str(err)
    except Exception as err:   # a decoder bug on one file must not end a long run; it is reported
        return f"unexpected decoder error ({type(err).__name__}: {err})"


def run_chunks(func: Callable, paths: list[str], args: tuple, workers: int, desc: str,
               progress: bool) -> Iterator:
    """func(chunk, *args) over chunks of ``paths`` in a process pool; yields per-path results in order."""
    chunks = [paths[i:i + CHUNK] for i in range(0, len(paths), CHUNK)]
    tty = sys.stderr.isatty()
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress or not paths, file=sys.stderr,
              ascii=not tty, mininterval=0.2 if tty else 10.0) as bar:
        if workers <= 1 or len(chunks) <= 1:
            for chunk in chunks:
                results = func(chunk, *args)
                bar.update(len(chunk))
                yield from results
            return
        pool = ProcessPoolExecutor(max_workers=min(workers, len(chunks)), initializer=die_with_parent,
                                   initargs=(os.getpid(),))
        try:
            pending, remaining = deque(), iter(chunks)
            for chunk in remaining:
                pending.append(pool.submit(func, chunk, *args))
                if len(pending) >= 2 * workers:   # bounded: at most 2 chunks per worker in flight
                    break
            while pending:
                try:
                    results = pending.popleft().result()
                except BrokenProcessPool:
                    raise RuntimeError("a decoding process died (out of memory?); run again with fewer "
                                       "--workers") from None
                if (chunk := next(remaining, None)) is not None:
                    pending.append(pool.submit(func, chunk, *args))
                bar.update(len(results))
                yield from results
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
