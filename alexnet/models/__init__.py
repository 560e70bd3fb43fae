"""Importing this package registers every model in the zoo."""
from alexnet.models import alexnet, comparison  # noqa: F401
from alexnet.models.alexnet import AlexNet
from alexnet.models.comparison import LeNet5

__all__ = ["AlexNet", "LeNet5"]
