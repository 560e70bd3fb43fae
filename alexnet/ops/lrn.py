"""Local response normalisation, paper [3.3], as one fused operation with its own backward.

    b_i = a_i / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} a_j^2) ** beta

The paper puts alpha on the *sum* of squares. PyTorch, Caffe and cuda-convnet put alpha on the
*mean* (they divide it by n), so the paper's constants in PyTorch's terms are
``nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2)``. ``LocalResponseNorm`` here takes the
convention as an explicit argument so every variant in the zoo states which one its source uses.
For even n the window is torch's: n/2 channels before i, n/2 - 1 after. With ``groups`` > 1 the
channels are that many equal contiguous blocks and no window crosses a block's edge: the paper's two
towers [3.2] each normalise their own maps (cuda-convnet2's 2-GPU cfg: rnorm1a/rnorm1b over 48 maps each).

Why not ``F.local_response_norm``: it makes a dozen full passes over the activations (square, pad,
avg_pool3d over channels, generic pow, and more backward) and on a CPU costs more than all of
AlexNet's convolutions. Here, with ``s = k + alpha * window_sum(a**2)``, the forward is
``b = a * s**-beta`` and the backward, recomputing ``s`` from the saved input (nothing else is saved),

    grad_a_i = g_i s_i**-beta - 2 alpha beta a_i * sum_{c : i in window(c)} g_c a_c s_c**(-beta-1)

(the window transposed: for even n, n/2 - 1 before and n/2 after). On the CPU both directions run
in a small compiled kernel (``_lrn_cpu``), one read of the inputs and one write of the output each;
without a compiler, for other dtypes and devices, the same formulas run as PyTorch operations,
through ``torch.compile`` on CUDA.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from alexnet.ops import _lrn_cpu


# The formulas as PyTorch operations: the path without the compiled kernel (other devices and dtypes,
# no compiler), in place wherever a temporary can be reused.
def _inverse_power(scale: torch.Tensor, beta: float) -> torch.Tensor:
    """``scale ** -beta`` (a new tensor); for the paper's 0.75 as rsqrt(s) * sqrt(rsqrt(s)), no generic pow."""
    if beta == 0.75:
        r = scale.rsqrt()
        return r.mul_(r.sqrt())
    return scale.pow(-beta)


def _window_sum(t: torch.Tensor, size: int, transposed: bool = False, groups: int = 1) -> torch.Tensor:
    """Sum of ``t`` (N, C, ...) over channels c - size//2 .. c + (size-1)//2 (zeros beyond the edges,
    and beyond the edges of each of ``groups`` equal blocks of channels)."""
    before, after = size // 2, (size - 1) // 2
    if transposed:
        before, after = after, before
    last = t.movedim(1, -1)                                      # (N, ..., C): contiguous if channels_last
    if groups > 1:
        last = last.unflatten(-1, (groups, -1))                  # (N, ..., G, C/G): each block padded alone
    windows = F.pad(last, (before, after)).unfold(-1, size, 1)   # (N, ..., C, size), a view
    sums = windows.sum(-1)
    return (sums.flatten(-2) if groups > 1 else sums).movedim(-1, 1)


def lrn_scale(x: torch.Tensor, size: int, alpha: float, k: float, groups: int = 1) -> torch.Tensor:
    """LRN's denominator before the power [3.3], k + alpha x (the window's sum of squares), in PyTorch ops."""
    return _window_sum(x * x, size, groups=groups).mul_(alpha).add_(k)   # k + alpha * sum of squares


def _forward_torch(x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int = 1) -> torch.Tensor:
    return x * _inverse_power(lrn_scale(x, size, alpha, k, groups), beta)


def _backward_torch(x: torch.Tensor, grad: torch.Tensor, size: int, alpha: float, beta: float,
                    k: float, groups: int = 1) -> torch.Tensor:
    scale = lrn_scale(x, size, alpha, k, groups)
    inverse = _inverse_power(scale, beta)                         # s^-beta
    spread = _window_sum((grad * x).mul_(inverse).div_(scale), size, transposed=True, groups=groups)
    return (x * spread).mul_(-2 * alpha * beta).addcmul_(grad, inverse)


_compiled: dict[str, object] = {}
RECOMPILE_LIMIT = 64   # graphs per function (one per shape, dtype, groups): several AlexNets in a process pass 8


def _compiled_call(name: str, fn, *args):
    """``fn(*args)`` through torch.compile (one fused kernel per direction); eager for good if that fails."""
    if name not in _compiled:   # past dynamo's limit (8) new shapes run eagerly: raised once, process-wide (docs/cuda)
        torch._dynamo.config.recompile_limit = max(RECOMPILE_LIMIT, torch._dynamo.config.recompile_limit)
        _compiled[name] = torch.compile(fn)
    try:
        return _compiled[name](*args)
    except Exception:  # noqa: BLE001 - e.g. no Triton for this GPU; the eager expressions give the same values
        if _compiled[name] is fn:
            raise
        _compiled[name] = fn
        return fn(*args)


def _native_layout(x: torch.Tensor, groups: int = 1) -> tuple[torch.memory_format, int, int, int, int]:
    """How the CPU kernel reads ``x``: (layout, outer, C, inner, groups), channels_last rows or NCHW planes.

    Grouped channels_last rows are split into blocks inside the kernel; grouped NCHW images are read as
    G times as many images of C/G planes."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        n, c, h, w = x.shape
        return torch.channels_last, n * h * w, c, 1, groups
    return torch.contiguous_format, x.shape[0] * groups, x.shape[1] // groups, math.prod(x.shape[2:]), 1


def _threads(x: torch.Tensor) -> int:
    return 1 if x.numel() < 1 << 16 else torch.get_num_threads()   # small: thread start-up would dominate


def _forward_native(library, x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
                    groups: int = 1) -> torch.Tensor:
    layout, outer, channels, inner, groups = _native_layout(x, groups)
    x = x.contiguous(memory_format=layout)
    y = torch.empty_like(x)
    kernel = library.lrn_forward_f32 if x.dtype == torch.float32 else library.lrn_forward_f64
    kernel(x.data_ptr(), y.data_ptr(), outer, channels, inner, size, groups, alpha, beta, k, _threads(x))
    return y


def _backward_native(library, x: torch.Tensor, grad: torch.Tensor, size: int, alpha: float, beta: float,
                     k: float, groups: int = 1) -> torch.Tensor:
    layout, outer, channels, inner, groups = _native_layout(x, groups)
    x = x.contiguous(memory_format=layout)
    grad = grad.to(dtype=x.dtype).contiguous(memory_format=layout)
    out = torch.empty_like(x)
    kernel = library.lrn_backward_f32 if x.dtype == torch.float32 else library.lrn_backward_f64
    kernel(x.data_ptr(), grad.data_ptr(), out.data_ptr(), outer, channels, inner, size, groups, alpha, beta, k,
           _threads(x))
    return out


_kernel_state: dict[str, object] = {}


def _kernel():
    """The compiled CPU kernel, once it has agreed with the PyTorch expressions on a small input; else None."""
    if "library" not in _kernel_state:
        library = _lrn_cpu.load()
        if library is not None and not _agrees(library):
            warnings.warn("the compiled LRN kernel disagrees with PyTorch on a small check; using the "
                          "pure-PyTorch path (set ALEXNET_LRN_KERNEL=torch to skip the kernel)", RuntimeWarning)
            library = None
        _kernel_state["library"] = library
    return _kernel_state["library"]


def _agrees(library) -> bool:
    """Both layouts, both dtypes, the specialised (n=5, beta=0.75) and the general loops, ungrouped and grouped,
    on a tiny input."""
    x = torch.randn(2, 7, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    grad = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    cases = [(7, (5, 0.3, 0.75, 1.5)), (7, (4, 0.3, 0.6, 1.5)), (6, (5, 0.3, 0.75, 1.5, 2)), (6, (3, 0.3, 0.6, 1.5, 3))]
    for dtype, rtol in ((torch.float64, 1e-9), (torch.float32, 1e-4)):
        for layout in (torch.contiguous_format, torch.channels_last):
            for channels, args in cases:   # (size, alpha, beta, k[, groups])
                xl, gl = (t[:, :channels].to(dtype).contiguous(memory_format=layout) for t in (x, grad))
                if not (torch.allclose(_forward_native(library, xl, *args), _forward_torch(xl, *args), rtol=rtol)
                        and torch.allclose(_backward_native(library, xl, gl, *args),
                                           _backward_torch(xl, gl, *args), rtol=rtol, atol=rtol * 1e-2)):
                    return False
    return True


def _use_native(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and _kernel() is not None


class _LocalResponseNormFunction(torch.autograd.Function):
    """LRN with alpha on the window sum; saves only its input for the backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.params = (size, alpha, beta, k, groups)
        if _use_native(x):
            return _forward_native(_kernel(), x, size, alpha, beta, k, groups)
        if x.is_cuda:
            return _compiled_call("forward", _forward_torch, x, size, alpha, beta, k, groups)
        return _forward_torch(x, size, alpha, beta, k, groups)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        size, alpha, beta, k, groups = ctx.params
        if _use_native(x):
            out = _backward_native(_kernel(), x, grad, size, alpha, beta, k, groups)
        elif x.is_cuda:
            out = _compiled_call("backward", _backward_torch, x, grad, size, alpha, beta, k, groups)
        else:
            out = _backward_torch(x, grad, size, alpha, beta, k, groups)
        return out, None, None, None, None, None


def implementation(device: str | torch.device = "cpu") -> str:
    """Which implementation float32 LRN uses on ``device``: the compiled kernel, torch.compile or eager."""
    kind = torch.device(device).type
    if kind == "cpu" and _kernel() is not None:
        return "compiled CPU kernel"
    return "torch.compile (eager if compiling fails)" if kind == "cuda" else "PyTorch expressions (eager)"


def local_response_norm(x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
                        groups: int = 1) -> torch.Tensor:
    """LRN over channels of ``x`` (N, C, ...) with ``alpha`` on the window *sum* (paper form); with
    ``groups`` > 1 over each of that many equal contiguous blocks of channels on its own."""
    if x.dim() < 3:
        raise ValueError(f"LRN needs an input of shape (N, C, ...) with 3 or more dimensions, got {tuple(x.shape)}")
    _check_groups(x, groups)
    if _tracing():   # jit.trace / ONNX export / torch.compile of a whole model: plain operations they can record
        return _forward_torch(x, size, float(alpha), float(beta), float(k), groups)
    return _LocalResponseNormFunction.apply(x, size, float(alpha), float(beta), float(k), groups)


def _check_groups(x: torch.Tensor, groups: int) -> None:
    if groups != 1 and (groups < 1 or x.shape[1] % groups):
        raise ValueError(f"LRN groups={groups} must divide the input's {x.shape[1]} channels into equal blocks")


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


class LocalResponseNorm(nn.Module):
    """LRN across channels.

    ``alpha_on`` says how ``alpha`` is read: ``"sum"`` as in the paper's formula [3.3],
    ``"mean"`` as in Caffe / cuda-convnet / ``torch.nn.LocalResponseNorm`` (alpha / n on the sum).
    ``groups``: the channels form that many equal contiguous blocks and no window crosses a block's
    edge (2 for the paper's two towers [3.2]: each GPU normalises its own maps).
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0,
                 alpha_on: str = "sum", groups: int = 1) -> None:
        super().__init__()
        if alpha_on not in ("sum", "mean"):
            raise ValueError(f"alpha_on must be 'sum' or 'mean', got {alpha_on!r}")
        if size < 1:
            raise ValueError(f"LRN size must be >= 1, got {size}")
        if not isinstance(groups, int) or groups < 1:
            raise ValueError(f"LRN groups must be an integer >= 1, got {groups!r}")
        self.size, self.alpha, self.beta, self.k, self.alpha_on = size, alpha, beta, k, alpha_on
        self.groups = groups

    @property
    def alpha_sum(self) -> float:
        """The coefficient on the sum of squares, whatever convention the source states."""
        return self.alpha if self.alpha_on == "sum" else self.alpha / self.size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(x, self.size, self.alpha_sum, self.beta, self.k, self.groups)

    def extra_repr(self) -> str:
        groups = f", groups={self.groups}" if self.groups != 1 else ""
        return f"size={self.size}, alpha={self.alpha:g} (on the {self.alpha_on}), beta={self.beta}, k={self.k}{groups}"


# ---- ReLU -> LRN -> max pool in one pass: the paper's conv1 and conv2 blocks [3.3, 3.4] ---------------------
# Unfused, the three make seven full passes over the conv output forward and backward (ReLU in place and its
# mask, LRN's input and output, the pool's read, its zeroed gradient and scatter) and keep LRN's output and
# int64 pool indices alive. Fused, the forward reads the conv output once and writes the pooled map and a
# uint8 argmax per window; the backward reads the conv output, the pooled gradient and the argmax and writes
# the conv output's gradient. Values and gradients are those of the three modules in sequence.
def _fusable(z: torch.Tensor, kernel: int, stride: int) -> bool:
    return (not _tracing() and z.dim() == 4 and z.device.type == "cpu" and z.dtype in (torch.float32, torch.float64)
            and z.is_contiguous(memory_format=torch.channels_last) and kernel * kernel <= 255
            and min(z.shape[2:]) >= kernel and z.shape[0] > 0 and _kernel() is not None)


class _ReLULRNMaxPoolFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: torch.Tensor, size: int, alpha: float, beta: float, k: float, kernel: int,
                stride: int, groups: int) -> torch.Tensor:
        n, c, h, w = z.shape
        ph, pw = (h - kernel) // stride + 1, (w - kernel) // stride + 1
        out = torch.empty((n, c, ph, pw), dtype=z.dtype, memory_format=torch.channels_last)
        argmax = torch.empty((n, ph, pw, c), dtype=torch.uint8)
        library = _kernel()
        kernel_fn = library.relu_lrn_pool_forward_f32 if z.dtype == torch.float32 else library.relu_lrn_pool_forward_f64
        kernel_fn(z.data_ptr(), out.data_ptr(), argmax.data_ptr(), n, c, h, w, kernel, stride, size, groups, alpha,
                  beta, k, _threads(z))
        ctx.save_for_backward(z, argmax)
        ctx.params = (size, alpha, beta, k, kernel, stride, groups)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        z, argmax = ctx.saved_tensors
        size, alpha, beta, k, kernel, stride, groups = ctx.params
        grad = grad.to(dtype=z.dtype).contiguous(memory_format=torch.channels_last)
        out = torch.empty_like(z)
        n, c, h, w = z.shape
        library = _kernel()
        kernel_fn = (library.relu_lrn_pool_backward_f32 if z.dtype == torch.float32
                     else library.relu_lrn_pool_backward_f64)
        kernel_fn(z.data_ptr(), grad.data_ptr(), argmax.data_ptr(), out.data_ptr(), n, c, h, w, kernel, stride, size,
                  groups, alpha, beta, k, _threads(z))
        return out, None, None, None, None, None, None, None


def relu_lrn_max_pool(z: torch.Tensor, size: int, alpha: float, beta: float, k: float, kernel: int = 3,
                      stride: int = 2, groups: int = 1) -> torch.Tensor:
    """``max_pool2d(local_response_norm(relu(z), groups=groups), kernel, stride)`` (alpha on the sum, no pool
    padding).

    One fused pass each way for channels_last float CPU tensors with the compiled kernel; the three
    operations in sequence otherwise."""
    if _fusable(z, kernel, stride):
        _check_groups(z, groups)
        return _ReLULRNMaxPoolFunction.apply(z, size, float(alpha), float(beta), float(k), int(kernel), int(stride),
                                             int(groups))
    return F.max_pool2d(local_response_norm(F.relu(z), size, alpha, beta, k, groups), kernel, stride)
