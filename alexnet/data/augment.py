"""The augmentation op library: batched tensor ops (the cifar10-airbench way), no per-sample Python.

Batches are (B, C, H, W) tensors in channels_last memory (a permuted view of the NHWC uint8 cache)
on any device; every op keeps channels_last. Float pixels are in [0, 1] (uint8 / 255). All
randomness comes from a ``torch.Generator`` passed in (no global RNG); the ``draw_*`` ops draw on the
generator's device and the ops move draws to the batch's, so a seed gives the same batch on CPU and GPU.
The production transforms built from these ops are in alexnet.data.transforms. Arguments the ops
cannot work with are a ValueError (a caller's mistake, not the user's).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

CL = torch.channels_last


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1], channels_last kept; float input is returned unchanged."""
    if x.is_floating_point():
        return x
    return x.to(torch.float32, memory_format=CL).mul_(1 / 255)


def as_tensor(a: Any, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a,
                           dtype=torch.float32, device=like.device)


def check_crop(x: torch.Tensor, size: int) -> None:
    if size > x.shape[-2] or size > x.shape[-1]:
        raise ValueError(f"crop size {size} is larger than the {x.shape[-2]}x{x.shape[-1]} images; "
                         f"resize first (--resize-to) or pad (--padding)")


def draw_offsets(batch: int, height: int, width: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(batch, 2) int64 crop corners (top, left), uniform over every position a size x size crop fits."""
    top = torch.randint(0, height - size + 1, (batch,), generator=generator, device=generator.device)
    left = torch.randint(0, width - size + 1, (batch,), generator=generator, device=generator.device)
    return torch.stack([top, left], dim=1)


def draw_flips(batch: int, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """(batch,) bool: mirror image i horizontally [4], each with probability ``p``."""
    return torch.rand(batch, generator=generator, device=generator.device) < p


def draw_alphas(batch: int, channels: int, std: float, generator: torch.Generator) -> torch.Tensor:
    """(batch, channels) float32 PCA-lighting alphas [4.1]: independent N(0, std) draws per image and component."""
    return torch.randn(batch, channels, generator=generator, device=generator.device) * std


def crop_at(x: torch.Tensor, offsets: torch.Tensor, size: int, flips: torch.Tensor | None = None) -> torch.Tensor:
    """Crop image i of ``x`` (B, C, H, W) at ``offsets[i]`` = (top, left) to (B, C, size, size).

    ``flips`` (B,) bool mirrors crop i horizontally. ``x`` may hold a single image (a mean image)
    that is cropped at every offset. One gather over contiguous row spans, no per-sample loop.
    """
    batch = offsets.shape[0]
    if x.shape[0] not in (1, batch):
        raise ValueError(f"crop_at got {x.shape[0]} images but {batch} offsets")
    if x.shape[0] == 1 and flips is not None:
        return crop_mirror_pair(torch.cat([x, x.flip(3)]), offsets, size, flips)
    source = None if x.shape[0] == batch else torch.zeros(batch, dtype=torch.long, device=x.device)
    out = gather_crops(x, source, offsets, size)
    return out if flips is None else mirror(out, flips)


def crop_mirror_pair(pair: torch.Tensor, offsets: torch.Tensor, size: int, flips: torch.Tensor) -> torch.Tensor:
    """Crops of one image given with its mirror, ``pair`` (2, C, H, W): a mirrored crop of an image
    is a crop of its mirror at the mirrored offset, so no crop needs flipping."""
    flips = flips.to(pair.device)
    offsets = offsets.to(pair.device)
    left = torch.where(flips, pair.shape[3] - size - offsets[:, 1], offsets[:, 1])
    return gather_crops(pair, flips.long(), torch.stack([offsets[:, 0], left], 1), size)


def gather_crops(x: torch.Tensor, source: torch.Tensor | None, offsets: torch.Tensor, size: int) -> torch.Tensor:
    """Crop ``x[source[i]]`` (``x[i]`` if source is None) at ``offsets[i]``: (B, C, size, size) channels_last."""
    check_crop(x, size)
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


def mirror(x: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
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


def center_offsets(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of the central crop, rounded as torchvision's ``center_crop``."""
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central size x size crop of every image, (B, C, size, size) channels_last."""
    check_crop(x, size)
    top, left = center_offsets(x.shape[-2], x.shape[-1], size)
    return x[..., top:top + size, left:left + size].contiguous(memory_format=CL)


def lighting_shift(alphas: torch.Tensor, eigvals: Any, eigvecs: Any) -> torch.Tensor:
    """(B, C) colour shifts [p1 .. pC][a1 l1 .. aC lC]^T for per-image ``alphas`` (B, C) [4.1]."""
    eigvals, eigvecs = as_tensor(eigvals, alphas), as_tensor(eigvecs, alphas)
    return ((alphas * eigvals)[:, None, :] * eigvecs).sum(-1)    # [b, c] = sum_i alpha_bi lambda_i p_i[c]


def mean_chw(mean: Any, channels: int, like: torch.Tensor) -> torch.Tensor:
    """A (C,) mean as (1, C, 1, 1), or a mean image (H, W, C) or (C, H, W) as (1, C, H, W) channels_last."""
    m = as_tensor(mean, like)
    if m.ndim == 1:
        return m.view(1, -1, 1, 1)
    if m.ndim == 3 and m.shape[-1] == channels:     # (H, W, C): the DatasetStats layout
        return m.permute(2, 0, 1)[None].contiguous(memory_format=CL)
    if m.ndim == 3 and m.shape[0] == channels:      # (C, H, W)
        return m[None].contiguous(memory_format=CL)
    raise ValueError(f"mean must be (C,) or a (H, W, C)/(C, H, W) mean image with C={channels}, "
                     f"got shape {tuple(m.shape)}")


def ten_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The paper's ten test patches [4]: (10, B, C, size, size), each view channels_last.

    Order: top-left, top-right, bottom-left, bottom-right, centre, then the horizontal reflection
    of each of those five patches in the same order. (torchvision's ``ten_crop`` crops the mirrored
    image instead, so its 6th view is the reflection of our 2nd: the same ten patches, reordered.)
    """
    check_crop(x, size)
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


def scale_shift_(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor | None) -> None:
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


def inside_mask(offsets: torch.Tensor, size: int, pad: int, height: int, width: int,
                 flips: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 1, size, size) 1 where a (possibly mirrored) crop pixel lies inside the unpadded image, else 0."""
    ar = torch.arange(size, device=offsets.device)
    rows = offsets[:, :1] + ar - pad                      # (B, size) row in the unpadded image
    cols = offsets[:, 1:] + ar - pad
    if flips is not None:
        cols = torch.where(flips.to(offsets.device)[:, None], cols.flip(1), cols)
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
    return inside[:, None].float()


def draw_erasures(batch: int, size: int, p: float, generator: torch.Generator,
                  area: tuple[float, float] = (0.02, 0.4), ratio: tuple[float, float] = (0.3, 1 / 0.3)) -> torch.Tensor:
    """(batch, 4) int64 rectangles (top, left, height, width) of random erasing (Zhong et al. 2017, torchvision's
    RandomErasing ranges): with probability ``p`` a box of ``area`` of the size x size crop, aspect in ``ratio``
    (log-uniform); height 0 where an image keeps every pixel. Five draws per image, in a fixed order."""
    u = torch.rand(batch, 5, generator=generator, device=generator.device)
    frac = area[0] + (area[1] - area[0]) * u[:, 0]
    aspect = torch.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1])
    height = torch.sqrt(frac * size * size * aspect).round().clamp(1, size).long()
    width = torch.sqrt(frac * size * size / aspect).round().clamp(1, size).long()
    top = (u[:, 2] * (size - height + 1)).long()
    left = (u[:, 3] * (size - width + 1)).long()
    return torch.stack([top, left, height * (u[:, 4] < p), width], dim=1)


def erase_(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Set the pixels of ``boxes[i]`` (top, left, height, width) of image i of ``x`` (B, C, h, w) to 0, in place:
    after normalisation 0 is the mean pixel (torchvision RandomErasing's default value)."""
    boxes = boxes.to(x.device)
    rows, cols = torch.arange(x.shape[2], device=x.device), torch.arange(x.shape[3], device=x.device)
    top, left, height, width = boxes.unbind(1)
    in_rows = (rows >= top[:, None]) & (rows < (top + height)[:, None])       # (B, h)
    in_cols = (cols >= left[:, None]) & (cols < (left + width)[:, None])      # (B, w)
    return x.masked_fill_((in_rows[:, :, None] & in_cols[:, None, :])[:, None], 0.0)
