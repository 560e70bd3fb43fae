"""Data: sources (builtin, folders, CSV, idx, CIFAR, caches), decoding with bad-input handling, `prepare`.

    images = open_dataset("fashion-mnist", "train")      # ImageSet: uint8 (N, H, W, C), labels, classes, stats
    report = prepare("photos/", "photos.cache")           # decode once into a memory-mappable cache
"""
from alexnet.data.builtin import FASHION_MNIST_CLASSES
from alexnet.data.preparation import PrepareReport, prepare
from alexnet.data.sources import ImageSet, open_dataset
from alexnet.data.stats import DatasetStats, compute_stats

__all__ = ["ImageSet", "DatasetStats", "open_dataset", "prepare", "compute_stats", "FASHION_MNIST_CLASSES",
           "PrepareReport"]
