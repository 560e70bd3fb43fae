"""The one way alexnet writes a file: whole or not at all, and a full disk said in a sentence.

``atomic_path(path)`` yields a hidden temporary path beside ``path`` (same folder, so same file system); when the
block ends without an exception the file gets the mode the umask gives every other output, is fsynced when
``durable`` (checkpoints, exports: what a crash must not lose) and is renamed onto ``path`` with ``os.replace``;
on any exception, an interrupt included, the temporary file is removed and ``path`` keeps its earlier contents.
An interrupt (SIGINT's KeyboardInterrupt, SIGTERM's Terminated) that a writer turned into an error of its own
(torch's zip writer: "unexpected pos", the interrupt as its context) leaves as the interrupt (``interrupt_in``).
A full disk or quota anywhere in the chain (``no_space``) becomes ``NoSpace`` (exit 1) naming ``path``.

Every writer of a single file goes through it: checkpoints (``alexnet.checkpoint.save``), exports, JSON reports
and tables (``write_atomically``), figures, feature arrays, downloads. The data cache, a folder, is finished in
a hidden folder and renamed the same way (``alexnet.data.cache``).
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from alexnet.errors import NoSpace, UsageError

FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def no_space(err: BaseException | None, folder: str | os.PathLike | None = None) -> bool:
    """ENOSPC or EDQUOT anywhere in ``err``'s chain; with ``folder``, also a writer that hides the errno (torch's
    zip writer: "unexpected pos") while ``folder``'s file system has under 64 MiB free."""
    seen, depth = err, 0
    while seen is not None and depth < 10:
        if isinstance(seen, OSError) and seen.errno in FULL:
            return True
        seen, depth = seen.__cause__ or seen.__context__, depth + 1
    if folder is not None and isinstance(err, RuntimeError) and ("unexpected pos" in str(err)
                                                                  or "write" in str(err).lower()):
        try:
            return shutil.disk_usage(folder).free < 64 << 20
        except OSError:
            return False
    return False


def interrupt_in(err: BaseException | None) -> BaseException | None:
    """The interrupt (a BaseException that is no Exception: KeyboardInterrupt, Terminated, SystemExit) in
    ``err``'s chain of causes and contexts, ``err`` itself included; None when there is none."""
    seen, depth = err, 0
    while seen is not None and depth < 10:
        if not isinstance(seen, Exception):
            return seen
        seen, depth = seen.__cause__ or seen.__context__, depth + 1
    return None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, durable: bool = False, suffix: str = ".tmp",
                label: str | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; ``path`` is replaced by it only when the block succeeds.

    ``suffix``: the temporary file's ending, for writers that choose a format by it (``.png``, ``.npz``).
    ``durable``: fsync the file and its folder, so that the rename survives a power cut. The old file, if any,
    stays whole until the rename; ``NoSpace`` says whether one is still there. A folder where no file can be
    created is a UsageError naming ``label`` (default: the path; e.g. "--out PATH").
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as err:
        if no_space(err):
            raise _full(path) from err
        raise UsageError(f"{label or path}: cannot create a file in {path.parent} ({err.strerror})") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)              # mkstemp's 0600, as every other output would be
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        interrupt = interrupt_in(err)
        if interrupt is not None and interrupt is not err:
            raise interrupt from None         # the interrupt alone: exit 130/143, not the writer's traceback
        if no_space(err, path.parent):
            raise _full(path) from err
        raise
    if durable:
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def write_atomically(path: str | os.PathLike, content: str | bytes, *, durable: bool = False) -> None:
    """``content`` (text, or bytes) at ``path``, whole or not at all (``atomic_path``)."""
    with atomic_path(path, durable=durable) as tmp:
        if isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            tmp.write_text(content)


def _full(path: Path) -> NoSpace:
    kept = f"; the earlier {path.name} is kept as it was" if path.exists() else ""
    return NoSpace(f"no space left on device writing {path}; nothing was written{kept}")
