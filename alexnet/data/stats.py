"""Training-set statistics: the mean image [4] and the RGB covariance's eigen-decomposition [4.1].

Pixel values are scaled to [0, 1]. Statistics stream over the images in chunks, so a memory-mapped
cache of 100k 256x256x3 images is never read into memory at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHUNK_ELEMENTS = 1 << 22   # uint8 values per chunk: 4 Mi values = 32 MiB once converted to float64


@dataclass
class DatasetStats:
    """Statistics of a training split, pixel values scaled to [0, 1]."""

    mean_image: np.ndarray     # float32 (H, W, C): per-pixel mean over the training images [4]
    channel_mean: np.ndarray   # float32 (C,)
    channel_std: np.ndarray    # float32 (C,)   population std over all training pixels
    eigvals: np.ndarray        # float32 (C,)   eigenvalues of the CxC pixel covariance, descending [4.1]
    eigvecs: np.ndarray        # float32 (C, C) column i is the eigenvector of eigvals[i]
    count: int = 0             # images the statistics were computed over

    def to_dict(self) -> dict:
        """A JSON-able dict (lists of floats); ``from_dict`` restores the float32 arrays exactly."""
        return {"mean_image": self.mean_image.tolist(), "channel_mean": self.channel_mean.tolist(),
                "channel_std": self.channel_std.tolist(), "eigvals": self.eigvals.tolist(),
                "eigvecs": self.eigvecs.tolist(), "count": int(self.count)}

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetStats":
        def arr(key: str) -> np.ndarray:
            return np.asarray(d[key], dtype=np.float32)

        return cls(arr("mean_image"), arr("channel_mean"), arr("channel_std"), arr("eigvals"), arr("eigvecs"),
                   int(d.get("count", 0)))


class StatsSums:
    """The running sums behind ``DatasetStats``: pixel sums per position and the CxC sums of pixel products.

    Exact integers (int64), so partial sums made in different processes merge into the same result in
    any order; ``add`` takes uint8 (N, H, W, C) images, ``merge`` another StatsSums, ``result`` the statistics.
    """

    def __init__(self, height: int, width: int, channels: int) -> None:
        self.image_sum = np.zeros((height, width, channels), np.int64)
        self.outer_sum = np.zeros((channels, channels), np.int64)
        self.count = 0

    def add(self, images: np.ndarray) -> "StatsSums":
        """Add uint8 (N, H, W, C) images, ``CHUNK_ELEMENTS`` values at a time (memory maps are streamed)."""
        if images.ndim != 4 or images.dtype != np.uint8 or images.shape[1:] != self.image_sum.shape:
            raise ValueError(f"StatsSums of {self.image_sum.shape} images got {images.dtype} {images.shape}")
        n, h, w, c = images.shape
        per_chunk = max(1, CHUNK_ELEMENTS // (h * w * c))
        for start in range(0, n, per_chunk):
            chunk = np.asarray(images[start:start + per_chunk])
            self.image_sum += chunk.sum(axis=0, dtype=np.int64)
            pixels = chunk.reshape(-1, c).astype(np.float64)        # products are exact in float64 per chunk
            self.outer_sum += np.rint(pixels.T @ pixels).astype(np.int64)
        self.count += n
        return self

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The sums as arrays (for ``np.savez``); ``from_arrays`` restores them exactly."""
        return {"image_sum": self.image_sum, "outer_sum": self.outer_sum, "count": np.int64(self.count)}

    @classmethod
    def from_arrays(cls, arrays) -> "StatsSums":
        sums = cls(*arrays["image_sum"].shape)
        sums.image_sum[...], sums.outer_sum[...], sums.count = arrays["image_sum"], arrays["outer_sum"], int(arrays["count"])
        return sums

    def merge(self, other: "StatsSums") -> "StatsSums":
        self.image_sum += other.image_sum
        self.outer_sum += other.outer_sum
        self.count += other.count
        return self

    def result(self) -> DatasetStats:
        """The statistics of every image added (see ``compute_stats``)."""
        n = self.count
        if n == 0:
            raise ValueError("compute_stats needs at least one image")
        h, w, c = self.image_sum.shape
        scale = 255.0
        pixel_count = n * h * w
        image_sum = self.image_sum.astype(np.float64)
        mean_image = image_sum / (n * scale)
        channel_mean = image_sum.reshape(-1, c).sum(axis=0) / (pixel_count * scale)
        covariance = self.outer_sum.astype(np.float64) / (pixel_count * scale * scale) - np.outer(channel_mean,
                                                                                                  channel_mean)
        eigvals, eigvecs = np.linalg.eigh(covariance)          # ascending
        eigvals, eigvecs = eigvals[::-1], eigvecs[:, ::-1]
        eigvecs = eigvecs * np.where(eigvecs.sum(axis=0) < 0, -1.0, 1.0)
        channel_std = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
        return DatasetStats(mean_image.astype(np.float32), channel_mean.astype(np.float32),
                            channel_std.astype(np.float32), np.clip(eigvals, 0.0, None).astype(np.float32),
                            np.ascontiguousarray(eigvecs, dtype=np.float32), count=n)


def compute_stats(images: np.ndarray) -> DatasetStats:
    """Statistics of uint8 ``images`` (N, H, W, C), read in chunks and accumulated exactly.

    The covariance is over ALL training pixels (each pixel an observation of C values), as the
    paper's PCA on "the set of RGB pixel values throughout the training set" [4.1]; it is the
    population covariance (divided by the number of pixels), so ``channel_std**2`` is its diagonal.
    Eigenvectors are signed so that each column sums to a non-negative value (deterministic).
    """
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"compute_stats expects uint8 (N, H, W, C) images, got {images.dtype} {images.shape}")
    if len(images) == 0:
        raise ValueError("compute_stats needs at least one image")
    return StatsSums(*images.shape[1:]).add(images).result()
