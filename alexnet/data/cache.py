"""The cache format of ``alexnet prepare``: its file names, the one reader, and the writer's pieces.

Cache format (a folder, FORMAT_VERSION 1), in one of two stores (metadata "store"; absent means raw):
  raw:  <split>_images.npy   uint8 (N, H, W, C), one per split present (train, and val/test when the source has
                             them), memory-mapped when read
  jpeg: <split>_jpeg.bin + <split>_index.npy   each image's JPEG bytes, back to back (alexnet.data.jpeg_store)
  <split>_labels.npy   int64 (N,)
  alexnet-cache.json   classes, source, split sizes, shape, store, skipped items with reasons, train statistics
                       (DatasetStats.to_dict()), the input's fingerprint, the options, the format version;
                       ILSVRC-2012 sources add "wnids" (index = label) and their layout.
When the source has no val split, train rows are stored in the order of ``holdout.stored_order``: the
LAST ``holdout_count(N, fraction)`` rows are the held-out validation set for any fraction, so both parts
are slices of one memory map. Statistics are over the whole train split.

A cache is written into a temporary folder next to its destination (``staging``) and renamed into
place at the end, so an interrupted write leaves nothing there (the jpeg store keeps its progress in a
hidden ``.<name>.partial-<key>`` folder beside it, which the next prepare of the same input continues);
``locked`` keeps two processes from writing one cache at once. What goes into a cache (decoding, the shape rule, reuse) is
alexnet.data.preparation's business; this module knows only how a cache is laid out.
"""
from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil
import tempfile
from array import array
from typing import Iterator

import numpy as np

from alexnet.errors import Terminated, UsageError
from alexnet.util.atomic import FULL

FORMAT_VERSION = 1
CACHE_METADATA = "alexnet-cache.json"


def images_path(folder: str, split: str) -> str:
    return os.path.join(folder, f"{split}_images.npy")


def labels_path(folder: str, split: str) -> str:
    return os.path.join(folder, f"{split}_labels.npy")


def is_cache(folder: str) -> bool:
    """Whether ``folder`` holds a cache (its metadata file; readable or not)."""
    return os.path.isfile(os.path.join(folder, CACHE_METADATA))


# ---- reading -------------------------------------------------------------------------------

def read_metadata(folder: str, *, required: bool = True) -> dict | None:
    """The metadata of the cache in ``folder``, or what to do when there is none usable.

    A metadata file that is missing, unreadable, not a JSON object, or of another format version is
    "no usable cache". ``required=True`` (opening a cache to read it): that is a UsageError naming the
    problem and saying to run ``alexnet prepare`` again. ``required=False`` (prepare deciding whether
    what is at its destination can be reused): that is None, never an error.
    """
    path = os.path.join(folder, CACHE_METADATA)
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as err:
        if not required:
            return None
        raise UsageError(f"{path}: damaged cache metadata ({err}); run `alexnet prepare` again") from None
    if not isinstance(meta, dict):
        if not required:
            return None
        raise UsageError(f"{path}: damaged cache metadata (a JSON {type(meta).__name__}, not an object); run "
                         f"`alexnet prepare` again")
    if meta.get("format_version") != FORMAT_VERSION:
        if not required:
            return None
        raise UsageError(f"{folder}: cache format {meta.get('format_version')}, this alexnet reads "
                         f"{FORMAT_VERSION}; run `alexnet prepare` again")
    return meta


def store_of(meta: dict) -> str:
    """The store of a cache: "raw" or "jpeg" (caches made before the jpeg store have no "store" key)."""
    return meta.get("store", "raw")


def load_split(folder: str, meta: dict, split: str) -> tuple:
    """(images, labels) of a stored split, checked against ``meta``; UsageError if damaged. Images: the raw
    store's uint8 array memory-mapped read-only, or the jpeg store's ``JpegImages`` (decoded when read)."""
    if store_of(meta) == "jpeg":
        from alexnet.data.jpeg_store import JpegImages

        images = JpegImages.open(folder, split, meta["splits"][split], meta["shape"])
        try:
            labels = np.load(labels_path(folder, split))
        except (OSError, ValueError) as err:
            raise UsageError(f"{folder}: damaged cache, cannot read the {split} labels ({err}); run `alexnet "
                             f"prepare` again") from None
        if labels.shape != (len(images),):
            raise UsageError(f"{labels_path(folder, split)}: damaged cache: {labels.shape} labels for {len(images)} "
                             f"images; run `alexnet prepare` again")
        return images, labels
    images_file, labels_file = images_path(folder, split), labels_path(folder, split)
    try:
        images = np.load(images_file, mmap_mode="r")
        labels = np.load(labels_file)
    except (OSError, ValueError) as err:
        raise UsageError(f"{folder}: damaged cache, cannot read the {split} arrays ({err}); run `alexnet "
                         f"prepare` again") from None
    expected = (meta["splits"][split], *meta["shape"])
    if images.shape != expected or images.dtype != np.uint8 or labels.shape != (expected[0],):
        raise UsageError(f"{images_file}: damaged cache: {images.dtype} {images.shape} and {labels.shape} labels, "
                         f"the metadata says uint8 {expected}; run `alexnet prepare` again")
    return images, labels


# ---- writing -------------------------------------------------------------------------------

def save_split(folder: str, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Store a split held in memory."""
    np.save(images_path(folder, split), np.ascontiguousarray(images))
    np.save(labels_path(folder, split), labels.astype(np.int64))


class SplitWriter:
    """A split written row by row into ``<split>_images.npy`` of ``capacity`` rows; ``close`` cuts off the rows never
    written and stores the labels, and returns the rows kept. The file's blocks are allocated up front (a full disk
    is an error before any decoding), then rows are appended with plain writes, not through a memory map, so what
    was written is the kernel's page cache to write back, never this process's memory (at 100k images a mapped
    writer held 20 GB resident)."""

    def __init__(self, folder: str, split: str, capacity: int, shape: tuple[int, int, int]) -> None:
        self.path, self.labels_path = images_path(folder, split), labels_path(folder, split)
        self.capacity, self.row_bytes = capacity, int(np.prod(shape))
        sized = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.uint8, shape=(capacity, *shape))
        offset = sized.offset                   # where the rows start, after the .npy header
        del sized                               # nothing was touched: the file is sparse until reserved
        reserve(self.path)
        self.file = open(self.path, "r+b")
        self.file.seek(offset)
        self.labels = array("q")

    def append(self, image: np.ndarray, label: int) -> None:
        self.file.write(np.ascontiguousarray(image, dtype=np.uint8).data)
        self.labels.append(label)

    def discard(self) -> None:
        """Close the file after a failure (the staging folder it is in is removed)."""
        self.file.close()

    def close(self) -> int:
        self.file.close()
        if len(self.labels) < self.capacity:
            _shrink_npy(self.path, len(self.labels))
        np.save(self.labels_path, np.frombuffer(self.labels, np.int64))
        return len(self.labels)


NO_SPACE = FULL            # ENOSPC, EDQUOT: one set for every writer (alexnet.util.atomic)


def reserve(path: str) -> None:
    """Allocate the disk blocks of the (sparse) file ``path`` now, so a full disk is an error here
    (UsageError) rather than a SIGBUS when a memory-mapped write reaches a block that cannot exist."""
    size = os.path.getsize(path)
    try:
        fd = os.open(path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)
    except AttributeError:              # no posix_fallocate on this platform
        return
    except OSError as err:
        if err.errno in NO_SPACE:
            raise no_space(path, err, size) from None
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise


def no_space(path: str, err: OSError, needed: int | None = None) -> UsageError:
    """The UsageError for a write to ``path`` that found its disk (or quota) full."""
    folder = os.path.dirname(path)
    try:
        free = f", {shutil.disk_usage(folder).free / 1e6:,.0f} MB free there"
    except OSError:
        free = ""
    need = f": {needed / 1e6:,.0f} MB needed{free}" if needed is not None else free
    return UsageError(f"no space left on device while writing {path}{need} ({os.strerror(err.errno)}); "
                      f"free some space or choose --out on another disk (nothing was kept)")


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


def write_metadata(folder: str, fields: dict, stats: dict) -> dict:
    """Write the metadata file: the format keys, ``fields``, then ``stats`` on one line. Returns the metadata."""
    meta = {"format": "alexnet-cache", "format_version": FORMAT_VERSION, **fields}
    text = json.dumps(meta, indent=1)[:-2] + ',\n "stats": ' + json.dumps(stats) + "\n}\n"
    with open(os.path.join(folder, CACHE_METADATA), "w") as f:
        f.write(text)
    return meta


def check_replaceable(out: str) -> None:
    """UsageError unless ``out`` is absent, an empty folder or a cache: the writer never replaces anything else."""
    if os.path.isfile(out):
        raise UsageError(f"--out {out} is a file; give a folder path for the cache")
    if os.path.isdir(out) and os.listdir(out) and not is_cache(out):
        raise UsageError(f"--out {out} exists and is not an alexnet cache; refusing to overwrite it, "
                         f"choose a new folder")


@contextlib.contextmanager
def staging(out: str, resume_key: str | None = None) -> Iterator[str]:
    """A temporary folder next to ``out`` to write a cache into: on success it replaces ``out`` (an old cache
    there included), on any error it is removed and ``out`` is untouched.

    With ``resume_key`` (the jpeg store: its writers commit their progress, alexnet.data.jpeg_store) the folder
    is ``.<name>.partial-<key>``: an interrupt (SIGINT, SIGTERM) keeps it, and the next prepare with the same key
    (same input, same options) continues in it; partial folders of other keys are stale and removed.
    """
    check_replaceable(out)
    if resume_key is None:
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=os.path.dirname(out))
    else:
        tmp = partial_path(out, resume_key)
        for stale in glob.glob(partial_path(out, "*")):
            if stale != tmp:
                shutil.rmtree(stale, ignore_errors=True)
        os.makedirs(tmp, exist_ok=True)
    try:
        os.chmod(tmp, 0o755)   # mkdtemp's 0700 would hide a shared cache from the rest of a team
        yield tmp
        _install(tmp, out)
    except (KeyboardInterrupt, Terminated):
        if resume_key is None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def partial_path(out: str, key: str) -> str:
    """Where a resumable prepare of ``out`` keeps its progress (``key``: "*" matches them all)."""
    return os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.partial-{key}")


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
def locked(out: str) -> Iterator[None]:
    """An exclusive lock on ``out`` between processes (torchrun ranks opening one folder): one prepares."""
    try:
        import fcntl
    except ImportError:          # not POSIX: no lock
        yield
        return
    lock_path = os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.lock")
    while True:     # removed by its holder when done (nothing left behind): a waiter then locks a fresh one
        f = open(lock_path, "a")
        fcntl.flock(f, fcntl.LOCK_EX)
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(f.fileno()), os.stat(lock_path)):
                break
        f.close()
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_path)     # while still held, so no other process holds a lock on the same path
        f.close()
