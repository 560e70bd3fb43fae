"""alexnet: AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012) reproduced faithfully."""
import os

# Large CPU tensors (activations of 224 px batches) on transparent huge pages: page faults on fresh
# multi-MB buffers otherwise cost several times the kernels that fill them. Read by torch at import.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from alexnet.errors import UsageError
from alexnet.registry import ModelInfo, create_model, list_models, model_info, register_model

__version__ = "0.1.0"
__all__ = ["UsageError", "ModelInfo", "create_model", "list_models", "model_info", "register_model", "__version__"]
