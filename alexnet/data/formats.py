"""Small-image file formats read straight into memory: MNIST-style idx files and CIFAR python batches.

Broken files are a UsageError naming the file and saying what is wrong with it; nothing is guessed.
CIFAR batches are pickles: they are read with an unpickler that only admits numpy arrays.
"""
from __future__ import annotations

import gzip
import importlib
import os
import pickle
import re
import struct
import zlib

import numpy as np

from alexnet.errors import UsageError

IDX_NAME = re.compile(r"^(train|t10k)-(images|labels)[-.]idx([13])-ubyte(\.gz)?$")
IDX_SPLITS = {"train": "train", "t10k": "test"}
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_SUBFOLDERS = ("cifar-10-batches-py", "cifar-100-python")

Splits = dict[str, tuple[np.ndarray, np.ndarray]]   # split -> (uint8 images (N, H, W, C), int64 labels (N,))


def read_idx(path: str, ndim: int) -> np.ndarray:
    """The uint8 array in idx file ``path`` (gzipped or not), which must have ``ndim`` dimensions."""
    expected = f"00 00 08 {ndim:02x}"
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[:2] != b"\0\0":
                raise UsageError(f"{path}: not an idx file (first bytes {magic.hex(' ') or 'missing'}, expected "
                                 f"{expected}); use the original MNIST-format files")
            if magic[2] != 0x08 or magic[3] != ndim:
                raise UsageError(f"{path}: wrong idx magic {magic.hex(' ')}, expected {expected} (unsigned bytes, "
                                 f"{ndim} dimensions); is this the {'images' if ndim == 3 else 'labels'} file?")
            raw_dims = f.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise UsageError(f"{path}: truncated idx header; download the file again")
            dims = struct.unpack(f">{ndim}I", raw_dims)
            count = int(np.prod(dims))
            payload = f.read(count)
            extra = f.read(1)
    except (OSError, EOFError, zlib.error) as err:
        raise UsageError(f"{path}: cannot be read ({err}); the file is corrupt or truncated, "
                         f"download it again") from None
    if len(payload) < count:
        shape = "x".join(map(str, dims))
        raise UsageError(f"{path}: truncated: the header says {shape} = {count:,} bytes of data, the file has "
                         f"{len(payload):,}; download it again")
    if extra:
        raise UsageError(f"{path}: has data after the {count:,} bytes its header describes; the file is not "
                         f"a valid idx file")
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims)


def idx_files(folder: str) -> dict[tuple[str, str], str]:
    """(split, "images"|"labels") -> path for the idx files in ``folder`` (t10k is the test split)."""
    found: dict[tuple[str, str], str] = {}
    for name in sorted(os.listdir(folder)):
        match = IDX_NAME.match(name)
        if match and os.path.isfile(os.path.join(folder, name)):
            found.setdefault((IDX_SPLITS[match[1]], match[2]), os.path.join(folder, name))
    return found


def load_idx_folder(folder: str) -> Splits:
    """train (and test, when present) images (N, H, W, 1) and labels from a folder of idx files."""
    files = idx_files(folder)
    splits: Splits = {}
    for split in ("train", "test"):
        images_path, labels_path = files.get((split, "images")), files.get((split, "labels"))
        if images_path is None and labels_path is None:
            continue
        prefix = "train" if split == "train" else "t10k"
        if images_path is None or labels_path is None:
            missing = f"{prefix}-{'images-idx3' if images_path is None else 'labels-idx1'}-ubyte[.gz]"
            raise UsageError(f"{folder}: has {os.path.basename(images_path or labels_path)} but no {missing}")
        images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
        if len(images) != len(labels):
            raise UsageError(f"{images_path} holds {len(images):,} images but {labels_path} holds "
                             f"{len(labels):,} labels; the two files must come from the same release")
        splits[split] = (images[..., None], labels.astype(np.int64))
    if "train" not in splits:
        raise UsageError(f"{folder}: no train-images-idx3-ubyte[.gz] / train-labels-idx1-ubyte[.gz] pair")
    return splits


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits numpy arrays and nothing else: no arbitrary code runs while reading a batch."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
               ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = "numpy._core" + module[len("numpy.core"):]
        return getattr(importlib.import_module(module), name)


def _read_batch(path: str) -> dict[str, object]:
    try:
        with open(path, "rb") as f:
            batch = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as err:
        raise UsageError(f"{path}: not a readable CIFAR python batch ({err}); extract the original "
                         f"cifar-*-python.tar.gz again") from None
    if not isinstance(batch, dict):
        raise UsageError(f"{path}: not a CIFAR python batch (holds a {type(batch).__name__}, not a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def cifar_folder(folder: str) -> str | None:
    """The folder holding CIFAR-10/100 python batches at or just below ``folder``, else None."""
    for candidate in [folder] + [os.path.join(folder, sub) for sub in CIFAR_SUBFOLDERS]:
        has = lambda name: os.path.isfile(os.path.join(candidate, name))  # noqa: E731
        if has("data_batch_1") or (has("train") and has("test") and has("meta")):
            return candidate
    return None


def load_cifar_folder(folder: str) -> tuple[Splits, list[str], str]:
    """(splits, class names, "CIFAR-10"|"CIFAR-100") from a python-batches folder (fine labels for CIFAR-100)."""
    cifar10 = os.path.isfile(os.path.join(folder, "data_batch_1"))
    key = "labels" if cifar10 else "fine_labels"
    train_files = [f for f in CIFAR10_TRAIN if os.path.isfile(os.path.join(folder, f))] if cifar10 else ["train"]
    test_file = "test_batch" if cifar10 else "test"
    splits: Splits = {}
    for split, names in (("train", train_files), ("test", [test_file])):
        parts = [_cifar_arrays(os.path.join(folder, n), key) for n in names if os.path.isfile(os.path.join(folder, n))]
        if parts:
            splits[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    meta_path = os.path.join(folder, "batches.meta" if cifar10 else "meta")
    names_key = "label_names" if cifar10 else "fine_label_names"
    num_classes = int(max(labels.max(initial=-1) for _, labels in splits.values())) + 1
    classes = [str(i) for i in range(num_classes)]
    if os.path.isfile(meta_path):
        names = _read_batch(meta_path).get(names_key)
        if not isinstance(names, list) or len(names) < num_classes:
            raise UsageError(f"{meta_path}: has no usable {names_key!r} list for {num_classes} classes")
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return splits, classes, "CIFAR-10" if cifar10 else "CIFAR-100"


def _cifar_arrays(path: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _read_batch(path)
    data, labels = batch.get("data"), batch.get(key)
    if not isinstance(data, np.ndarray) or labels is None:
        raise UsageError(f"{path}: a CIFAR batch needs 'data' (an array) and {key!r}; found keys {sorted(batch)}")
    labels = np.asarray(labels, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise UsageError(f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
    if len(data) != len(labels):
        raise UsageError(f"{path}: {len(data):,} images but {len(labels):,} labels")
    if len(labels) and labels.min() < 0:
        raise UsageError(f"{path}: negative label {labels.min()}")
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))   # (N, 32, 32, 3)
    return images, labels
