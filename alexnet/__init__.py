"""alexnet: AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012) reproduced faithfully."""
from alexnet import _memory

# Before torch is imported: large CPU tensors on huge pages, freed blocks reused (see _memory).
_memory.configure()

from alexnet.errors import UsageError
from alexnet.models import create_model, list_models, model_info
from alexnet.registry import ModelInfo, register_model

__version__ = "0.1.0"
__all__ = ["UsageError", "ModelInfo", "create_model", "list_models", "model_info", "register_model", "__version__"]
