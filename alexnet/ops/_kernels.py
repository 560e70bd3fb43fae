"""Small C++ kernels built on first use: the machinery shared by ``_lrn_cpu`` and ``augment``.

A kernel's C++ (a ``.cpp`` file of ``alexnet.ops``, shipped as package data and read through
``importlib.resources``, so an installed wheel builds it too) needs no PyTorch headers, so the system compiler
builds it in a few seconds (a ``torch.utils.cpp_extension`` build of a one-line op took 24 s here); the library
is cached under ``~/.cache/alexnet/kernels`` (``$ALEXNET_KERNEL_CACHE`` moves it), one file per hash of the
source text, compiler, flags and CPU, and called through ctypes, which releases the GIL. Its OpenMP threads
are PyTorch's own (the same libgomp). ``Kernel.load()`` returns None, quietly, when there is no compiler, the
source cannot be read, the build fails, or the kernel's environment variable (e.g. ``ALEXNET_LRN_KERNEL=torch``)
asks for the PyTorch path; the caller then uses that path.
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
from typing import Callable, Mapping, Sequence

from alexnet.util.atomic import atomic_path

log = logging.getLogger(__name__)

# -march=native: the cache key includes the CPU's feature flags, so a cache shared between
# different machines holds one library per kind of CPU. Without OpenMP the kernel runs on one thread.
FLAG_SETS = (
    ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"],
    ["-O3", "-fno-math-errno", "-fno-trapping-math", "-Wno-unknown-pragmas"],
)
OPT_OUT = ("torch", "off", "0")   # values of a kernel's environment variable that ask for the PyTorch path


def cpu_identity() -> str:
    """Something that changes when the CPU's instruction set does (Linux: the flags line)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.machine() + platform.processor()


def cache_dir() -> Path:
    if os.environ.get("ALEXNET_KERNEL_CACHE"):
        return Path(os.environ["ALEXNET_KERNEL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "alexnet" / "kernels"


def compiler() -> list[str] | None:
    """The C++ compiler's command ($CXX, else c++, g++ or clang++ on the PATH); None when there is none."""
    found = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    return shlex.split(found) if found else None


class Kernel:
    """One kernel library: ``source_name`` (a .cpp of ``package``), the ctypes argument types of each of its
    extern "C" functions (``signatures``: name -> argtypes; every one returns void), the environment variable
    that opts out of it, and the prefix of its cached library's file name. ``extra_flags`` follow each of the
    ``FLAG_SETS`` (e.g. ``-ffp-contract=off`` for a kernel whose rounding must match PyTorch's)."""

    def __init__(self, package: str, source_name: str, signatures: Mapping[str, Sequence[type]], env_var: str,
                 prefix: str, *, what: str, extra_flags: Sequence[str] = ()) -> None:
        self.package, self.source_name, self.signatures = package, source_name, dict(signatures)
        self.env_var, self.prefix, self.what = env_var, prefix, what
        self.flag_sets = tuple([*flags, *extra_flags] for flags in FLAG_SETS)
        self._library: ctypes.CDLL | None = None
        self._tried = False

    def source(self) -> str:
        """The kernel's C++ text, from the package (a source tree, an installed wheel or a zip alike)."""
        return importlib.resources.files(self.package).joinpath(self.source_name).read_text(encoding="utf-8")

    def target(self, source: str, compiler: list[str], flags: list[str]) -> Path:
        """The cached library's path: a new one whenever the source, the compiler, its flags or the CPU change."""
        key = hashlib.sha256("\n".join([source, *compiler, *flags, cpu_identity()]).encode()).hexdigest()[:16]
        return cache_dir() / f"{self.prefix}_{key}.so"

    def build(self, compiler: list[str], flags: list[str], text: str | None = None) -> Path:
        """The library built from ``text`` (default: the shipped source), or the cached one built from it."""
        text = self.source() if text is None else text
        target = self.target(text, compiler, flags)
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / self.source_name   # the very text hashed above, even if the file changes meanwhile
            source.write_text(text, encoding="utf-8")
            built = Path(tmp) / f"{self.prefix}.so"
            subprocess.run([*compiler, "-std=c++17", "-shared", "-fPIC", *flags, str(source), "-o", str(built)],
                           check=True, capture_output=True, timeout=300)
            with atomic_path(target, suffix=".so") as staged:   # concurrent builders never see half a library
                shutil.copyfile(built, staged)
        return target

    def open(self, path: Path) -> ctypes.CDLL:
        library = ctypes.CDLL(str(path))
        for name, argtypes in self.signatures.items():
            function = getattr(library, name)
            function.argtypes = list(argtypes)
            function.restype = None
        return library

    def opted_out(self) -> bool:
        return os.environ.get(self.env_var, "").lower() in OPT_OUT

    def find(self, build: Callable[[list[str], list[str]], Path] | None = None) -> ctypes.CDLL | None:
        """Build (or find cached) and open the library, trying each flag set; None when unavailable.
        ``build(compiler, flags)`` defaults to ``self.build``."""
        if self.opted_out():
            return None
        command = compiler()
        if not command:
            log.debug("no C++ compiler found: %s uses the PyTorch path", self.what)
            return None
        for flags in self.flag_sets:
            try:
                return self.open((build or self.build)(command, flags))
            except Exception as error:  # noqa: BLE001 - whatever went wrong, the PyTorch path still works
                detail = getattr(error, "stderr", b"") or b""
                log.debug("%s kernel build with %s failed: %s %s", self.what, flags, error,
                          detail.decode(errors="replace")[-2000:])
        return None

    def load(self) -> ctypes.CDLL | None:
        """The compiled library, building it on first use (once per process); None when it is unavailable."""
        if not self._tried:
            self._tried = True
            self._library = self.find()
        return self._library

    def reset(self) -> None:
        """Forget the outcome of ``load()`` (tests: to load again under another environment)."""
        self._library, self._tried = None, False
