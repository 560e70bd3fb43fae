"""One-op-at-a-time augmentations for the tests, built from alexnet.data.augment's ops.

TrainTransform fuses these steps (and draws with the same ``draw_*`` ops, in the order offsets, flips,
alphas); the tests check each step here against per-image numpy, and the fused transform against both.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any

import torch
import torch.nn.functional as F

from alexnet.data.augment import (CL, as_tensor, check_crop, crop_at, draw_alphas, draw_flips, draw_offsets,
                                  lighting_shift, mean_chw, mirror, to_float)


def random_crop(x: torch.Tensor, size: int, generator: torch.Generator, padding: int = 0,
                return_offsets: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """A random size x size crop of each image, at its own offset [4].

    ``padding`` zero-pads every side first (pad-and-crop for small images); returned offsets are
    (top, left) in the padded image.
    """
    if padding:
        x = F.pad(x, (padding,) * 4)
    check_crop(x, size)
    offsets = draw_offsets(x.shape[0], x.shape[2], x.shape[3], size, generator)
    out = crop_at(x, offsets, size)
    return (out, offsets) if return_offsets else out


def random_flip(x: torch.Tensor, generator: torch.Generator, p: float = 0.5,
                return_flips: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Mirror each image horizontally with probability ``p`` [4]."""
    flips = draw_flips(x.shape[0], generator, p)
    out = mirror(x.contiguous(memory_format=CL), flips)
    return (out, flips) if return_flips else out


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
        alphas = draw_alphas(x.shape[0], len(eigvals), std, generator)
    alphas = alphas.to(device=x.device, dtype=torch.float32)
    out = x + lighting_shift(alphas, eigvals, eigvecs)[:, :, None, None]
    return (out, alphas) if return_alphas else out


def normalize(x: torch.Tensor, mean: Any, std: Any = None, offsets: torch.Tensor | None = None,
              flips: torch.Tensor | None = None) -> torch.Tensor:
    """Subtract ``mean`` (per channel (C,), or a mean image [4]) and divide by ``std`` (C,) if given.

    uint8 input is first scaled to [0, 1]. A mean image larger than the images is cropped at
    ``offsets`` (and mirrored by ``flips``) exactly like the images were, so each pixel loses the
    mean at the place it came from: normalize(crop(x)) == crop(x - mean).
    """
    x = to_float(x)
    m = mean_chw(mean, x.shape[1], x)
    if m.shape[-2:] != (1, 1) and m.shape[-2:] != x.shape[-2:]:
        if offsets is None:
            raise ValueError(f"the {m.shape[-2]}x{m.shape[-1]} mean image does not match the "
                             f"{x.shape[-2]}x{x.shape[-1]} images; pass the crop offsets")
        m = crop_at(m, offsets, x.shape[-1], flips)
    elif flips is not None and m.shape[-2:] != (1, 1):
        m = mirror(m.expand(x.shape[0], -1, -1, -1).contiguous(memory_format=CL), flips)
    out = x - m
    if std is not None:
        out.div_(as_tensor(std, x).view(1, -1, 1, 1))
    return out


def from_config(cls, config: dict, stats=None):
    """A TrainTransform or EvalTransform from a config dict: keys are field names, others are ignored."""
    names = {f.name for f in fields(cls) if f.init and f.name != "stats"}
    return cls(**{k: v for k, v in config.items() if k in names}, stats=stats)
