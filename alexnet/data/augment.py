"""Data augmentation as a few batched tensor ops (the cifar10-airbench way): no per-sample Python.

Batches are (B, C, H, W) tensors in channels_last memory (a permuted view of the NHWC uint8 cache)
on any device; every op keeps channels_last. Float pixels are in [0, 1] (uint8 / 255). All
randomness comes from a ``torch.Generator`` passed in (no global RNG); draws are made on the
generator's device and moved to the batch's, so a seed gives the same batch on CPU and GPU.
"""
from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from alexnet.errors import UsageError

if TYPE_CHECKING:
    from alexnet.data.stats import DatasetStats

NORMALIZATIONS = ("mean_image", "channel", "none")
CL = torch.channels_last


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1], channels_last kept; float input is returned unchanged."""
    if x.is_floating_point():
        return x
    return x.to(torch.float32, memory_format=CL).mul_(1 / 255)


def _as_tensor(a: Any, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a,
                           dtype=torch.float32, device=like.device)


def _check_crop(x: torch.Tensor, size: int) -> None:
    if size > x.shape[-2] or size > x.shape[-1]:
        raise UsageError(f"crop size {size} is larger than the {x.shape[-2]}x{x.shape[-1]} images; "
                         f"resize first (resize_to) or pad (padding)")


def draw_offsets(batch: int, height: int, width: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(batch, 2) int64 crop corners (top, left), uniform over every position a size x size crop fits."""
    top = torch.randint(0, height - size + 1, (batch,), generator=generator, device=generator.device)
    left = torch.randint(0, width - size + 1, (batch,), generator=generator, device=generator.device)
    return torch.stack([top, left], dim=1)


def crop_at(x: torch.Tensor, offsets: torch.Tensor, size: int, flips: torch.Tensor | None = None) -> torch.Tensor:
    """Crop image i of ``x`` (B, C, H, W) at ``offsets[i]`` = (top, left) to (B, C, size, size).

    ``flips`` (B,) bool mirrors crop i horizontally. ``x`` may hold a single image (a mean image)
    that is cropped at every offset. One gather over contiguous row spans, no per-sample loop.
    """
    batch = offsets.shape[0]
    if x.shape[0] not in (1, batch):
        raise UsageError(f"crop_at got {x.shape[0]} images but {batch} offsets")
    if x.shape[0] == 1 and flips is not None:
        return _crop_mirror_pair(torch.cat([x, x.flip(3)]), offsets, size, flips)
    source = None if x.shape[0] == batch else torch.zeros(batch, dtype=torch.long, device=x.device)
    out = _gather_crops(x, source, offsets, size)
    return out if flips is None else _mirror(out, flips)


def _crop_mirror_pair(pair: torch.Tensor, offsets: torch.Tensor, size: int, flips: torch.Tensor) -> torch.Tensor:
    """Crops of one image given with its mirror, ``pair`` (2, C, H, W): a mirrored crop of an image
    is a crop of its mirror at the mirrored offset, so no crop needs flipping."""
    flips = flips.to(pair.device)
    offsets = offsets.to(pair.device)
    left = torch.where(flips, pair.shape[3] - size - offsets[:, 1], offsets[:, 1])
    return _gather_crops(pair, flips.long(), torch.stack([offsets[:, 0], left], 1), size)


def _gather_crops(x: torch.Tensor, source: torch.Tensor | None, offsets: torch.Tensor, size: int) -> torch.Tensor:
    """Crop ``x[source[i]]`` (``x[i]`` if source is None) at ``offsets[i]``: (B, C, size, size) channels_last."""
    _check_crop(x, size)
    _, channels, height, width = x.shape
    offsets = offsets.to(x.device)
    batch, top, left = offsets.shape[0], offsets[:, 0], offsets[:, 1]
    if source is None:
        source = torch.arange(batch, device=x.device)
    nhwc = x.permute(0, 2, 3, 1).contiguous()                                       # (N, H, W, C)
    windows = nhwc.view(-1, width * channels).unfold(1, size * channels, channels)  # (N*H, W-size+1, size*C)
    rows = (source.to(x.device) * height + top)[:, None] + torch.arange(size, device=x.device)  # (B, size)
    out = windows[rows.reshape(-1), left.repeat_interleave(size)]                    # (B*size, size*C)
    return out.view(batch, size, size, channels).permute(0, 3, 1, 2)                 # (B, C, size, size) CL


def _mirror(x: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """``x`` (B, C, H, W) with image i mirrored horizontally where flips[i]; channels_last."""
    flips = flips.to(x.device)
    if x.device.type == "meta":   # no data-dependent shapes there
        return torch.where(flips[:, None, None, None], x.flip(3), x)
    # whole-image index_select and flip are memcpy-fast; per-element masked writes are not
    nhwc, chosen = x.permute(0, 2, 3, 1), flips.nonzero().squeeze(1)
    both = torch.cat([nhwc, nhwc.index_select(0, chosen).flip(2)])
    pick = torch.arange(len(x), device=x.device)
    pick[chosen] = len(x) + torch.arange(len(chosen), device=x.device)
    return both.index_select(0, pick).permute(0, 3, 1, 2)


def random_crop(x: torch.Tensor, size: int, generator: torch.Generator, padding: int = 0,
                return_offsets: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """A random size x size crop of each image, at its own offset [4].

    ``padding`` zero-pads every side first (pad-and-crop for small images); returned offsets are
    (top, left) in the padded image.
    """
    if padding:
        x = F.pad(x, (padding,) * 4)
    _check_crop(x, size)
    offsets = draw_offsets(x.shape[0], x.shape[2], x.shape[3], size, generator)
    out = crop_at(x, offsets, size)
    return (out, offsets) if return_offsets else out


def center_offsets(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of the central crop, rounded as torchvision's ``center_crop``."""
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central size x size crop of every image, (B, C, size, size) channels_last."""
    _check_crop(x, size)
    top, left = center_offsets(x.shape[-2], x.shape[-1], size)
    return x[..., top:top + size, left:left + size].contiguous(memory_format=CL)


def random_flip(x: torch.Tensor, generator: torch.Generator, p: float = 0.5,
                return_flips: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Mirror each image horizontally with probability ``p`` [4]."""
    flips = torch.rand(x.shape[0], generator=generator, device=generator.device) < p
    out = _mirror(x.contiguous(memory_format=CL), flips)
    return (out, flips) if return_flips else out


def lighting_shift(alphas: torch.Tensor, eigvals: Any, eigvecs: Any) -> torch.Tensor:
    """(B, C) colour shifts [p1 .. pC][a1 l1 .. aC lC]^T for per-image ``alphas`` (B, C) [4.1]."""
    eigvals, eigvecs = _as_tensor(eigvals, alphas), _as_tensor(eigvecs, alphas)
    return ((alphas * eigvals)[:, None, :] * eigvecs).sum(-1)    # [b, c] = sum_i alpha_bi lambda_i p_i[c]


def pca_lighting(x: torch.Tensor, eigvals: Any, eigvecs: Any, generator: torch.Generator, std: float = 0.1,
                 alphas: torch.Tensor | None = None,
                 return_alphas: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """"Fancy PCA" colour augmentation [4.1], on float images in [0, 1].

    To every pixel of image b add sum_i p_i * alpha_bi * lambda_i, where (p_i, lambda_i) are the
    eigenvectors (columns of ``eigvecs``) and eigenvalues of the covariance of the training set's
    RGB values, pixels and eigenvalues both *in [0, 1] scale* (the fb.resnet.torch convention;
    eigenvalues of 0..255 values are 255^2 larger, so the shift would be 255 times larger relative
    to the pixels). The alphas are three independent N(0, std) draws per image per presentation
    (not one alpha for all, not PCA per image). Pass ``alphas`` (B, C) to use given values.
    """
    x = to_float(x)
    if alphas is None:
        alphas = torch.randn(x.shape[0], len(eigvals), generator=generator, device=generator.device) * std
    alphas = alphas.to(device=x.device, dtype=torch.float32)
    out = x + lighting_shift(alphas, eigvals, eigvecs)[:, :, None, None]
    return (out, alphas) if return_alphas else out


def _mean_chw(mean: Any, channels: int, like: torch.Tensor) -> torch.Tensor:
    """A (C,) mean as (1, C, 1, 1), or a mean image (H, W, C) or (C, H, W) as (1, C, H, W) channels_last."""
    m = _as_tensor(mean, like)
    if m.ndim == 1:
        return m.view(1, -1, 1, 1)
    if m.ndim == 3 and m.shape[-1] == channels:     # (H, W, C): the DatasetStats layout
        return m.permute(2, 0, 1)[None].contiguous(memory_format=CL)
    if m.ndim == 3 and m.shape[0] == channels:      # (C, H, W)
        return m[None].contiguous(memory_format=CL)
    raise UsageError(f"mean must be (C,) or a (H, W, C)/(C, H, W) mean image with C={channels}, "
                     f"got shape {tuple(m.shape)}")


def normalize(x: torch.Tensor, mean: Any, std: Any = None, offsets: torch.Tensor | None = None,
              flips: torch.Tensor | None = None) -> torch.Tensor:
    """Subtract ``mean`` (per channel (C,), or a mean image [4]) and divide by ``std`` (C,) if given.

    uint8 input is first scaled to [0, 1]. A mean image larger than the images is cropped at
    ``offsets`` (and mirrored by ``flips``) exactly like the images were, so each pixel loses the
    mean at the place it came from: normalize(crop(x)) == crop(x - mean).
    """
    x = to_float(x)
    m = _mean_chw(mean, x.shape[1], x)
    if m.shape[-2:] != (1, 1) and m.shape[-2:] != x.shape[-2:]:
        if offsets is None:
            raise UsageError(f"the {m.shape[-2]}x{m.shape[-1]} mean image does not match the "
                             f"{x.shape[-2]}x{x.shape[-1]} images; pass the crop offsets")
        m = crop_at(m, offsets, x.shape[-1], flips)
    elif flips is not None and m.shape[-2:] != (1, 1):
        m = _mirror(m.expand(x.shape[0], -1, -1, -1).contiguous(memory_format=CL), flips)
    out = x - m
    if std is not None:
        out.div_(_as_tensor(std, x).view(1, -1, 1, 1))
    return out


def ten_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The paper's ten test patches [4]: (10, B, C, size, size), each view channels_last.

    Order: top-left, top-right, bottom-left, bottom-right, centre, then the horizontal reflection
    of each of those five patches in the same order. (torchvision's ``ten_crop`` crops the mirrored
    image instead, so its 6th view is the reflection of our 2nd: the same ten patches, reordered.)
    """
    _check_crop(x, size)
    batch, channels, height, width = x.shape
    corners = [(0, 0), (0, width - size), (height - size, 0), (height - size, width - size),
               center_offsets(height, width, size)]
    out = x.new_empty((10, batch, size, size, channels)).permute(0, 1, 4, 2, 3)   # out[i] channels_last
    for i, (top, left) in enumerate(corners):
        out[i] = x[..., top:top + size, left:left + size]
        out[i + 5] = out[i].flip(3)
    return out


def resize(x: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """Batched bilinear resize with antialiasing (PIL-like), float [0, 1] out.

    ``size``: an int sets the shorter side (torchvision's ``Resize`` rule), a pair sets (H, W).
    """
    x = to_float(x)
    out = F.interpolate(x, size=resized_shape(x.shape[-2], x.shape[-1], size), mode="bilinear",
                        antialias=True, align_corners=False)
    return out.contiguous(memory_format=CL)


def resized_shape(height: int, width: int, size: int | Sequence[int]) -> tuple[int, int]:
    """(H, W) after ``resize(x, size)``."""
    if not isinstance(size, int):
        return int(size[0]), int(size[1])
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


@dataclass
class Draw:
    """The random choices of one training batch: crop corners, mirror flags, lighting alphas."""
    offsets: torch.Tensor                 # (B, 2) int64 (top, left), in the padded image
    flips: torch.Tensor | None = None     # (B,) bool
    alphas: torch.Tensor | None = None    # (B, C) float32


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
            raise UsageError(f"normalization={self.normalization!r} needs the training set's statistics "
                             f"(DatasetStats from `alexnet prepare`); pass stats or use normalization='none'")

    @classmethod
    def from_config(cls, config: dict, stats: "DatasetStats | None" = None):
        """Build from a config dict; keys are the field names, others are ignored."""
        names = {f.name for f in fields(cls) if f.init and f.name != "stats"}
        return cls(**{k: v for k, v in config.items() if k in names}, stats=stats)

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
            m = _mean_chw(self.stats.mean_image, x.shape[1], x)
            if self.resize_to is not None:    # resizing is linear: resize(mean) == mean of resized
                m = resize(m, self.resize_to)
            if m.shape[1:] != x.shape[1:]:
                raise UsageError(f"the dataset's {m.shape[2]}x{m.shape[3]}x{m.shape[1]} mean image does not match "
                                 f"the {x.shape[2]}x{x.shape[3]}x{x.shape[1]} images (stats from another cache?)")
            self._cache[key] = m
        return self._cache[key]

    def _channel(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-channel mean and std (C,) on x's device."""
        mean, std = (_as_tensor(a, x) for a in (self.stats.channel_mean, self.stats.channel_std))
        if len(mean) != x.shape[1]:
            raise UsageError(f"the dataset statistics have {len(mean)} channels, the images {x.shape[1]}")
        return mean, std


@dataclass(eq=False, kw_only=True)
class TrainTransform(_Normalizer):
    """The training augmentation [4]: resize (optional), random crop, flip, PCA lighting, normalise.

    ``__call__(x, generator)`` maps a uint8 (B, C, H, W) batch to float32 (B, C, crop, crop),
    channels_last. normalization: "mean_image" subtracts the training mean image at each crop's
    offsets [4]; "channel" uses per-channel mean and std; "none" leaves [0, 1] pixels.
    ``padding`` pixels are 0 in the output (zero padding of the normalised image).
    """
    padding: int = 0
    flip: bool = True
    pca_std: float = 0.0
    accepts_index: ClassVar[bool] = True     # BatchLoader may pass the whole dataset and the batch's index

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pca_std > 0 and self.stats is None:
            raise UsageError("pca_std > 0 needs the training set's eigenvalues/eigenvectors (DatasetStats); "
                             "pass stats or set pca_std=0")

    def draw(self, batch: int, height: int, width: int, generator: torch.Generator) -> Draw:
        """The batch's random choices, drawn in a fixed order: offsets, flips, alphas."""
        if self.resize_to is not None:
            height, width = resized_shape(height, width, self.resize_to)
        pad = 2 * self.padding
        if self.crop_size > min(height, width) + pad:
            raise UsageError(f"crop size {self.crop_size} is larger than the {height}x{width} images "
                             f"(+{self.padding} padding); set resize_to or padding")
        offsets = draw_offsets(batch, height + pad, width + pad, self.crop_size, generator)
        flips = torch.rand(batch, generator=generator, device=generator.device) < 0.5 if self.flip else None
        alphas = None
        if self.pca_std > 0:
            alphas = torch.randn(batch, len(self.stats.eigvals), generator=generator,
                                 device=generator.device) * self.pca_std
        return Draw(offsets, flips, alphas)

    def apply(self, x: torch.Tensor, draw: Draw, index: torch.Tensor | None = None) -> torch.Tensor:
        """Augment ``x`` (or ``x[index]``) with the given random choices."""
        if index is not None and (self.resize_to is not None or self.padding):
            x, index = x[index.to(x.device)], None
        x = self._prepare(x)                                  # uint8, or float in [0, 1] once resized
        size, pad, (height, width) = self.crop_size, self.padding, x.shape[2:]
        scale = 255.0 if x.dtype == torch.uint8 else 1.0     # work in the input's scale, divide once at the end
        if pad:
            x = F.pad(x, (pad,) * 4)
        out = _gather_crops(x, index, draw.offsets, size)    # (B, C, size, size), straight from the dataset
        if draw.flips is not None:
            out = _mirror(out, draw.flips)
        out = out.to(torch.float32)
        if self.normalization == "mean_image":                # [4] the mean where each pixel came from
            flips = draw.flips if draw.flips is not None else torch.zeros(len(out), dtype=torch.bool)
            out.sub_(_crop_mirror_pair(self._mean_pair(x, scale, pad), draw.offsets, size, flips))
        multiplier = torch.full((out.shape[1],), 1 / scale, device=out.device)
        shift = None
        if draw.alphas is not None:   # [4.1] added in [0, 1] pixel scale, before any division by std
            shift = lighting_shift(draw.alphas.to(out.device), self.stats.eigvals, self.stats.eigvecs)
        if self.normalization == "channel":
            mean, std = self._channel(out)
            shift = -mean if shift is None else shift - mean
            shift, multiplier = shift / std, multiplier / std
        if self.pixel_scale != 1.0:
            multiplier = multiplier * self.pixel_scale
            shift = None if shift is None else shift * self.pixel_scale
        _scale_shift_(out, multiplier, shift)
        if pad:
            out.mul_(_inside_mask(draw.offsets.to(x.device), size, pad, height, width, draw.flips))
        return out

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


def _scale_shift_(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor | None) -> None:
    """In place, one pass: x[b, c] = x[b, c] * scale[c] + shift[b, c]; scale (C,), shift (B, C) or None.

    Works on NHWC rows of W*C values (a broadcast over a length-C inner dimension is ~6x slower).
    """
    batch, channels, height, width = x.shape
    if not x.is_contiguous(memory_format=CL):
        x.mul_(scale.view(1, -1, 1, 1))
        if shift is not None:
            x.add_(shift.view(-1, channels, 1, 1))
        return
    rows = x.permute(0, 2, 3, 1).view(batch, height, width * channels)
    scale_row = scale.repeat(width)[None, None, :]                        # [.., w*C + c] = scale[c]
    if shift is None:
        rows.mul_(scale_row)
    else:
        torch.addcmul(shift.view(-1, channels).repeat(1, width)[:, None, :], rows, scale_row, out=rows)


def _inside_mask(offsets: torch.Tensor, size: int, pad: int, height: int, width: int,
                 flips: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 1, size, size) 1 where a (possibly mirrored) crop pixel lies inside the unpadded image, else 0."""
    ar = torch.arange(size, device=offsets.device)
    rows = offsets[:, :1] + ar - pad                      # (B, size) row in the unpadded image
    cols = offsets[:, 1:] + ar - pad
    if flips is not None:
        cols = torch.where(flips.to(offsets.device)[:, None], cols.flip(1), cols)
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
    return inside[:, None].float()


@dataclass(eq=False, kw_only=True)
class EvalTransform(_Normalizer):
    """The test-time view [4]: normalise exactly as in training, then the centre crop or the ten crops.

    ``__call__(x)`` maps uint8 (B, C, H, W) to float32 (B, C, crop, crop), or with ``ten_crop``
    to (10, B, C, crop, crop) in ``ten_crop``'s order.
    """
    ten_crop: bool = False

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = to_float(self._prepare(x))
        if self.normalization == "mean_image":
            x = x - self._mean_image(x)
        elif self.normalization == "channel":
            mean, std = self._channel(x)
            x = x - mean.view(1, -1, 1, 1)
            x.div_(std.view(1, -1, 1, 1))
        if self.pixel_scale != 1.0:
            x = x * self.pixel_scale
        return ten_crop(x, self.crop_size) if self.ten_crop else center_crop(x, self.crop_size)
