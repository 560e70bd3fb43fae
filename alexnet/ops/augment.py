"""The training augmentation's crop, mirror, convert, mean subtraction, scale and shift in one pass (CPU).

``crop_mirror_normalize`` runs the compiled kernel of ``augment_cpu.cpp`` (DALI calls the op
CropMirrorNormalize), built, cached and loaded by ``alexnet.ops._kernels`` on first use; it returns None,
so that the caller takes its PyTorch path, when the kernel is unavailable (no compiler, a failed build,
``ALEXNET_AUGMENT_KERNEL=torch``) or does not apply (tensors off the CPU, input not contiguous uint8 NHWC,
crops or image indices out of range). Its output is bit-identical to ``alexnet.data.transforms``' PyTorch path
(the same float operations in the same order, with PyTorch's fused multiply-add where its addcmul has one).
"""
from __future__ import annotations

import ctypes

import torch

from alexnet.ops import _kernels

SOURCE_NAME = "augment_cpu.cpp"   # package data of alexnet.ops (pyproject.toml)
ENV_VAR = "ALEXNET_AUGMENT_KERNEL"
_P, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
# x, source, offsets, flips, mean_pair, scale, shift, out; B, H, W, C, size, n_images; fma, threads
_SIGNATURES = {"crop_mirror_normalize_u8_f32": [_P] * 8 + [_I64] * 6 + [_INT] * 2}
# -ffp-contract=off: the compiler fuses no multiply and add on its own; the kernel fuses where PyTorch does
KERNEL = _kernels.Kernel(__package__, SOURCE_NAME, _SIGNATURES, ENV_VAR, "augment", what="augmentation",
                         extra_flags=["-ffp-contract=off"])
_torch_fma: list[bool] = []


def load() -> ctypes.CDLL | None:
    """The compiled library (built on first use), or None when it is unavailable or opted out of."""
    return None if KERNEL.opted_out() else KERNEL.load()


def torch_fuses_multiply_add() -> bool:
    """Whether PyTorch's CPU addcmul (the last step of the PyTorch path) rounds shift + v * s once (an FMA, as its
    AVX2/AVX-512 kernels do) rather than twice; the kernel then does the same."""
    if not _torch_fma:
        v = torch.full((67,), 1 + 2.0 ** -12)       # v * v = 1 + 2^-11 + 2^-24: the last term is lost to rounding
        _torch_fma.append(bool(torch.addcmul(torch.full((67,), -1.0), v, v)[0] != 2.0 ** -11))
    return _torch_fma[0]


def _in_range(t: torch.Tensor, low: int, high: int) -> bool:
    return t.numel() == 0 or (int(t.min()) >= low and int(t.max()) <= high)


def crop_mirror_normalize(x: torch.Tensor, source: torch.Tensor | None, offsets: torch.Tensor, size: int,
                          flips: torch.Tensor | None, mean_pair: torch.Tensor | None, scale: torch.Tensor,
                          shift: torch.Tensor | None) -> torch.Tensor | None:
    """(B, C, size, size) float32 channels_last: for each b, image ``source[b]`` (b if None) of the uint8 NHWC
    ``x`` (N, H, W, C), cropped at ``offsets[b]`` = (top, left) to size x size, mirrored where ``flips[b]``,
    minus the mean image where each pixel came from, times ``scale`` (C,), plus ``shift`` (B, C) or (C,) (None:
    nothing added). ``mean_pair`` (2, H, W, C) float32 is the mean image in x's 0-255 scale and its mirror image
    (a mirrored crop's mean is the mirror's crop at the mirrored offset); None: no subtraction. None when the
    kernel is unavailable or does not apply (see the module's docstring)."""
    if x.device.type != "cpu" or x.dtype != torch.uint8 or x.dim() != 4 or not x.is_contiguous():
        return None
    library = load()
    if library is None:
        return None
    images, height, width, channels = x.shape
    batch = offsets.shape[0]
    if not 0 < size <= min(height, width) or offsets.shape != (batch, 2) or offsets.is_floating_point():
        return None
    offsets = offsets.to("cpu", torch.int64).contiguous()
    if not (_in_range(offsets[:, 0], 0, height - size) and _in_range(offsets[:, 1], 0, width - size)):
        return None
    if source is not None:
        if source.shape != (batch,) or source.is_floating_point() or source.dtype == torch.bool:
            return None
        source = source.to("cpu", torch.int64).contiguous()
        if not _in_range(source, 0, images - 1):
            return None
    elif images < batch:
        return None
    if flips is not None:
        if flips.shape != (batch,):
            return None
        flips = flips.to("cpu", torch.uint8).contiguous()
    if mean_pair is not None:
        if mean_pair.shape != (2, height, width, channels) or mean_pair.device.type != "cpu":
            return None
        mean_pair = mean_pair.to(torch.float32).contiguous()
    if scale.shape != (channels,) or scale.device.type != "cpu":
        return None
    scale = scale.to(torch.float32).contiguous()
    if shift is not None:
        if shift.shape == (channels,):   # one shift for every image
            shift = shift.expand(batch, channels)
        if shift.shape != (batch, channels) or shift.device.type != "cpu":
            return None
        shift = shift.to(torch.float32).contiguous()
    out = torch.empty((batch, size, size, channels), dtype=torch.float32)

    def pointer(t: torch.Tensor | None) -> int | None:
        return None if t is None else t.data_ptr()

    library.crop_mirror_normalize_u8_f32(
        x.data_ptr(), pointer(source), offsets.data_ptr(), pointer(flips), pointer(mean_pair), scale.data_ptr(),
        pointer(shift), out.data_ptr(), batch, height, width, channels, size, images,
        int(torch_fuses_multiply_add()), torch.get_num_threads())
    return out.permute(0, 3, 1, 2)
