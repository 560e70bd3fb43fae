"""The CPU kernel behind ``alexnet.ops.lrn``: one pass over memory forward, one backward, built on first use.

The C++ is ``lrn_cpu.cpp`` beside this module, built, cached and loaded by the machinery in
``alexnet.ops._kernels`` (the system compiler, no PyTorch headers, a library per source/compiler/flags/CPU
under ``~/.cache/alexnet/kernels``, called through ctypes, which releases the GIL). ``load()`` returns None,
quietly, when there is no compiler, the source cannot be read, the build fails, or ``ALEXNET_LRN_KERNEL=torch``
asks for the PyTorch path; ``alexnet.ops.lrn`` then uses that path (and also when the library fails its
self-check).
"""
from __future__ import annotations

import ctypes
import subprocess  # noqa: F401 - the build runs subprocess.run (tests stand in for it through this module)
from pathlib import Path

from alexnet.ops import _kernels
from alexnet.ops._kernels import FLAG_SETS, cache_dir as _cache_dir, cpu_identity as _cpu_identity  # noqa: F401

SOURCE_NAME = "lrn_cpu.cpp"   # package data of alexnet.ops (pyproject.toml)
_POINTER, _INT64, _DOUBLE = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
# name: (pointer arguments, int64 arguments), then alpha, beta, k (double) and the thread count (int).
# LRN: outer, C, inner, size, groups (channels_last rows only); relu -> LRN -> pool: N, C, H, W, K, S, size, groups.
_SIGNATURES = {
    "lrn_forward_f32": (2, 5), "lrn_forward_f64": (2, 5), "lrn_backward_f32": (3, 5), "lrn_backward_f64": (3, 5),
    "relu_lrn_pool_forward_f32": (3, 8), "relu_lrn_pool_forward_f64": (3, 8),
    "relu_lrn_pool_backward_f32": (4, 8), "relu_lrn_pool_backward_f64": (4, 8),
}
_KERNEL = _kernels.Kernel(
    __package__, SOURCE_NAME,
    {name: [_POINTER] * pointers + [_INT64] * ints + [_DOUBLE] * 3 + [ctypes.c_int]
     for name, (pointers, ints) in _SIGNATURES.items()},
    "ALEXNET_LRN_KERNEL", "lrn", what="LRN")
_library: ctypes.CDLL | None = None
_tried = False


def _source() -> str:
    """The kernel's C++ text, from the package (a source tree, an installed wheel or a zip alike)."""
    return _KERNEL.source()


def _target(source: str, compiler: list[str], flags: list[str]) -> Path:
    """The cached library's path: a new one whenever the source, the compiler, its flags or the CPU change."""
    return _KERNEL.target(source, compiler, flags)


def _build(compiler: list[str], flags: list[str]) -> Path:
    return _KERNEL.build(compiler, flags, _source())


def _open(path: Path) -> ctypes.CDLL:
    return _KERNEL.open(path)


def load() -> ctypes.CDLL | None:
    """The compiled kernel library, building it on first use; None when it is unavailable."""
    global _library, _tried
    if not _tried:
        _tried = True
        _library = _KERNEL.find(_build)
    return _library
