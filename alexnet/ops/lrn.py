"""Local response normalisation, paper [3.3].

    b_i = a_i / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} a_j^2) ** beta

The paper puts alpha on the *sum* of squares. PyTorch, Caffe and cuda-convnet put alpha on the
*mean* (they divide it by n), so the paper's constants in PyTorch's terms are
``nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2)``. ``LocalResponseNorm`` here takes the
convention as an explicit argument so every variant in the zoo states which one its source uses.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def local_response_norm(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """LRN over channels of ``x`` (N, C, H, W) with ``alpha`` on the window *sum* (paper form)."""
    # F.local_response_norm divides alpha by size; undo that so alpha multiplies the sum.
    return F.local_response_norm(x, size, alpha=alpha * size, beta=beta, k=k)


class LocalResponseNorm(nn.Module):
    """LRN across channels.

    ``alpha_on`` says how ``alpha`` is read: ``"sum"`` as in the paper's formula [3.3],
    ``"mean"`` as in Caffe / cuda-convnet / ``torch.nn.LocalResponseNorm`` (alpha / n on the sum).
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0,
                 alpha_on: str = "sum") -> None:
        super().__init__()
        if alpha_on not in ("sum", "mean"):
            raise ValueError(f"alpha_on must be 'sum' or 'mean', got {alpha_on!r}")
        if size < 1:
            raise ValueError(f"LRN size must be >= 1, got {size}")
        self.size, self.alpha, self.beta, self.k, self.alpha_on = size, alpha, beta, k, alpha_on

    @property
    def alpha_sum(self) -> float:
        """The coefficient on the sum of squares, whatever convention the source states."""
        return self.alpha if self.alpha_on == "sum" else self.alpha / self.size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(x, self.size, self.alpha_sum, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha:g} (on the {self.alpha_on}), beta={self.beta}, k={self.k}"
