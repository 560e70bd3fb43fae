"""Stand-ins the ONNX exporter can write, for a network at one input size (``onnx_ready``; ``alexnet.interchange.export``).

- Our ``LocalResponseNorm`` becomes ONNX's own ``LRN`` node. ONNX divides alpha by size, like torch and Caffe, so a
  layer with the paper's alpha on the sum [3.3] gets ``alpha * size``. Groups (alexnet_2012's towers [3.2]): one
  LRN per block of channels, then a Concat. An even size (onnxruntime's LRN takes odd sizes only, and ONNX
  centres an even window the other way from torch) becomes the formula in plain operations.
- torchvision's ``AdaptiveAvgPool2d((6, 6))`` on a map that 6 does not divide (alexnet_owt at inputs other than
  224: 7x7 at 256) has no form in PyTorch's TorchScript-based exporter ("output size that are not factor of input
  size"); it becomes its exact linear map for that size, two MatMuls by constant averaging matrices.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from alexnet.ops.lrn import LocalResponseNorm, local_response_norm


class _LRNFunction(torch.autograd.Function):
    """Traced as one ONNX LRN node (alpha divided by size, as ONNX defines it); odd sizes only."""

    @staticmethod
    def forward(ctx, x, size: int, alpha_sum: float, beta: float, k: float):
        return local_response_norm(x, size, alpha_sum, beta, k)

    @staticmethod
    def symbolic(g, x, size: int, alpha_sum: float, beta: float, k: float):
        return g.op("LRN", x, size_i=size, alpha_f=alpha_sum * size, beta_f=beta, bias_f=k)


class OnnxLRN(nn.Module):
    """Our ``LocalResponseNorm`` as ONNX LRN nodes: one per group of channels (slices, then a Concat). An even
    size has no ONNX LRN (onnxruntime requires odd sizes, and ONNX centres even windows the other way): it
    becomes the formula itself, the window sums a 1x1 Conv by a constant banded matrix."""

    def __init__(self, norm: LocalResponseNorm, channels: int) -> None:
        super().__init__()
        self.size, self.alpha_sum, self.beta, self.k, self.groups = (norm.size, norm.alpha_sum, norm.beta, norm.k,
                                                                     norm.groups)
        if self.size % 2 == 0:
            self.register_buffer("band", _band(channels, self.size, self.groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.size % 2 == 0:
            sums = F.conv2d(x * x, self.band)
            return x * (sums * self.alpha_sum + self.k).pow(-self.beta)
        lrn = (self.size, self.alpha_sum, self.beta, self.k)
        if self.groups == 1:
            return _LRNFunction.apply(x, *lrn)
        return torch.cat([_LRNFunction.apply(part, *lrn) for part in x.chunk(self.groups, 1)], 1)


def _band(channels: int, size: int, groups: int) -> torch.Tensor:
    """(C, C, 1, 1): row c sums channels c - size//2 .. c + (size-1)//2 of c's group (torch's window)."""
    c = torch.arange(channels)
    offset = c[None, :] - c[:, None]
    same = (c[None, :] // (channels // groups)) == (c[:, None] // (channels // groups))
    return ((offset >= -(size // 2)) & (offset <= (size - 1) // 2) & same).float()[:, :, None, None]


class FixedAdaptiveAvgPool(nn.Module):
    """``AdaptiveAvgPool2d`` for one input size, as ``rows @ x @ cols``: the same bins (start floor(i*H/out),
    end ceil((i+1)*H/out)), exported as two MatMuls whatever divides what."""

    def __init__(self, height: int, width: int, out: tuple[int, int]) -> None:
        super().__init__()
        self.register_buffer("rows", _bins(height, out[0]))
        self.register_buffer("cols", _bins(width, out[1]).t().contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(torch.matmul(self.rows, x), self.cols)


def _bins(size: int, out: int) -> torch.Tensor:
    matrix = torch.zeros(out, size)
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def _replace(model: nn.Module, swap) -> None:
    """Every submodule for which ``swap(name, module)`` returns a module is replaced by it."""
    for name, module in list(model.named_modules()):
        new = swap(name, module)
        if new is not None and name:
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, new)


def onnx_ready(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """``model`` (changed in place, unfused) with our LRN as ONNX LRN and each adaptive average pool whose
    output does not divide its input (at ``example``'s size) as its fixed linear map."""
    model.fuse = False
    sizes: dict[str, torch.Size] = {}     # each module's input shape at the example's size
    hooks = [m.register_forward_hook(lambda mod, args, out, name=name: sizes.__setitem__(name, args[0].shape))
             for name, m in model.named_modules() if isinstance(m, (nn.AdaptiveAvgPool2d, LocalResponseNorm))]
    with torch.no_grad():
        model(example)
    for hook in hooks:
        hook.remove()

    def swap(name: str, module: nn.Module) -> nn.Module | None:
        if isinstance(module, LocalResponseNorm) and name in sizes:
            return OnnxLRN(module, sizes[name][1])
        if isinstance(module, nn.AdaptiveAvgPool2d) and name in sizes:
            out = module.output_size if isinstance(module.output_size, tuple) else (module.output_size,) * 2
            (h, w) = sizes[name][-2:]
            out = tuple(s if o is None else o for s, o in zip((h, w), out))
            return None if h % out[0] == 0 and w % out[1] == 0 else FixedAdaptiveAvgPool(h, w, out)
        return None
    _replace(model, swap)
    return model
