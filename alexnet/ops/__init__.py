"""Hand-written operations: the parts of AlexNet that PyTorch does not ship in the paper's form."""
from alexnet.ops.linear import Linear
from alexnet.ops.lrn import LocalResponseNorm, local_response_norm

__all__ = ["Linear", "LocalResponseNorm", "local_response_norm"]
