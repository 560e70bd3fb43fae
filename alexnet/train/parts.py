"""The run contract: what a checkpoint needs to rebuild its model and preprocess exactly like training.

``train`` writes it into every checkpoint; ``evaluate``, ``predict`` and ``checkpoint`` read it back. Three
pieces:

- the device (``resolve_device``): "auto" is the GPU when there is one; under torchrun each process takes
  the GPU of its LOCAL_RANK;
- the model spec (``model_spec`` / ``build_model``): the registry name and the arguments that rebuild the
  network (``{"name", "num_classes", "in_channels", "input_size", "kwargs"}``);
- the preprocessing spec (``Preprocessing``): the training set's statistics (mean image, channel mean and
  std, RGB eigenvectors), the stored image size and channels, the network's input size, the resize, the
  normalisation and the pixel scale; the train and eval transforms are both built from it, so what
  evaluation feeds the network is what training fed it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from alexnet.train import distributed
from alexnet.util.checks import no_towers_in
from alexnet.data.transforms import EvalTransform, TrainTransform
from alexnet.data.stats import DatasetStats, compute_stats
from alexnet.errors import UsageError
from alexnet.models import create_model


def resolve_device(name: str) -> torch.device:
    """``--device``: auto, cpu, cuda or cuda:N. A bare cuda (or auto) under torchrun is cuda:LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
        if device.index is None:              # one GPU per torchrun process: its LOCAL_RANK
            device = torch.device("cuda", distributed.world()[2])
        if device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def model_spec(name: str, kwargs: dict, num_classes: int, in_channels: int, input_size: int) -> dict:
    return {"name": name, "num_classes": num_classes, "in_channels": in_channels, "input_size": input_size,
            "kwargs": dict(kwargs)}


def build_model(spec: dict, **extra) -> nn.Module:
    """The network a model spec describes (``extra``: placement arguments such as ``towers``)."""
    return create_model(spec["name"], num_classes=spec["num_classes"], in_channels=spec["in_channels"],
                        input_size=spec["input_size"], **spec.get("kwargs", {}), **extra)


@dataclass
class Preprocessing:
    """How images become network inputs; ``to_dict`` is the ``data`` entry of every checkpoint."""

    stats: DatasetStats
    image_size: list[int]                 # stored (height, width)
    channels: int
    crop_size: int                        # the network's input side
    resize_to: int | None = None          # batched resize before cropping (d2l: 28 -> 224)
    normalization: str = "mean_image"     # mean_image [4] | channel | none
    pixel_scale: float = 1.0              # 255: inputs in 0-255 pixel units, as the paper feeds them
    source: str = ""
    extra: dict = field(default_factory=dict)   # keys a newer version wrote, kept on a round trip

    @classmethod
    def of(cls, train_set, *, crop_size: int, resize_to: int, normalization: str, pixel_scale: float):
        """The spec of a training set (its statistics computed here when the cache has none)."""
        stats = train_set.stats or compute_stats(np.asarray(train_set.images))
        _, height, width, channels = train_set.images.shape
        return cls(stats, [height, width], channels, crop_size, resize_to or None, normalization, pixel_scale,
                   train_set.source)

    def to_dict(self) -> dict:
        values = asdict(self)
        values["stats"], extra = self.stats.to_dict(), values.pop("extra")
        return {**extra, **values}

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocessing":
        names = {"stats", "image_size", "channels", "crop_size", "resize_to", "normalization", "pixel_scale",
                 "source"}
        known = {k: v for k, v in data.items() if k in names}
        known["stats"] = DatasetStats.from_dict(data["stats"])
        known.setdefault("pixel_scale", 1.0)     # checkpoints from before pixel_scale was stored
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})

    def train_transform(self, *, padding: int = 0, flip: bool = True, pca_std: float = 0.0) -> TrainTransform:
        """Random crops, flips and PCA lighting [4] on top of this preprocessing."""
        return TrainTransform(crop_size=self.crop_size, padding=padding, flip=flip, pca_std=pca_std,
                              normalization=self.normalization, stats=self.stats, resize_to=self.resize_to,
                              pixel_scale=self.pixel_scale)

    def eval_transform(self, ten_crop: bool = False) -> EvalTransform:
        """The centre view, or the paper's 10 views [4]."""
        return EvalTransform(crop_size=self.crop_size, normalization=self.normalization, stats=self.stats,
                             resize_to=self.resize_to, ten_crop=ten_crop, pixel_scale=self.pixel_scale)


def resolve_towers(towers: str, model_kwargs: dict, resumed: dict | None, world_size: int, out) -> tuple | None:
    """[3.2] ``--towers DEV0,DEV1``: the two devices (inputs, loss and fc8 on the first), or None. ``resumed``:
    the config of the run being resumed, which must have used towers alike."""
    no_towers_in(model_kwargs)
    spec, towers = towers, None
    if spec:
        from alexnet.models.towers import tower_devices
        towers = tower_devices(spec)
        if world_size > 1:
            raise UsageError("--towers runs one process on two devices; it does not combine with torchrun")
    if resumed and bool(resumed.get("towers")) != bool(towers):   # momentum buffers are per parameter
        raise UsageError(f"{out}/last.pt was trained {'with' if towers is None else 'without'} --towers; "
                         "resume it the same way (checkpoints, not optimizer states, move between the two)")
    return towers
