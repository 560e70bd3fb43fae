"""Small generated datasets for the data-layer tests: idx files, CIFAR batches, photo folders, bad files."""
from __future__ import annotations

import gzip
import io
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def write_idx(path: Path, array: np.ndarray, *, magic: bytes | None = None, cut: int = 0) -> Path:
    """An idx file (gzipped when the name ends in .gz); ``magic`` overrides the first 4 bytes, ``cut``
    drops that many bytes from the end."""
    header = magic or bytes([0, 0, 0x08, array.ndim])
    data = header + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    data = data[:len(data) - cut]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def idx_folder(root: Path, n_train: int = 50, n_test: int = 20, *, gz: bool = True, size: int = 8,
               classes: int = 5) -> Path:
    """A folder of MNIST-style files; image i has pixel [0, 0] = i % 256 and pixel [0, 1] = i // 256."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    ext = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        images[:, 0, 0], images[:, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
        write_idx(root / f"{prefix}-images-idx3-ubyte{ext}", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{ext}", np.arange(n) % classes)
    return root


def cifar10_folder(root: Path, batches: int = 2, per_batch: int = 6) -> Path:
    """A CIFAR-10 python-batches folder; image i is constant per channel: R = i, G = 100, B = 200."""
    root.mkdir(parents=True, exist_ok=True)
    names = [b"airplane", b"automobile", b"bird"]

    def batch(start: int, n: int) -> dict:
        data = np.zeros((n, 3, 32, 32), np.uint8)
        data[:, 0] = np.arange(start, start + n)[:, None, None]
        data[:, 1], data[:, 2] = 100, 200
        return {b"data": data.reshape(n, 3072), b"labels": [(start + i) % 3 for i in range(n)]}

    for b in range(batches):
        (root / f"data_batch_{b + 1}").write_bytes(pickle.dumps(batch(b * per_batch, per_batch), protocol=2))
    (root / "test_batch").write_bytes(pickle.dumps(batch(200, 4), protocol=2))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    return root


def save(path: Path, array: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return path


def photo_folder(root: Path, per_class: int = 6, classes: tuple[str, ...] = ("cat", "dog", "fox"),
                 seed: int = 0) -> Path:
    """Class folders of small RGB photos of varied sizes (PNG, lossless) and a few JPEGs."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        for i in range(per_class):
            h, w = int(rng.integers(12, 30)), int(rng.integers(12, 30))
            ext = "jpg" if i % 3 == 2 else "png"
            save(root / name / f"{i}.{ext}", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return root


def truncated_jpeg(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(buffer, "JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue()[:len(buffer.getvalue()) // 2])
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(path: Path, side: int = 20000) -> Path:
    """A valid side x side 1-bit greyscale PNG of one colour: a few dozen KB that decode to side**2 pixels."""
    row = b"\0" + bytes((side + 7) // 8)
    compressor, parts = zlib.compressobj(9), []
    for _ in range(side):
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", b"".join(parts))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png + _png_chunk(b"IEND", b""))
    return path
