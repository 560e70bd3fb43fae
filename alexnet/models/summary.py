"""The layer-by-layer table the seeds walk through: what each layer is, its output, params, MACs."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from alexnet.ops.lrn import LocalResponseNorm
from alexnet.models import create_model, model_info


@dataclass
class LayerRow:
    name: str
    kind: str
    out_shape: tuple[int, ...]   # (C, H, W) or (F,)
    params: int
    macs: int


def describe(module: nn.Module) -> str:
    """Short human description, e.g. ``conv 11x11/4, 96, groups 1``."""
    if isinstance(module, nn.Conv2d):
        k, s = module.kernel_size, module.stride
        pad = f", pad {module.padding[0]}" if module.padding[0] else ""
        return f"conv {k[0]}x{k[1]}/{s[0]}, {module.out_channels}, groups {module.groups}{pad}"
    if isinstance(module, nn.Linear):
        return f"fc {module.in_features} -> {module.out_features}"
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        kind = "maxpool" if isinstance(module, nn.MaxPool2d) else "avgpool"
        k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
        s = module.stride if isinstance(module.stride, int) else module.stride[0]
        overlap = " (overlapping)" if k > s else ""
        return f"{kind} {k}x{k}/{s}{overlap}"
    if isinstance(module, LocalResponseNorm):
        groups = f", groups {module.groups}" if module.groups != 1 else ""
        return (f"LRN n={module.size} k={module.k:g} alpha={module.alpha:g}/{module.alpha_on} beta={module.beta:g}"
                f"{groups}")
    if isinstance(module, nn.LocalResponseNorm):
        return f"LRN (torch) n={module.size} k={module.k:g} alpha={module.alpha:g}/mean beta={module.beta:g}"
    if isinstance(module, nn.Dropout):
        return f"dropout {module.p:g}"
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return f"adaptive avgpool {module.output_size}"
    if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
        return f"batchnorm {module.num_features}"
    return type(module).__name__.lower()


def _macs(module: nn.Module, out: torch.Tensor) -> int:
    """Multiply-adds of conv and linear layers (the count the paper's totals use)."""
    if isinstance(module, nn.Conv2d):
        k = module.kernel_size[0] * module.kernel_size[1]
        return out.numel() // out.shape[0] * (module.in_channels // module.groups) * k
    if isinstance(module, nn.Linear):
        return out.numel() // out.shape[0] * module.in_features
    return 0


def layer_table(model: nn.Module, input_shape: tuple[int, int, int]) -> list[LayerRow]:
    """Run one image of ``input_shape`` (C, H, W) through ``model`` and record every leaf layer."""
    rows: list[LayerRow] = []
    hooks = []
    names = {m: n for n, m in model.named_modules()}

    def hook(module, _inputs, out):
        if isinstance(out, torch.Tensor) and not isinstance(module, nn.Identity):
            params = sum(p.numel() for p in module.parameters(recurse=False))
            rows.append(LayerRow(names[module], describe(module), tuple(out.shape[1:]), params, _macs(module, out)))

    for module in model.modules():
        if not list(module.children()):
            hooks.append(module.register_forward_hook(hook))
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
        model.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    return rows


def _shape(shape: tuple[int, ...]) -> str:
    return " x ".join(str(s) for s in shape)


def summary_text(name: str, *, input_size: int | None = None, in_channels: int | None = None,
                 num_classes: int = 1000) -> str:
    """The full table for a registered model as printed by ``alexnet summary``."""
    info = model_info(name)
    size = info.input_size if input_size is None else input_size
    channels = info.in_channels if in_channels is None else in_channels
    model = create_model(name, num_classes=num_classes, in_channels=channels, input_size=size)
    rows = layer_table(model, (channels, size, size))
    total_params = sum(p.numel() for p in model.parameters())
    total_macs = sum(r.macs for r in rows)
    activations = channels * size * size + sum(torch.Size(r.out_shape).numel() for r in rows)
    towers = {}
    if info.towers:   # [3.2] each layer's share on the two GPUs and where activations cross between them
        from alexnet.models.towers import tower_plan
        towers = {layer.name: layer.widths.replace(" on tower 0", " (tower 0)") + " *" * (layer.reads == "both")
                  for layer in tower_plan(model)}
    what = max([44] + [len(r.kind) for r in rows])
    split = f" {'towers 0 + 1':<17}" if towers else ""

    head = f"{'layer':<22} {'what':<{what}} {'output (C x H x W)':<20}{split} {'params':>12} {'MACs':>14}"
    lines = [f"{name}: {info.description}", f"source: {info.source}", "",
             head, "-" * len(head),
             f"{'input':<22} {'':<{what}} {_shape((channels, size, size)):<20}{' ' * len(split)} {'':>12} {'':>14}"]
    for r in rows:
        split = f" {towers.get(r.name, ''):<17}" if towers else ""
        lines.append(f"{r.name:<22} {r.kind:<{what}} {_shape(r.out_shape):<20}{split} {r.params:>12,} {r.macs:>14,}")
    lines += ["-" * len(head),
              f"parameters: {total_params:,}",
              f"multiply-adds per image: {total_macs:,} ({2 * total_macs / 1e9:.2f} GFLOP forward, "
              f"about {6 * total_macs / 1e9:.1f} GFLOP per training image)",
              f"activation memory per image (fp32, forward outputs): {activations * 4 / 2**20:.1f} MiB"]
    if towers:
        crossing = ", ".join(n.split(".")[-1] for n, text in towers.items() if text.endswith("*"))
        lines += [f"towers [3.2]: each GPU holds one tower's share; * reads both towers, the only layers whose "
                  f"input crosses between the GPUs ({crossing})",
                  "  on two devices: create_model(..., towers=('cuda:0', 'cuda:1')), alexnet train --towers cuda:0,cuda:1"]
    if info.notes:
        lines += ["", "notes (where sources disagree):"] + [f"  - {n}" for n in info.notes]
    return "\n".join(lines)


def models_text() -> str:
    """One line per registered model for ``alexnet models``."""
    from alexnet.models import list_models
    lines = [f"{'model':<22} {'params (1000 classes)':>22} {'input':>7}  description"]
    for name in list_models():
        info = model_info(name)
        size = "/".join(map(str, info.input_sizes)) if info.input_sizes else str(info.input_size)
        lines.append(f"{name:<22} {info.num_params:>22,} {size:>7}  {info.description}")
    return "\n".join(lines)
