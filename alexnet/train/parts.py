"""The parts of a training run, built before its first step: where it runs (``resolve_device``, ``resolve_towers``
[3.2]), then the model, the optimizer [5], the schedule, the loader and the preprocessing (``build_parts``).
What a checkpoint needs to rebuild them is ``alexnet.checkpoint``'s (``ModelSpec``, ``Preprocessing``).
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass

import torch
from torch import nn

from alexnet.checkpoint import Checkpoint, ModelSpec
from alexnet.data import open_dataset
from alexnet.data.augment import resized_shape
from alexnet.data.loader import BatchLoader
from alexnet.data.preprocessing import Preprocessing
from alexnet.errors import UsageError
from alexnet.train import distributed, finetune
from alexnet.train.ema import WeightAverage
from alexnet.train.run_folder import check_training_set
from alexnet.train.schedule import LRSchedule, param_groups
from alexnet.util.checks import no_towers_in


def resolve_device(name: "str | torch.device") -> torch.device:
    """``--device``: auto, cpu, cuda or cuda:N (a torch.device passes through, checked). A bare cuda (or auto) under
    torchrun is cuda:LOCAL_RANK."""
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
    elif device.type != "cpu":                 # mps, xpu, ...: a device this build or machine may lack
        backend = getattr(torch.backends, device.type, None) or getattr(torch, device.type, None)
        if not getattr(backend, "is_available", lambda: False)():
            raise UsageError(f"--device {name}: this PyTorch build or machine has no {device.type} device; "
                             "use --device cpu or auto")
    return device


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


def resolve_amp(cfg, device: torch.device, warn: bool = True):
    """``cfg`` as it runs on ``device``: --amp bf16 autocasts on CUDA only; elsewhere the run is float32, says so
    (``warn``) and records --amp off (config.json and the checkpoints never claim a precision that did not run)."""
    if cfg.amp != "bf16" or device.type == "cuda":
        return cfg
    if warn:
        print(f"alexnet train: warning: --amp bf16 autocasts on CUDA only; this run on {device.type} trains in "
              "float32 (recorded as --amp off)", file=sys.stderr, flush=True)
    return dataclasses.replace(cfg, amp="off")


@dataclass
class Parts:
    """What a run is made of, built once before its first step; a resumed run builds the same ones."""

    device: torch.device
    rank: int
    world_size: int
    towers: tuple | None
    classes: list[str]
    val_set: object
    loader: BatchLoader
    prep: Preprocessing
    spec: ModelSpec
    raw_model: nn.Module
    model: nn.Module                      # what the step calls: DDP and/or torch.compile around raw_model
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    use_bf16: bool
    ema: WeightAverage | None = None      # --ema: the averaged weights, what validation and checkpoints hold

    is_main = property(lambda self: self.rank == 0)
    eval_model = property(lambda self: self.ema.model if self.ema else self.raw_model)


def open_data(cfg, rank: int):
    """The train and val splits ``cfg`` names (``--train-subset``/``--val-subset`` taken here)."""
    common = dict(data_root=cfg.data_root, size=cfg.image_size, val_fraction=cfg.val_fraction, seed=cfg.seed,
                  workers=cfg.workers or None, progress=rank == 0 and not cfg.quiet)
    train_set, val_set = open_dataset(cfg.data, "train", **common), open_dataset(cfg.data, "val", **common)
    if cfg.train_subset:
        train_set.images, train_set.labels = train_set.images[:cfg.train_subset], train_set.labels[:cfg.train_subset]
    if cfg.val_subset:
        val_set.images, val_set.labels = val_set.images[:cfg.val_subset], val_set.labels[:cfg.val_subset]
    return train_set, val_set


def check_crop(cfg, train_set) -> None:
    """--crop-size fits the stored (or --resize-to'd) images: checked before a model is built for that size."""
    height, width = train_set.images.shape[1:3]
    if cfg.resize_to:
        height, width = resized_shape(height, width, cfg.resize_to)
    if cfg.crop_size > min(height, width):
        raise UsageError(f"--crop-size {cfg.crop_size} is larger than the {height}x{width} images"
                         + (f" resized by --resize-to {cfg.resize_to}" if cfg.resize_to else "")
                         + "; lower --crop-size or raise --resize-to")


def _build_model(spec: ModelSpec, towers: tuple | None) -> nn.Module:
    """``spec``'s model; one too large for this machine at its input size is a sentence, not an allocator's error."""
    try:
        return spec.build(towers=towers)
    except (RuntimeError, MemoryError) as err:
        if not isinstance(err, MemoryError) and "alloc" not in str(err):
            raise
        raise UsageError(f"{spec.name} at {spec.input_size} px inputs does not fit in memory "
                         f"({str(err).splitlines()[0] if str(err) else 'out of memory'}); lower --crop-size or "
                         "--resize-to") from None


def build_parts(cfg, train_set, val_set, *, device: torch.device, rank: int, world_size: int, towers: tuple | None,
                resumed: Checkpoint | None, log) -> Parts:
    """The preprocessing (the resumed run's, else the training set's statistics [4]), the loader, the model
    (fine-tuned by ``--init``/``--freeze`` before the optimizer takes its parameters), the optimizer [5] and the
    schedule, on the device(s)."""
    input_size = cfg.resize_to or cfg.crop_size or train_set.images.shape[1]
    prep = resumed.preprocessing if resumed else Preprocessing.of(
        train_set, crop_size=input_size, resize_to=cfg.resize_to, normalization=cfg.normalization,
        pixel_scale=cfg.pixel_scale)
    loader = BatchLoader(train_set.images, train_set.labels, cfg.batch_size // world_size,
                         transform=prep.train_transform(padding=cfg.padding, flip=cfg.flip, pca_std=cfg.pca_std,
                                                        erase=cfg.erase),
                         shuffle=True, drop_last=True, seed=cfg.seed, rank=rank, world_size=world_size, device=device,
                         threads=cfg.loader_threads)
    check_training_set(train_set, loader, cfg)
    check_crop(cfg, train_set)
    classes, channels = train_set.classes, train_set.images.shape[-1]
    spec = resumed.model if resumed else ModelSpec(cfg.model, len(classes), channels, input_size, dict(cfg.model_kwargs))
    model = _build_model(spec, towers)
    finetune.prepare(model, cfg, spec, classes, resumed=resumed is not None, log=log, warn=rank == 0)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format) if towers else model.to(device, memory_format=memory_format)
    # fused: one kernel per parameter for decay + momentum + update (2-5x faster optimizer step on CPU)
    optimizer = torch.optim.SGD(param_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum,
                                nesterov=cfg.nesterov and cfg.momentum > 0, fused=True)
    wrapped = model
    if world_size > 1:
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    wrapped = torch.compile(wrapped) if cfg.compile else wrapped
    use_bf16 = device.type == "cuda" and (cfg.amp == "bf16" or (cfg.amp == "auto" and not cfg.recipe.startswith("paper")))
    return Parts(device=device, rank=rank, world_size=world_size, towers=towers, classes=classes, val_set=val_set,
                 loader=loader, prep=prep, spec=spec, raw_model=model, model=wrapped, optimizer=optimizer,
                 schedule=LRSchedule(cfg, len(loader)), use_bf16=use_bf16,
                 ema=WeightAverage(model, cfg.ema) if cfg.ema else None)
