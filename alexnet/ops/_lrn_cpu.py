"""The CPU kernel behind ``alexnet.ops.lrn``: one pass over memory forward, one backward, built on first use.

The C++ (``lrn_cpu.cpp`` beside this module, shipped as package data and read through
``importlib.resources``, so an installed wheel builds it too) needs no PyTorch headers, so the system compiler
builds it in a few seconds (a ``torch.utils.cpp_extension`` build of a one-line op took 24 s here); the library
is cached under ``~/.cache/alexnet/kernels`` (``$ALEXNET_KERNEL_CACHE`` moves it), one file per hash of the
source text, compiler, flags and CPU, and called through ctypes, which releases the GIL. Its OpenMP threads
are PyTorch's own (the same libgomp). ``load()`` returns None, quietly, when there is no compiler, the
source cannot be read, the build fails, or ``ALEXNET_LRN_KERNEL=torch`` asks for the PyTorch path;
``alexnet.ops.lrn`` then uses that path (and also when the library fails its self-check).
"""
from __future__ import annotations

import ctypes
import hashlib
import importlib.resources
import logging
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

# -march=native: the cache key includes the CPU's feature flags, so a cache shared between
# different machines holds one library per kind of CPU. Without OpenMP the kernel runs on one thread.
FLAG_SETS = (
    ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"],
    ["-O3", "-fno-math-errno", "-fno-trapping-math", "-Wno-unknown-pragmas"],
)
SOURCE_NAME = "lrn_cpu.cpp"   # package data of alexnet.ops (pyproject.toml)
_POINTER, _INT64, _DOUBLE = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
# name: (pointer arguments, int64 arguments), then alpha, beta, k (double) and the thread count (int).
# LRN: outer, C, inner, size, groups (channels_last rows only); relu -> LRN -> pool: N, C, H, W, K, S, size, groups.
_SIGNATURES = {
    "lrn_forward_f32": (2, 5), "lrn_forward_f64": (2, 5), "lrn_backward_f32": (3, 5), "lrn_backward_f64": (3, 5),
    "relu_lrn_pool_forward_f32": (3, 8), "relu_lrn_pool_forward_f64": (3, 8),
    "relu_lrn_pool_backward_f32": (4, 8), "relu_lrn_pool_backward_f64": (4, 8),
}
_library: ctypes.CDLL | None = None
_tried = False


def _source() -> str:
    """The kernel's C++ text, from the package (a source tree, an installed wheel or a zip alike)."""
    return importlib.resources.files(__package__).joinpath(SOURCE_NAME).read_text(encoding="utf-8")


def _cpu_identity() -> str:
    """Something that changes when the CPU's instruction set does (Linux: the flags line)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.machine() + platform.processor()


def _cache_dir() -> Path:
    if os.environ.get("ALEXNET_KERNEL_CACHE"):
        return Path(os.environ["ALEXNET_KERNEL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "alexnet" / "kernels"


def _target(source: str, compiler: list[str], flags: list[str]) -> Path:
    """The cached library's path: a new one whenever the source, the compiler, its flags or the CPU change."""
    key = hashlib.sha256("\n".join([source, *compiler, *flags, _cpu_identity()]).encode()).hexdigest()[:16]
    return _cache_dir() / f"lrn_{key}.so"


def _build(compiler: list[str], flags: list[str]) -> Path:
    text = _source()
    target = _target(text, compiler, flags)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / SOURCE_NAME   # the very text hashed above, even if the package file changes meanwhile
        source.write_text(text, encoding="utf-8")
        built = Path(tmp) / "lrn.so"
        subprocess.run([*compiler, "-std=c++17", "-shared", "-fPIC", *flags, str(source), "-o", str(built)],
                       check=True, capture_output=True, timeout=300)
        staged = target.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(built, staged)
        os.replace(staged, target)  # atomic: concurrent builders never see a half-written library
    return target


def _open(path: Path) -> ctypes.CDLL:
    library = ctypes.CDLL(str(path))
    for name, (pointers, ints) in _SIGNATURES.items():
        function = getattr(library, name)
        function.argtypes = [_POINTER] * pointers + [_INT64] * ints + [_DOUBLE] * 3 + [ctypes.c_int]
        function.restype = None
    return library


def load() -> ctypes.CDLL | None:
    """The compiled kernel library, building it on first use; None when it is unavailable."""
    global _library, _tried
    if _tried:
        return _library
    _tried = True
    if os.environ.get("ALEXNET_LRN_KERNEL", "").lower() in ("torch", "off", "0"):
        return None
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if not compiler:
        log.debug("no C++ compiler found: LRN uses the PyTorch path")
        return None
    for flags in FLAG_SETS:
        try:
            _library = _open(_build(shlex.split(compiler), flags))
            return _library
        except Exception as error:  # noqa: BLE001 - whatever went wrong, the PyTorch path still works
            detail = getattr(error, "stderr", b"") or b""
            log.debug("LRN kernel build with %s failed: %s %s", flags, error, detail.decode(errors="replace")[-2000:])
    return None
