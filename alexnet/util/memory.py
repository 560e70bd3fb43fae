"""Host memory for large CPU tensors: keep freed blocks for reuse instead of handing them back to Linux.

A training step at 224 px allocates and frees the same multi-MB tensors every step (conv1's output
is 74 MB at batch 64, fc6's weight gradient 151 MB). glibc serves every block over 32 MB with a fresh
``mmap`` and unmaps it on free, so the next step page-faults and zero-fills it all again: measured
here, fc6's weight-gradient matmul ran at 66 GFLOP/s into fresh memory and at 152 GFLOP/s into reused
memory on huge pages, and a whole AlexNet step was 10-25% faster. PyTorch's CUDA caching allocator
keeps GPU memory for the same reason; on the CPU it relies on malloc.

``configure()`` is an explicit opt-in: ``import alexnet`` changes nothing in the process. The
``alexnet`` command (``alexnet.cli.main.main``, also behind ``python -m alexnet``) calls it first thing, and so
does every script under ``bench/``; a program of your own calls ``alexnet.util.memory.configure()`` before its
first large tensor. It applies, once:

* ``THP_MEM_ALLOC_ENABLE=1``: PyTorch puts CPU tensors of 2 MB or more on transparent huge pages
  (fewer page faults and TLB misses). PyTorch reads it once, at its first CPU allocation (not at
  ``import torch``: torch 2.14 allocates nothing on import), so call ``configure()`` before any tensor
  is made; the ``alexnet`` command and the benchmarks call it before they import torch at all.
* glibc ``mallopt``: no ``mmap`` for large blocks (``M_MMAP_MAX`` 0) and no trimming of the heap top
  (``M_TRIM_THRESHOLD``), so freed blocks are reused. Resident memory then stays at the process's
  peak rather than falling between steps. Where glibc cannot grow the heap it still maps memory.
  This holds from the call on, for every allocation after it.

``ALEXNET_MALLOC=system`` leaves both alone (``configure()`` then only records that); other C libraries
(musl, macOS, Windows) are left alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4   # glibc's malloc.h
_state: dict[str, str] = {}


def _glibc():
    """glibc, or None (another C library, or not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):   # not glibc (musl has neither)
        return None
    return libc


def release_freed() -> None:
    """Hand the heap's freed memory back to the OS now (glibc's ``malloc_trim``; elsewhere nothing): for a process
    that has just dropped something large for good (``alexnet serve``'s parent, once its workers hold the model)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def configure() -> str:
    """Apply the settings above once; returns what was done (the benchmarks print it with the machine)."""
    if "mode" in _state:
        return _state["mode"]
    if os.environ.get("ALEXNET_MALLOC", "").lower() == "system":
        _state["mode"] = "system malloc (ALEXNET_MALLOC=system)"
        return _state["mode"]
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    _state["mode"] = "system malloc"
    libc = _glibc()
    if libc is not None:
        mallopt = libc.mallopt
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        if mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1:
            _state["mode"] = "glibc malloc, freed blocks kept for reuse"
    return _state["mode"]


def mode() -> str:
    """What ``configure()`` did (``"not configured"`` before it ran)."""
    return _state.get("mode", "not configured")
