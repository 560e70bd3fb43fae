"""The CPU kernel behind ``alexnet.ops.lrn``: one pass forward, one pass backward, built on first use.

The C++ below needs no PyTorch headers, so the system compiler builds it in about a second; the
library is cached under ``~/.cache/alexnet/kernels`` (``$ALEXNET_KERNEL_CACHE`` to move it) and
called through ctypes, which releases the GIL. ``load()`` returns None, quietly, when there is no
compiler, the build fails, the library disagrees with the pure-PyTorch path on a small check, or
``ALEXNET_LRN_KERNEL=torch`` asks for the pure-PyTorch path; ``alexnet.ops.lrn`` then uses that path.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

# Window of channel c: [c - lo, c + hi] with lo = size // 2, hi = (size - 1) // 2 (torch's convention,
# the paper's for odd size). The backward sums over the transposed window [i - hi, i + lo].
# Two layouts: channels_last (rows of C contiguous channels) and contiguous NCHW (C planes of
# `inner` = H*W values), processed in tiles of TILE pixels so the window's planes stay in cache.
SOURCE = r"""
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <algorithm>

namespace {
constexpr int64_t TILE = 64;

template <typename T, bool B075>
inline T inv_pow(T s, T beta) {                   // s ** -beta; for 0.75: 1 / (sqrt(s) * sqrt(sqrt(s)))
    if (B075) { T q = std::sqrt(s); return T(1) / (q * std::sqrt(q)); }
    return std::pow(s, -beta);
}

// acc[t] = sum_{j < size} buf[(c + j) * L + t]: the window sum for channel c of a padded buffer.
template <typename T>
inline void window(const T* buf, T* acc, int64_t c, int64_t size, int64_t L) {
    std::memcpy(acc, buf + c * L, sizeof(T) * L);
    for (int64_t j = 1; j < size; ++j) {
        const T* b = buf + (c + j) * L;
        for (int64_t t = 0; t < L; ++t) acc[t] += b[t];
    }
}

// One block: C channels x L lanes; element (c, t) at p[c * cs + t * ts]. Channels_last rows are
// blocks with L = 1 handled as a single lane of C (vectorised along C); NCHW tiles have L = TILE.
template <typename T, bool B075>
void forward_rows(const T* x, T* y, int64_t rows, int64_t C, int64_t size, T alpha, T beta, T k, int nthreads) {
    const int64_t lo = size / 2;
    #pragma omp parallel num_threads(nthreads)
    {
        T* sq = static_cast<T*>(std::calloc(C + size, sizeof(T)));
        T* acc = static_cast<T*>(std::malloc(sizeof(T) * C));
        #pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            const T* xr = x + r * C; T* yr = y + r * C;
            for (int64_t c = 0; c < C; ++c) sq[lo + c] = xr[c] * xr[c];
            std::memcpy(acc, sq, sizeof(T) * C);
            for (int64_t j = 1; j < size; ++j)
                for (int64_t c = 0; c < C; ++c) acc[c] += sq[c + j];
            for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * inv_pow<T, B075>(k + alpha * acc[c], beta);
        }
        std::free(sq); std::free(acc);
    }
}

template <typename T, bool B075>
void backward_rows(const T* x, const T* g, T* gx, int64_t rows, int64_t C, int64_t size, T alpha, T beta, T k,
                   int nthreads) {
    const int64_t lo = size / 2, hi = (size - 1) / 2;
    const T coef = T(2) * alpha * beta;
    #pragma omp parallel num_threads(nthreads)
    {
        T* sq = static_cast<T*>(std::calloc(C + size, sizeof(T)));
        T* tb = static_cast<T*>(std::calloc(C + size, sizeof(T)));
        T* acc = static_cast<T*>(std::malloc(sizeof(T) * C));
        T* rb = static_cast<T*>(std::malloc(sizeof(T) * C));
        #pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            const T* xr = x + r * C; const T* gr = g + r * C; T* out = gx + r * C;
            for (int64_t c = 0; c < C; ++c) sq[lo + c] = xr[c] * xr[c];
            std::memcpy(acc, sq, sizeof(T) * C);
            for (int64_t j = 1; j < size; ++j)
                for (int64_t c = 0; c < C; ++c) acc[c] += sq[c + j];
            for (int64_t c = 0; c < C; ++c) {            // t_c = g_c x_c s_c^(-beta-1), padded by hi
                T s = k + alpha * acc[c];
                T rc = inv_pow<T, B075>(s, beta);
                rb[c] = rc;
                tb[hi + c] = gr[c] * xr[c] * rc / s;
            }
            std::memcpy(acc, tb, sizeof(T) * C);         // transposed window sum of t
            for (int64_t j = 1; j < size; ++j)
                for (int64_t c = 0; c < C; ++c) acc[c] += tb[c + j];
            for (int64_t c = 0; c < C; ++c) out[c] = gr[c] * rb[c] - coef * xr[c] * acc[c];
        }
        std::free(sq); std::free(tb); std::free(acc); std::free(rb);
    }
}

template <typename T, bool B075>
void forward_planes(const T* x, T* y, int64_t outer, int64_t C, int64_t inner, int64_t size, T alpha, T beta,
                    T k, int nthreads) {
    const int64_t lo = size / 2, tiles = (inner + TILE - 1) / TILE;
    #pragma omp parallel num_threads(nthreads)
    {
        T* sq = static_cast<T*>(std::calloc((C + size) * TILE, sizeof(T)));
        T* acc = static_cast<T*>(std::malloc(sizeof(T) * TILE));
        #pragma omp for schedule(static)
        for (int64_t b = 0; b < outer * tiles; ++b) {
            const int64_t n = b / tiles, t0 = (b % tiles) * TILE, L = std::min(TILE, inner - t0);
            const T* xb = x + n * C * inner + t0; T* yb = y + n * C * inner + t0;
            for (int64_t c = 0; c < C; ++c)
                for (int64_t t = 0; t < L; ++t) sq[(lo + c) * TILE + t] = xb[c * inner + t] * xb[c * inner + t];
            for (int64_t c = 0; c < C; ++c) {
                window(sq, acc, c, size, TILE);
                for (int64_t t = 0; t < L; ++t)
                    yb[c * inner + t] = xb[c * inner + t] * inv_pow<T, B075>(k + alpha * acc[t], beta);
            }
        }
        std::free(sq); std::free(acc);
    }
}

template <typename T, bool B075>
void backward_planes(const T* x, const T* g, T* gx, int64_t outer, int64_t C, int64_t inner, int64_t size,
                     T alpha, T beta, T k, int nthreads) {
    const int64_t lo = size / 2, hi = (size - 1) / 2, tiles = (inner + TILE - 1) / TILE;
    const T coef = T(2) * alpha * beta;
    #pragma omp parallel num_threads(nthreads)
    {
        T* sq = static_cast<T*>(std::calloc((C + size) * TILE, sizeof(T)));
        T* tb = static_cast<T*>(std::calloc((C + size) * TILE, sizeof(T)));
        T* rb = static_cast<T*>(std::malloc(sizeof(T) * C * TILE));
        T* acc = static_cast<T*>(std::malloc(sizeof(T) * TILE));
        #pragma omp for schedule(static)
        for (int64_t b = 0; b < outer * tiles; ++b) {
            const int64_t n = b / tiles, t0 = (b % tiles) * TILE, L = std::min(TILE, inner - t0);
            const int64_t off = n * C * inner + t0;
            const T* xb = x + off; const T* gb = g + off; T* ob = gx + off;
            for (int64_t c = 0; c < C; ++c)
                for (int64_t t = 0; t < L; ++t) sq[(lo + c) * TILE + t] = xb[c * inner + t] * xb[c * inner + t];
            for (int64_t c = 0; c < C; ++c) {
                window(sq, acc, c, size, TILE);
                for (int64_t t = 0; t < L; ++t) {
                    T s = k + alpha * acc[t];
                    T rc = inv_pow<T, B075>(s, beta);
                    rb[c * TILE + t] = rc;
                    tb[(hi + c) * TILE + t] = gb[c * inner + t] * xb[c * inner + t] * rc / s;
                }
            }
            for (int64_t c = 0; c < C; ++c) {
                window(tb, acc, c, size, TILE);
                for (int64_t t = 0; t < L; ++t)
                    ob[c * inner + t] = gb[c * inner + t] * rb[c * TILE + t] - coef * xb[c * inner + t] * acc[t];
            }
        }
        std::free(sq); std::free(tb); std::free(rb); std::free(acc);
    }
}

template <typename T>
void forward(const T* x, T* y, int64_t outer, int64_t C, int64_t inner, int64_t size, double alpha, double beta,
             double k, int nthreads) {
    if (inner == 1) {
        if (beta == 0.75) forward_rows<T, true>(x, y, outer, C, size, T(alpha), T(beta), T(k), nthreads);
        else forward_rows<T, false>(x, y, outer, C, size, T(alpha), T(beta), T(k), nthreads);
    } else {
        if (beta == 0.75) forward_planes<T, true>(x, y, outer, C, inner, size, T(alpha), T(beta), T(k), nthreads);
        else forward_planes<T, false>(x, y, outer, C, inner, size, T(alpha), T(beta), T(k), nthreads);
    }
}

template <typename T>
void backward(const T* x, const T* g, T* gx, int64_t outer, int64_t C, int64_t inner, int64_t size,
              double alpha, double beta, double k, int nthreads) {
    if (inner == 1) {
        if (beta == 0.75) backward_rows<T, true>(x, g, gx, outer, C, size, T(alpha), T(beta), T(k), nthreads);
        else backward_rows<T, false>(x, g, gx, outer, C, size, T(alpha), T(beta), T(k), nthreads);
    } else {
        if (beta == 0.75)
            backward_planes<T, true>(x, g, gx, outer, C, inner, size, T(alpha), T(beta), T(k), nthreads);
        else backward_planes<T, false>(x, g, gx, outer, C, inner, size, T(alpha), T(beta), T(k), nthreads);
    }
}
}  // namespace

extern "C" {
void lrn_forward_f32(const float* x, float* y, int64_t outer, int64_t C, int64_t inner, int64_t size,
                     double alpha, double beta, double k, int nthreads) {
    forward(x, y, outer, C, inner, size, alpha, beta, k, nthreads);
}
void lrn_forward_f64(const double* x, double* y, int64_t outer, int64_t C, int64_t inner, int64_t size,
                     double alpha, double beta, double k, int nthreads) {
    forward(x, y, outer, C, inner, size, alpha, beta, k, nthreads);
}
void lrn_backward_f32(const float* x, const float* g, float* gx, int64_t outer, int64_t C, int64_t inner,
                      int64_t size, double alpha, double beta, double k, int nthreads) {
    backward(x, g, gx, outer, C, inner, size, alpha, beta, k, nthreads);
}
void lrn_backward_f64(const double* x, const double* g, double* gx, int64_t outer, int64_t C, int64_t inner,
                      int64_t size, double alpha, double beta, double k, int nthreads) {
    backward(x, g, gx, outer, C, inner, size, alpha, beta, k, nthreads);
}
}
"""

# -march=native: the cache key includes the CPU's feature flags, so a cache shared between
# different machines holds one library per kind of CPU. Without OpenMP the kernel runs on one thread.
FLAG_SETS = (
    ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"],
    ["-O3", "-fno-math-errno", "-fno-trapping-math", "-Wno-unknown-pragmas"],
)
_POINTER, _INT64, _DOUBLE = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
_SIGNATURES = {
    "lrn_forward_f32": 2, "lrn_forward_f64": 2, "lrn_backward_f32": 3, "lrn_backward_f64": 3,
}
_library: ctypes.CDLL | None = None
_tried = False


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


def _build(compiler: str, flags: list[str]) -> Path:
    key = hashlib.sha256("\n".join([SOURCE, compiler, *flags, _cpu_identity()]).encode()).hexdigest()[:16]
    target = _cache_dir() / f"lrn_{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "lrn.cpp"
        source.write_text(SOURCE)
        built = Path(tmp) / "lrn.so"
        subprocess.run([compiler, "-std=c++17", "-shared", "-fPIC", *flags, str(source), "-o", str(built)],
                       check=True, capture_output=True, timeout=300)
        staged = target.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(built, staged)
        os.replace(staged, target)  # atomic: concurrent builders never see a half-written library
    return target


def _open(path: Path) -> ctypes.CDLL:
    library = ctypes.CDLL(str(path))
    for name, pointers in _SIGNATURES.items():
        function = getattr(library, name)
        function.argtypes = [_POINTER] * pointers + [_INT64] * 4 + [_DOUBLE] * 3 + [ctypes.c_int]
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
    if compiler is None:
        log.debug("no C++ compiler found: LRN uses the pure-PyTorch path")
        return None
    for flags in FLAG_SETS:
        try:
            _library = _open(_build(compiler, flags))
            return _library
        except (OSError, subprocess.SubprocessError, AttributeError) as error:
            detail = getattr(error, "stderr", b"") or b""
            log.debug("LRN kernel build with %s failed: %s %s", flags, error, detail.decode(errors="replace")[-2000:])
    return None
