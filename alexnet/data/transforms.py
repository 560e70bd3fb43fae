"""The production transforms: ``TrainTransform`` (training augmentation [4]) and ``EvalTransform``
(the test-time views [4]), built from the ops in alexnet.data.augment and normalising the same way.

Both map uint8 (B, C, H, W) channels_last batches to float32 channels_last batches. Problems with the
user's recipe or data (a crop larger than the images, statistics that do not fit them) are UsageError;
building a transform without what it needs is a ValueError.
"""
from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, ClassVar, Sequence

import torch
import torch.nn.functional as F

from alexnet.data.augment import (CL, as_tensor, center_crop, crop_mirror_pair, draw_alphas, draw_erasures, draw_flips,
                                  draw_offsets, erase_, gather_crops, inside_mask, lighting_shift, mean_chw, mirror, resize, resized_shape,
                                  scale_shift_, ten_crop, to_float)
from alexnet.errors import UsageError
from alexnet.ops.augment import crop_mirror_normalize

if TYPE_CHECKING:
    from alexnet.data.stats import DatasetStats

NORMALIZATIONS = ("mean_image", "channel", "none")


@dataclass
class Draw:
    """The random choices of one training batch: crop corners, mirror flags, lighting alphas, erased boxes."""
    offsets: torch.Tensor                 # (B, 2) int64 (top, left), in the padded image
    flips: torch.Tensor | None = None     # (B,) bool
    alphas: torch.Tensor | None = None    # (B, C) float32
    erasures: torch.Tensor | None = None  # (B, 4) int64 (top, left, height, width) in the crop; height 0: none


@dataclass(eq=False)
class _Normalizer:
    """Shared by the train and eval transforms, so both normalise exactly the same way."""
    crop_size: int
    _: KW_ONLY
    normalization: str = "mean_image"
    stats: "DatasetStats | None" = None
    resize_to: int | None = None
    pixel_scale: float = 1.0     # outputs multiplied by this: 255 feeds 0-255 pixels as the paper and Caffe did
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise UsageError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {self.normalization!r}")
        if self.normalization != "none" and self.stats is None:
            raise ValueError(f"normalization={self.normalization!r} needs the training set's statistics "
                             f"(DatasetStats from `alexnet prepare`); pass stats or use normalization='none'")

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_cache"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _cache={})

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.resize_to is None else resize(x, self.resize_to)

    def _mean_image(self, x: torch.Tensor) -> torch.Tensor:
        """The mean image (1, C, H, W) on x's device, resized like the images if need be."""
        key = (x.device, tuple(x.shape[1:]))
        if key not in self._cache:
            if self.stats.mean_image.shape[-1] != x.shape[1]:
                raise _mean_mismatch(self.stats.mean_image.shape, x)
            m = mean_chw(self.stats.mean_image, x.shape[1], x)
            if self.resize_to is not None:    # resizing is linear: resize(mean) == mean of resized
                m = resize(m, self.resize_to)
            if m.shape[1:] != x.shape[1:]:
                raise _mean_mismatch((m.shape[2], m.shape[3], m.shape[1]), x)
            self._cache[key] = m
        return self._cache[key]

    def _channel(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-channel mean and std (C,) on x's device."""
        mean, std = (as_tensor(a, x) for a in (self.stats.channel_mean, self.stats.channel_std))
        if len(mean) != x.shape[1]:
            raise UsageError(f"the dataset statistics have {len(mean)} channels, the images {x.shape[1]}")
        return mean, std


def _mean_mismatch(hwc: Sequence[int], x: torch.Tensor) -> UsageError:
    return UsageError(f"the dataset's {hwc[0]}x{hwc[1]}x{hwc[2]} mean image does not match "
                      f"the {x.shape[2]}x{x.shape[3]}x{x.shape[1]} images (stats from another cache?)")


@dataclass(eq=False, kw_only=True)
class TrainTransform(_Normalizer):
    """The training augmentation [4]: resize (optional), random crop, flip, PCA lighting, normalise.

    ``__call__(x, generator)`` maps a uint8 (B, C, H, W) batch to float32 (B, C, crop, crop),
    channels_last. normalization: "mean_image" subtracts the training mean image at each crop's
    offsets [4]; "channel" uses per-channel mean and std; "none" leaves [0, 1] pixels.
    ``padding`` pixels are 0 in the output (zero padding of the normalised image). ``erase``: random erasing's
    probability (not in the paper; Zhong et al. 2017), a box of the normalised crop set to 0, drawn last.
    """
    padding: int = 0
    flip: bool = True
    pca_std: float = 0.0
    erase: float = 0.0
    accepts_index: ClassVar[bool] = True     # BatchLoader may pass the whole dataset and the batch's index

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pca_std > 0 and self.stats is None:
            raise ValueError("pca_std > 0 needs the training set's eigenvalues/eigenvectors (DatasetStats); "
                             "pass stats or set pca_std=0")

    def draw(self, batch: int, height: int, width: int, generator: torch.Generator) -> Draw:
        """The batch's random choices, drawn in a fixed order: offsets, flips, alphas, erasures."""
        if self.resize_to is not None:
            height, width = resized_shape(height, width, self.resize_to)
        pad = 2 * self.padding
        if self.crop_size > min(height, width) + pad:
            raise UsageError(f"--crop-size {self.crop_size} is larger than the {height}x{width} images "
                             f"(+{self.padding} padding); set --resize-to or --padding")
        offsets = draw_offsets(batch, height + pad, width + pad, self.crop_size, generator)
        flips = draw_flips(batch, generator) if self.flip else None
        alphas = draw_alphas(batch, len(self.stats.eigvals), self.pca_std, generator) if self.pca_std > 0 else None
        erasures = draw_erasures(batch, self.crop_size, self.erase, generator) if self.erase > 0 else None
        return Draw(offsets, flips, alphas, erasures)

    def apply(self, x: torch.Tensor, draw: Draw, index: torch.Tensor | None = None) -> torch.Tensor:
        """Augment ``x`` (or ``x[index]``) with the given random choices."""
        out = self._crop_normalize(x, draw, index)
        return out if draw.erasures is None else erase_(out, draw.erasures)

    def _crop_normalize(self, x: torch.Tensor, draw: Draw, index: torch.Tensor | None) -> torch.Tensor:
        if index is not None and (self.resize_to is not None or self.padding):
            x, index = x[index.to(x.device)], None
        x = self._prepare(x)                                  # uint8, or float in [0, 1] once resized
        size, pad, (height, width) = self.crop_size, self.padding, x.shape[2:]
        scale = 255.0 if x.dtype == torch.uint8 else 1.0     # work in the input's scale, divide once at the end
        multiplier, shift = self._multiplier_shift(x, draw, scale)
        if not pad and x.dtype == torch.uint8 and x.device.type == "cpu":
            out = self._fused(x, draw, index, scale, multiplier, shift)
            if out is not None:
                return out
        if pad:
            x = F.pad(x, (pad,) * 4)
        out = gather_crops(x, index, draw.offsets, size)    # (B, C, size, size), straight from the dataset
        if draw.flips is not None:
            out = mirror(out, draw.flips)
        out = out.to(torch.float32)
        if self.normalization == "mean_image":                # [4] the mean where each pixel came from
            flips = draw.flips if draw.flips is not None else torch.zeros(len(out), dtype=torch.bool)
            out.sub_(crop_mirror_pair(self._mean_pair(x, scale, pad), draw.offsets, size, flips))
        scale_shift_(out, multiplier, shift)
        if pad:
            out.mul_(inside_mask(draw.offsets.to(x.device), size, pad, height, width, draw.flips))
        return out

    def _multiplier_shift(self, x: torch.Tensor, draw: Draw, scale: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The normalisation after any mean-image subtraction, out = shift[b, c] + (pixel - mean) * multiplier[c]:
        multiplier (C,) and shift (B, C) or None, on x's device, for pixels in x's ``scale`` (255: uint8)."""
        multiplier = torch.full((x.shape[1],), 1 / scale, device=x.device)
        shift = None
        if draw.alphas is not None:   # [4.1] added in [0, 1] pixel scale, before any division by std
            shift = lighting_shift(draw.alphas.to(x.device), self.stats.eigvals, self.stats.eigvecs)
        if self.normalization == "channel":
            mean, std = self._channel(x)
            shift = -mean if shift is None else shift - mean
            shift, multiplier = shift / std, multiplier / std
        if self.pixel_scale != 1.0:
            multiplier = multiplier * self.pixel_scale
            shift = None if shift is None else shift * self.pixel_scale
        return multiplier, shift

    def _fused(self, x: torch.Tensor, draw: Draw, index: torch.Tensor | None, scale: float,
               multiplier: torch.Tensor, shift: torch.Tensor | None) -> torch.Tensor | None:
        """The unpadded uint8 CPU case in one pass (alexnet.ops.augment's kernel), bit-identical to the PyTorch
        path below; None where the kernel is unavailable or does not apply."""
        mean_pair = None
        if self.normalization == "mean_image":
            mean_pair = self._mean_pair(x, scale, 0).permute(0, 2, 3, 1)    # (2, H, W, C), contiguous
        return crop_mirror_normalize(x.permute(0, 2, 3, 1), index, draw.offsets, self.crop_size, draw.flips,
                                     mean_pair, multiplier, shift)

    def _mean_pair(self, x: torch.Tensor, scale: float, pad: int) -> torch.Tensor:
        """(2, C, H, W): the (padded) mean image in x's pixel scale and its mirror image."""
        key = ("pair", x.device, tuple(x.shape[1:]), scale, pad)
        if key not in self._cache:
            mean = self._mean_image(x[:, :, pad:x.shape[2] - pad, pad:x.shape[3] - pad]) * scale
            mean = F.pad(mean, (pad,) * 4) if pad else mean
            self._cache[key] = torch.cat([mean, mean.flip(3)]).contiguous(memory_format=CL)
        return self._cache[key]

    def __call__(self, x: torch.Tensor, generator: torch.Generator, index: torch.Tensor | None = None) -> torch.Tensor:
        """Augment the uint8 batch ``x``; with ``index``, ``x`` is a whole dataset and the batch is
        ``x[index]``, cropped from it without first copying the whole images."""
        batch = x.shape[0] if index is None else len(index)
        return self.apply(x, self.draw(batch, x.shape[2], x.shape[3], generator), index)


@dataclass(eq=False, kw_only=True)
class EvalTransform(_Normalizer):
    """The test-time view [4]: normalise exactly as in training, then the centre crop or the ten crops.

    ``__call__(x)`` maps uint8 (B, C, H, W) to float32 (B, C, crop, crop), or with ``ten_crop``
    to (10, B, C, crop, crop) in ``ten_crop``'s order, or with ``flip_view`` to (2, B, C, crop, crop): the centre
    view and its mirror image (``ten_crop``'s views include the mirrors already).
    """
    ten_crop: bool = False
    flip_view: bool = False

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = to_float(self._prepare(x))
        if self.crop_size > min(x.shape[-2], x.shape[-1]):
            raise UsageError(f"--crop-size {self.crop_size} is larger than the {x.shape[-2]}x{x.shape[-1]} images; "
                             f"resize first (--resize-to) or pad (--padding)")
        if self.normalization == "mean_image":
            x = x - self._mean_image(x)
        elif self.normalization == "channel":
            mean, std = self._channel(x)
            x = x - mean.view(1, -1, 1, 1)
            x.div_(std.view(1, -1, 1, 1))
        if self.pixel_scale != 1.0:
            x = x * self.pixel_scale
        if self.ten_crop:
            return ten_crop(x, self.crop_size)
        centre = center_crop(x, self.crop_size)
        return torch.stack([centre, centre.flip(3)]) if self.flip_view else centre
