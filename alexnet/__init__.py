"""alexnet: AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012) reproduced faithfully.

``import alexnet`` changes nothing in the process and imports no torch: the model-zoo names below load
``alexnet.models`` (and torch) on first use, so the ``alexnet`` command and the benchmarks can call
``alexnet.util.memory.configure()`` (the memory settings, an explicit opt-in) before torch is imported.
"""
from __future__ import annotations

import importlib

from alexnet.errors import UsageError

__version__ = "0.1.0"
_LAZY = {"create_model": "alexnet.models", "list_models": "alexnet.models", "model_info": "alexnet.models",
         "ModelInfo": "alexnet.models.registry", "register_model": "alexnet.models.registry"}
__all__ = ["UsageError", *_LAZY, "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'alexnet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
