"""The preprocessing published weights were trained with, as this project's ``Preprocessing`` (the ``data``
entry of a checkpoint): torchvision's ImageNet transforms, or Caffe's 0-255 BGR pixels minus the mean."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from alexnet.interchange.caffe_proto import ProtoError, parse_blob
from alexnet.data.stats import DatasetStats
from alexnet.errors import UsageError
from alexnet.train.parts import Preprocessing

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)   # torchvision's, RGB in [0, 1]
CAFFE_BGR_MEAN = (104.0, 117.0, 123.0)          # Caffe's per-channel ImageNet mean, BGR in 0-255


def leading_ones_dropped(shape) -> tuple[int, ...]:
    """A shape without its leading 1s (Caffe's legacy 4-D blobs: (1, 1, out, in) for an inner product)."""
    shape = tuple(shape)
    while len(shape) > 1 and shape[0] == 1:
        shape = shape[1:]
    return shape


def torchvision_preprocessing() -> Preprocessing:
    """torchvision's AlexNet_Weights.IMAGENET1K_V1.transforms(): resize the short side to 256 (bilinear), the
    central 224, ImageNet's mean and std. ``decode: torchvision`` makes predict resize as torchvision does."""
    mean = np.asarray(IMAGENET_MEAN, np.float32)
    stats = _stats(mean.reshape(1, 1, 3), mean, np.asarray(IMAGENET_STD, np.float32))
    return Preprocessing(stats, [256, 256], 3, 224, None, "channel", 1.0,
                         "torchvision ImageNet: resize 256, centre 224, mean/std", extra={"decode": "torchvision"})


def caffe_preprocessing(mean: str | None) -> Preprocessing:
    """Caffe's: 0-255 pixels minus the mean image (``mean`` a .binaryproto) or a per-channel mean (``mean``
    "B,G,R", default 104,117,123), 227 crops of 256-pixel images. Stored in RGB, as the converted conv1 reads."""
    if mean is not None and Path(mean).is_file():
        image = _mean_image(mean)                             # (H, W, 3) RGB in [0, 1]
        channel = image.reshape(-1, 3).mean(0)
        normalization, side = "mean_image", image.shape[0]
    else:
        channel = np.asarray(_bgr_numbers(mean) if mean else CAFFE_BGR_MEAN, np.float32)[::-1] / 255
        normalization, side = "channel", 256
        image = channel.reshape(1, 1, 3)
    stats = _stats(image, channel, np.ones(3, np.float32))
    subtracted = "mean image" if normalization == "mean_image" else "channel mean"
    text = f"Caffe ImageNet: 0-255 RGB minus the {subtracted}, centre 227 of {side}"
    return Preprocessing(stats, [side, side], 3, 227, None, normalization, 255.0, text)


def _stats(image: np.ndarray, mean: np.ndarray, std: np.ndarray) -> DatasetStats:
    """Statistics for eval. A per-channel mean is stored as a 1x1 mean image (it is read only with
    normalization "mean_image"; a full one would cost seconds per load); no PCA comes with the weights."""
    return DatasetStats(np.ascontiguousarray(image, np.float32), np.asarray(mean, np.float32),
                        np.asarray(std, np.float32), np.zeros(3, np.float32), np.eye(3, dtype=np.float32))


def _bgr_numbers(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3 or not all(np.isfinite(values)):
        raise UsageError(f"--mean {text}: neither a file nor three numbers B,G,R; give Caffe's mean .binaryproto "
                         f"(e.g. imagenet_mean.binaryproto) or B,G,R in 0-255, e.g. 104,117,123")
    return values


def _mean_image(path: str) -> np.ndarray:
    try:
        blob = parse_blob(Path(path).read_bytes())
    except (ProtoError, OSError) as err:
        raise UsageError(f"--mean {path} is not a Caffe mean .binaryproto ({err}); give one, or B,G,R "
                         "numbers") from None
    shape = leading_ones_dropped(blob.shape)
    if len(shape) != 3 or shape[0] != 3 or shape[1] != shape[2] or shape[1] < 227:
        raise UsageError(f"--mean {path}: a blob of shape {tuple(blob.shape)}, not a square 3-channel mean image of "
                         f"at least 227 pixels (Caffe's imagenet_mean.binaryproto is 1x3x256x256)")
    return np.ascontiguousarray(blob.reshape(shape)[::-1].transpose(1, 2, 0)) / np.float32(255)   # BGR CHW -> RGB HWC
