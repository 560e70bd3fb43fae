"""How images become network inputs: the preprocessing every checkpoint carries (its ``data`` entry).

``Preprocessing`` holds the training set's statistics (mean image, channel mean and std, RGB eigenvectors), the
stored image size and channels, the network's input size, the resize, the normalisation and the pixel scale; the
train and the eval transform are both built from it, so what evaluation feeds the network is what training fed
it [4].
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from alexnet.data.stats import DatasetStats, compute_stats
from alexnet.data.transforms import EvalTransform, TrainTransform


@dataclass
class Preprocessing:
    """How images become network inputs; ``to_dict`` is the ``data`` entry of every checkpoint."""

    stats: DatasetStats
    image_size: list[int]                 # stored (height, width)
    channels: int
    crop_size: int                        # the network's input side
    resize_to: int | None = None          # batched resize before cropping (d2l: 28 -> 224)
    normalization: str = "mean_image"     # mean_image [4] | channel | none
    pixel_scale: float = 1.0              # 255: inputs in 0-255 pixel units, as the paper feeds them
    source: str = ""
    extra: dict = field(default_factory=dict)   # keys a newer version wrote, kept on a round trip

    @property
    def decode_rule(self) -> str:
        """How an image file becomes the stored square: "square" (ours [4]) or "torchvision" (converted weights)."""
        return self.extra.get("decode", "square")

    @classmethod
    def of(cls, train_set, *, crop_size: int, resize_to: int, normalization: str, pixel_scale: float):
        """The spec of a training set (its statistics computed here when the cache has none)."""
        stats = train_set.stats or compute_stats(np.asarray(train_set.images))
        _, height, width, channels = train_set.images.shape
        return cls(stats, [height, width], channels, crop_size, resize_to or None, normalization, pixel_scale,
                   train_set.source)

    def to_dict(self) -> dict:
        values = asdict(self)
        values["stats"], extra = self.stats.to_dict(), values.pop("extra")
        return {**extra, **values}

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocessing":
        names = {"stats", "image_size", "channels", "crop_size", "resize_to", "normalization", "pixel_scale",
                 "source"}
        known = {k: v for k, v in data.items() if k in names}
        known["stats"] = DatasetStats.from_dict(data["stats"])
        known.setdefault("pixel_scale", 1.0)     # checkpoints from before pixel_scale was stored
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})

    def train_transform(self, *, padding: int = 0, flip: bool = True, pca_std: float = 0.0,
                        erase: float = 0.0) -> TrainTransform:
        """Random crops, flips and PCA lighting [4] (and random erasing) on top of this preprocessing."""
        return TrainTransform(crop_size=self.crop_size, padding=padding, flip=flip, pca_std=pca_std, erase=erase,
                              normalization=self.normalization, stats=self.stats, resize_to=self.resize_to,
                              pixel_scale=self.pixel_scale)

    def eval_transform(self, ten_crop: bool = False, flip_view: bool = False) -> EvalTransform:
        """The centre view, the centre view and its mirror image (``flip_view``), or the paper's 10 views [4]."""
        return EvalTransform(crop_size=self.crop_size, normalization=self.normalization, stats=self.stats,
                             resize_to=self.resize_to, ten_crop=ten_crop, flip_view=flip_view,
                             pixel_scale=self.pixel_scale)
