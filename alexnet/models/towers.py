"""The paper's two towers on two devices [3.2]: ``create_model("alexnet_2012", towers=("cuda:0", "cuda:1"))``.

[3.2] spreads the net across two GPUs, each holding half of every layer's kernels, and "the GPUs
communicate only in certain layers": conv3 takes all of conv2's maps, conv4 and conv5 only those on
their own GPU, and the fully connected layers read both halves. The grouped ``AlexNet`` (groups=2 on
conv2/4/5, LRN groups=2) is that network on one device; ``TwoTowerAlexNet`` cuts it along the same line.
Tower t holds output channels [t C/2, (t+1) C/2) of every conv and of fc6 and fc7, on its own device;
activations cross between the towers only into conv3, fc6, fc7 and fc8. fc8 sits whole on the first
device, as cuda-convnet2's fc1000 on gpu 0. Both compute the same function (up to float summation
order) and share one state dict layout: keys and shapes are the grouped model's, so checkpoints move
freely between the two.

Placement happens at construction. Each tower runs where its parameters are, so ``.to(memory_format=...)``
and dtypes work as for any module, and ``.to(device)`` puts both towers on that one device. Inputs may be
on any device; the output is on the first tower's device. On CUDA each tower runs on a stream of its own
(so two towers on one GPU overlap as well); the exchanges order the streams and keep borrowed memory
alive (``record_stream``), and autograd runs each backward op on its forward op's stream. ``overlap = False``
on a model runs both towers on the ambient streams instead, one after the other (``bench/towers.py`` times
the two).
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from alexnet.errors import UsageError
from alexnet.models.alexnet import AlexNet, fusable_block
from alexnet.ops.lrn import LocalResponseNorm

_PER_TOWER = (nn.ReLU, nn.Tanh, nn.MaxPool2d, nn.Dropout, nn.Identity)   # no weights, channel by channel


@dataclass(frozen=True)
class TowerLayer:
    """One layer of the grouped model as the towers run it."""
    name: str        # the grouped model's name, e.g. "features.conv3"
    widths: str      # output channels or features per tower, e.g. "192 + 192", or "1000 on tower 0"
    reads: str       # "image" (conv1: each tower the whole input), "own", "both" (an exchange) or "" (no weights)


def tower_plan(model: nn.Module) -> list[TowerLayer]:
    """How the grouped ``model`` splits into two towers; a UsageError names the first layer that cannot."""
    if not isinstance(model, AlexNet) or not isinstance(model.avgpool, nn.Identity):
        raise UsageError(f"towers: only an AlexNet of the paper's layout can be split, not {type(model).__name__}")
    plan, width, first = [], None, True
    for section in ("features", "classifier"):
        layers = list(getattr(model, section).named_children())
        last_fc = max((i for i, (_, m) in enumerate(layers) if isinstance(m, nn.Linear)), default=-1)
        for i, (short, module) in enumerate(layers):
            name, reads = f"{section}.{short}", ""
            if isinstance(module, nn.Conv2d):
                if module.groups not in (1, 2) or (first and module.groups != 1) or module.out_channels % 2:
                    raise UsageError(f"towers: {name} ({module.out_channels} maps, groups {module.groups}) "
                                     "does not split into two towers (needs an even width, groups 1 or 2)")
                reads = "image" if first else ("own" if module.groups == 2 else "both")
                width, first = module.out_channels // 2, False
            elif isinstance(module, nn.Linear):
                if i == last_fc:
                    plan.append(TowerLayer(name, f"{module.out_features} on tower 0", "both"))
                    continue
                if module.out_features % 2:
                    raise UsageError(f"towers: {name} has an odd width ({module.out_features})")
                reads, width = "both", module.out_features // 2
            elif isinstance(module, LocalResponseNorm):
                if module.groups % 2:
                    raise UsageError(f"towers: {name} normalises across the two towers' maps (LRN groups "
                                     f"{module.groups}); the towers need an even number of groups, e.g. 2")
            elif not isinstance(module, _PER_TOWER) or (section == "classifier" and i > last_fc):
                raise UsageError(f"towers: {name} ({type(module).__name__}) cannot be split into two towers")
            if width is None:
                raise UsageError(f"towers: {name} comes before conv1")
            plan.append(TowerLayer(name, f"{width} + {width}", reads))
    return plan


def _half(module: nn.Module, t: int) -> nn.Module:
    """Tower t's part of a grouped layer: a copy, with rows [t h, (t+1) h) of its weights and bias."""
    if isinstance(module, nn.Conv2d):
        h = module.out_channels // 2
        part = nn.Conv2d(module.in_channels // module.groups, h, module.kernel_size, stride=module.stride,
                         padding=module.padding, dilation=module.dilation, bias=module.bias is not None,
                         padding_mode=module.padding_mode, device=module.weight.device, dtype=module.weight.dtype)
    elif isinstance(module, nn.Linear):
        h = module.out_features // 2
        part = type(module)(module.in_features, h, bias=module.bias is not None, device=module.weight.device,
                            dtype=module.weight.dtype)
    elif isinstance(module, LocalResponseNorm):
        part = copy.deepcopy(module)
        part.groups = module.groups // 2
        return part
    else:
        return copy.deepcopy(module)
    with torch.no_grad():
        for name, param in part.named_parameters():
            param.copy_(getattr(module, name)[t * h:(t + 1) * h])
    return part


def tower_devices(towers) -> tuple[torch.device, torch.device]:
    """Two devices from ("cuda:0", "cuda:1"), "cpu,cpu" or torch.devices; a UsageError names a bad one."""
    names = [d.strip() for d in towers.split(",")] if isinstance(towers, str) else list(towers)
    if len(names) != 2:
        raise UsageError(f"towers takes two devices, one per tower [3.2], got {len(names)}: {names}")
    devices = []
    for name in names:
        try:
            device = torch.device(name)
        except (RuntimeError, TypeError):
            raise UsageError(f"towers: {name!r} is not a device; use cpu or cuda:N") from None
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise UsageError(f"towers: {name} needs CUDA, which is not available on this machine "
                                 "(towers=('cpu', 'cpu') runs both towers on the CPU)")
            count = torch.cuda.device_count()
            device = torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
            if device.index >= count:
                raise UsageError(f"towers: {name} does not exist: this machine has {count} CUDA device(s) "
                                 f"(cuda:0{'' if count == 1 else f' to cuda:{count - 1}'})")
        elif device.type != "cpu":
            raise UsageError(f"towers: {name}: the towers run on cpu or cuda devices")
        devices.append(device)
    if devices[0].type != devices[1].type:
        raise UsageError(f"towers: put both towers on the CPU or both on CUDA devices, got {names}")
    return devices[0], devices[1]


class _Tower(nn.Module):
    """One tower: its half of conv1..pool5 (``features``) and of fc6..drop7 (``classifier``)."""

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential) -> None:
        super().__init__()
        self.features, self.classifier = features, classifier


_streams: dict[tuple[torch.device, int], torch.cuda.Stream] = {}


def _stream(device: torch.device, tower: int) -> torch.cuda.Stream:
    if (device, tower) not in _streams:
        _streams[device, tower] = torch.cuda.Stream(device)
    return _streams[device, tower]


class TwoTowerAlexNet(nn.Module):
    """The grouped AlexNet ``grouped`` as two towers on ``devices`` (see the module docstring)."""

    overlap = True   # on CUDA, each tower on a stream of its own

    def __init__(self, grouped: nn.Module, devices) -> None:
        super().__init__()
        devices = tower_devices(devices)
        self.plan = tower_plan(grouped)
        self.input_size, self.feature_shape = grouped.input_size, grouped.feature_shape
        self.fuse = grouped.fuse   # relu -> LRN -> pool fused on the CPU in each tower, as in AlexNet
        sections = {s: list(getattr(grouped, s).named_children()) for s in ("features", "classifier")}
        head_name, head = sections["classifier"].pop()
        self.towers = nn.ModuleList(
            _Tower(*(nn.Sequential(OrderedDict((n, _half(m, t)) for n, m in sections[s]))
                     for s in ("features", "classifier"))).to(devices[t]) for t in (0, 1))
        self.classifier = nn.Sequential(OrderedDict([(head_name, copy.deepcopy(head))])).to(devices[0])  # fc8
        # where a tower waits for both: (section, index of the layer reading both towers)
        both = {layer.name for layer in self.plan if layer.reads == "both"}
        self._cuts = {s: [i for i, (n, _) in enumerate(sections[s]) if f"{s}.{n}" in both] for s in sections}
        self.register_state_dict_post_hook(_grouped_state_dict)
        self.register_load_state_dict_pre_hook(_tower_state_dict)

    @property
    def devices(self) -> tuple[torch.device, torch.device]:
        return tuple(next(tower.parameters()).device for tower in self.towers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # (B, C, H, W) on any device -> (B, classes) on tower 0's
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise UsageError(f"{getattr(self, 'model_name', 'this AlexNet')} was built for "
                             f"{self.input_size}x{self.input_size} inputs, got {tuple(x.shape[-2:])}")
        devices = self.devices
        streams = None
        if devices[0].type == "cuda" and self.overlap:
            streams = tuple(_stream(d, t) for t, d in enumerate(devices))
            ambient = [torch.cuda.current_stream(d) for d in devices]
            for stream, outside in zip(streams, ambient):
                stream.wait_stream(outside)          # the input and the last optimizer step are done
        hs = []
        for t in (0, 1):
            with self._on(streams, t):
                h = x.to(devices[t], non_blocking=True)
                if streams is not None and h is x:
                    x.record_stream(streams[t])
                hs.append(h)
        for section in ("features", "classifier"):
            modules, cuts = [list(getattr(tower, section)) for tower in self.towers], self._cuts[section]
            bounds = sorted({0, *cuts, len(modules[0])})
            for start, stop in zip(bounds, bounds[1:]):
                if start in cuts:
                    hs = [self._gather(hs, t, streams) for t in (0, 1)]
                for t in (0, 1):
                    with self._on(streams, t):
                        hs[t] = self._run(modules[t][start:stop], hs[t])
                        if section == "features" and stop == len(modules[t]):
                            hs[t] = torch.flatten(hs[t], 1)   # the grouped flatten: tower 0's maps, then 1's
        with self._on(streams, 0):
            out = self.classifier(self._gather(hs, 0, streams))
        if streams is not None:
            ambient[0].wait_stream(streams[0])
            out.record_stream(ambient[0])
        return out

    @staticmethod
    def _on(streams, t: int):
        return nullcontext() if streams is None else torch.cuda.stream(streams[t])

    def _run(self, modules: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
        """``modules`` in turn, each relu -> LRN -> pool run fused on the CPU as in ``AlexNet._features``."""
        fuse = self.fuse and x.device.type == "cpu" and not nn.modules.module._global_forward_hooks
        i = 0
        while i < len(modules):
            fused = fusable_block(modules[i:i + 3]) if fuse else None
            x, i = (fused(x), i + 3) if fused is not None else (modules[i](x), i + 1)
        return x

    def _gather(self, hs: list[torch.Tensor], t: int, streams) -> torch.Tensor:
        """Both towers' activations on tower t's device, tower 0's first along dim 1: the exchange.

        On CUDA a copy between devices runs on the producer's stream and the two streams wait for
        each other around it; on one device the reader's stream waits for the producer's and the
        producer's memory is kept until the reader is done with it."""
        device = self.devices[t]
        parts = []
        for i, h in enumerate(hs):
            if streams is None:
                parts.append(h.to(device))
                continue
            with torch.cuda.stream(streams[i]), torch.cuda.stream(streams[t]):
                if h.device != device:
                    parts.append(h.to(device, non_blocking=True))
                else:
                    if i != t:
                        streams[t].wait_stream(streams[i])
                        h.record_stream(streams[t])
                    parts.append(h)
        with self._on(streams, t):
            return torch.cat(parts, 1)


def _grouped_state_dict(module: TwoTowerAlexNet, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """state_dict() post-hook: the towers' halves joined into the grouped model's keys and shapes, in its order."""
    ours = [k for k in state_dict if k.startswith(prefix + "towers.") or k.startswith(prefix + "classifier.")]
    values = {k: state_dict.pop(k) for k in ours}
    head = {k: v for k, v in values.items() if k.startswith(prefix + "classifier.")}
    tower0 = prefix + "towers.0."
    with torch.no_grad():
        for key in [k for k in values if k.startswith(tower0)]:
            rest = key[len(tower0):]
            first, second = values[key], values[prefix + "towers.1." + rest]
            state_dict[prefix + rest] = torch.cat([first, second.to(first.device)])
    state_dict.update(head)


def _tower_state_dict(module: TwoTowerAlexNet, state_dict: dict, prefix: str, *_args) -> None:
    """load_state_dict() pre-hook: each grouped tensor cut into the two towers' halves (rows)."""
    for rest, _ in module.towers[0].named_parameters():
        value = state_dict.pop(prefix + rest, None)
        if value is not None:
            h = value.shape[0] // 2
            state_dict[f"{prefix}towers.0.{rest}"], state_dict[f"{prefix}towers.1.{rest}"] = value[:h], value[h:]
