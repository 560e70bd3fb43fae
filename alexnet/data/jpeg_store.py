"""The compact cache store (``alexnet prepare --store jpeg``): each image as the JPEG bytes of its stored square.

On disk, per split (next to the labels and metadata every cache has, alexnet.data.cache):
  <split>_jpeg.bin     the JPEG files of the split's images, back to back
  <split>_index.npy    int64 (N + 1,): image i is bytes [index[i], index[i + 1]) of <split>_jpeg.bin
A 256x256 photograph at quality 90 takes about 15-17 KB instead of the raw store's 196,608 bytes (12x less):
ILSVRC-2012's 1.33 M images fit in about 20 GB rather than 262 GB (docs/imagenet.md).

Encoding is Pillow's (libjpeg-turbo, 4:2:0 chroma subsampling, baseline); decoding is torchvision's
``decode_jpeg`` (the same libjpeg-turbo, bit-identical to Pillow's decode, tested), which releases the GIL,
so the loader's threads decode in parallel; on CUDA, ``decode_jpeg(..., device="cuda")`` decodes a whole
batch with nvJPEG. torchvision 0.29 deprecated its image codecs in favour of TorchCodec and warns on every
call, so the loader calls the operators behind ``decode_jpeg`` (``torch.ops.image.decode_jpeg`` and
``decode_jpegs_cuda``) directly, and decodes with Pillow (the same pixels) in a torchvision without them.
The statistics stored with the cache are those of the decoded JPEGs, the pixels training sees.

``JpegImages`` reads a split: an array-like of shape (N, H, W, C) uint8 whose slices and index arrays are
lazy views (nothing decoded) and whose ``read(index)`` decodes a batch.
"""
from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch

from alexnet.errors import UsageError

DEFAULT_QUALITY = 90          # FFCV's and the choice: about 18 KB per 256x256 photograph


def jpeg_path(folder: str, split: str) -> str:
    return os.path.join(folder, f"{split}_jpeg.bin")


def index_path(folder: str, split: str) -> str:
    return os.path.join(folder, f"{split}_index.npy")


def encode(image: np.ndarray, quality: int) -> bytes:
    """uint8 (H, W, C) as JPEG bytes (C 1: greyscale JPEG; C 3: YCbCr 4:2:0)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def decode_pil(blob: bytes, channels: int) -> np.ndarray:
    """The pixels ``JpegImages`` will read back from ``blob``, decoded by Pillow (identical to torchvision's)."""
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as img:
        array = np.asarray(img.convert("L" if channels == 1 else "RGB"))
    return array[..., None] if channels == 1 else array


class JpegImages:
    """A split of the jpeg store as an array-like of shape (N, H, W, C), dtype uint8.

    ``images[i]`` decodes one image (an ndarray); ``images[a:b]`` and ``images[index_array]`` are views
    that decode nothing until read; ``np.asarray(images)`` decodes them all; ``read(index)`` decodes a
    batch into a uint8 (B, H, W, C) tensor (``out``: a tensor to decode into, e.g. in page-locked memory);
    ``blobs(index)`` gives the compressed bytes, for decoding on a GPU (``read_on``).
    """

    def __init__(self, data: np.ndarray, starts: np.ndarray, ends: np.ndarray, shape: Sequence[int],
                 source: str = "") -> None:
        self.data, self.starts, self.ends = data, starts, ends
        self.item_shape = tuple(int(s) for s in shape)
        self.source = source

    @classmethod
    def open(cls, folder: str, split: str, count: int, shape: Sequence[int]) -> "JpegImages":
        """The stored ``split`` of the cache in ``folder``, checked against the metadata (UsageError if damaged)."""
        data_file, index_file = jpeg_path(folder, split), index_path(folder, split)
        try:
            index = np.load(index_file)
            size = os.path.getsize(data_file)
            data = np.memmap(data_file, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
        except (OSError, ValueError) as err:
            raise UsageError(f"{folder}: damaged cache, cannot read the {split} JPEG store ({err}); run `alexnet "
                             f"prepare` again") from None
        if index.shape != (count + 1,) or index.dtype != np.int64 or index[0] != 0 or index[-1] != size \
                or (np.diff(index) <= 0).any():
            raise UsageError(f"{index_file}: damaged cache: the index does not describe {count} images in the "
                             f"{size:,} bytes of {os.path.basename(data_file)}; run `alexnet prepare` again")
        return cls(data, index[:-1], index[1:], shape, data_file)

    # ---- the array-like surface -----------------------------------------------------------------
    dtype = np.dtype(np.uint8)
    ndim = 4

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.starts), *self.item_shape)

    @property
    def nbytes(self) -> int:
        """Bytes the images take decoded (as a raw array would)."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def compressed_nbytes(self) -> int:
        return int((self.ends - self.starts).sum())

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self.read(torch.tensor([int(key)])).numpy()[0]
        if isinstance(key, torch.Tensor):
            key = key.numpy()
        return JpegImages(self.data, self.starts[key], self.ends[key], self.item_shape, self.source)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        array = self.read(torch.arange(len(self))).numpy()
        return array if dtype is None else array.astype(dtype)

    def __repr__(self) -> str:
        return f"JpegImages({len(self)} x {self.item_shape}, {self.compressed_nbytes:,} bytes, {self.source})"

    # ---- decoding -------------------------------------------------------------------------------
    def blobs(self, index: torch.Tensor | np.ndarray | Sequence[int]) -> list[torch.Tensor]:
        """The JPEG bytes of images ``index``, each a uint8 tensor (a copy: the store is read-only)."""
        index = np.asarray(index, dtype=np.int64)
        return [torch.from_numpy(np.array(self.data[s:e])) for s, e in zip(self.starts[index], self.ends[index])]

    def read(self, index: torch.Tensor | np.ndarray | Sequence[int], out: torch.Tensor | None = None,
             threads: int = 1) -> torch.Tensor:
        """Decode images ``index`` into a uint8 (B, H, W, C) tensor (``out`` when given), in file order
        for locality; ``threads`` > 1 decodes with that many threads (decode_jpeg releases the GIL)."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if out is None:
            out = torch.empty((len(index), *self.item_shape), dtype=torch.uint8)
        order = np.argsort(self.starts[index], kind="stable")
        if threads > 1 and len(index) > 1:
            parts = np.array_split(order, threads)
            list(_pool(threads).map(lambda part: self._decode_into(index, part, out), parts))
        else:
            self._decode_into(index, order, out)
        return out

    def _decode_into(self, index: np.ndarray, positions: np.ndarray, out: torch.Tensor) -> None:
        decode, channels = cpu_decoder(), self.item_shape[2]
        for position in positions:
            i = index[position]
            try:
                image = decode(np.array(self.data[self.starts[i]:self.ends[i]]), channels)
            except (RuntimeError, OSError, ValueError, SyntaxError) as err:
                raise UsageError(f"{self.source}: damaged cache: image {i} does not decode ({err}); run "
                                 f"`alexnet prepare` again") from None
            if tuple(image.shape) != self.item_shape:
                raise UsageError(f"{self.source}: damaged cache: image {i} decodes to {tuple(image.shape)}, the "
                                 f"metadata says {self.item_shape}; run `alexnet prepare` again")
            out[position] = image

    def read_on(self, index: torch.Tensor | np.ndarray | Sequence[int], device: torch.device) -> torch.Tensor:
        """Decode images ``index`` on the CUDA ``device`` in one batched nvJPEG call: uint8 (B, C, H, W),
        channels_last. The bytes are the only thing that crosses to the GPU (about 18 KB an image).
        RuntimeError when this torchvision cannot decode on the device."""
        ops = _image_ops()
        if ops is None or not hasattr(ops, "decode_jpegs_cuda"):
            raise RuntimeError("this torchvision has no nvJPEG decoder (torch.ops.image.decode_jpegs_cuda)")
        decoded = ops.decode_jpegs_cuda(self.blobs(index), _mode(self.item_shape[2]), torch.device(device))
        return torch.stack(decoded).contiguous(memory_format=torch.channels_last)


def _image_ops():
    """torchvision's image operators (``torch.ops.image``), or None where torchvision has none."""
    try:
        from torchvision import io as _registers_image_ops  # noqa: F401  (torch.ops.image)
        ops = torch.ops.image
        return ops if hasattr(ops, "decode_jpeg") else None
    except (ImportError, RuntimeError, AttributeError):
        return None


def _mode(channels: int) -> int:
    from torchvision.io import ImageReadMode

    return (ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB).value


def cpu_decoder():
    """decode(uint8 JPEG bytes as ndarray, channels) -> uint8 (H, W, C) tensor: torchvision's operator (the GIL
    released), or Pillow's decoder where torchvision has none (the same pixels)."""
    global _DECODER
    if _DECODER is None:
        ops = _image_ops()
        if ops is not None:
            modes = {1: _mode(1), 3: _mode(3)}
            _DECODER = lambda blob, channels: ops.decode_jpeg(  # noqa: E731
                torch.from_numpy(blob), modes[channels], False).permute(1, 2, 0)
        else:
            _DECODER = lambda blob, channels: torch.from_numpy(decode_pil(blob.tobytes(), channels))  # noqa: E731
    return _DECODER


_DECODER = None
_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``threads`` decoding threads (made once per size)."""
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix=f"jpeg-decode-{threads}")
    return _POOLS[threads]
