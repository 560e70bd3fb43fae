"""Fine-tuning: ``--init`` (start from trained weights), ``--reset-head``, ``--freeze`` and ``--head-lr-mult``.

- ``--init FILE``: the run starts from the weights in FILE, an alexnet checkpoint (``last.pt``/``best.pt`` of
  ``alexnet train``, or a file written by ``alexnet convert``) or a plain state dict of the same model (``.pt``,
  ``.safetensors``). Only the weights come along: not the optimizer's momentum, the schedule, the position, the
  RNG or the preprocessing (the new data's own statistics normalise its inputs, as in any run). The model, its
  input channels and input size must be the checkpoint's. A resumed run continues from its ``last.pt`` and does
  not read FILE again.
- ``--reset-head``: the head (the model's last fully connected layer: ``classifier.fc8`` in the AlexNet family,
  ``fc`` in ResNet, ``classifier.6`` in VGG) keeps this run's fresh initialisation; every other layer is copied.
  Without it a head of another shape (another class count) is an error naming the layer and both shapes.
- ``--freeze features`` or ``--freeze LAYER``: every parameter up to and including that layer, in module order,
  stops learning, and those layers run in eval mode (BatchNorm normalises with its stored statistics, which stay
  as they are; a dropout among them is off), so the frozen part is a fixed function of the image; a dropout
  after the last frozen layer still acts on what trains. ``features`` is the model's ``features`` block, or, in
  a model without one (ResNet), everything before the head. A block's name (``layer3``) freezes all of it.
- ``--head-lr-mult M``: the head learns at M times ``--lr`` (``schedule.param_groups``).

With ``--towers`` the layer names are the grouped model's (``features.conv2``, as in its state dict).
"""
from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

import torch
from torch import nn

from alexnet.checkpoint import Checkpoint, ModelSpec, peek_model
from alexnet.errors import UsageError
from alexnet.weights import check_values, kind_of, read_weights

_TOWER = re.compile(r"^towers\.\d+\.")


def _leaves(model: nn.Module) -> dict[str, list[nn.Module]]:
    """Leaf modules by name, in module order; a two-tower model's halves share their grouped name."""
    leaves: dict[str, list[nn.Module]] = {}
    for name, module in model.named_modules():
        if name and not next(module.children(), None):
            leaves.setdefault(_TOWER.sub("", name), []).append(module)
    return leaves


def head_name(model: nn.Module) -> str:
    """The model's last fully connected layer (the one that makes the class scores)."""
    linear = [name for name, modules in _leaves(model).items() if isinstance(modules[0], nn.Linear)]
    if not linear:
        raise UsageError(f"{getattr(model, 'model_name', 'this model')} has no fully connected layer to treat as "
                         "its head")
    return linear[-1]


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for module in _leaves(model)[head_name(model)] for p in module.parameters()]


def _layer_names(leaves: dict[str, list[nn.Module]]) -> list[str]:
    """The layers with parameters, by their short name (``conv1``, ``fc7``) where it is unambiguous."""
    with_params = [name for name, modules in leaves.items() if any(True for _ in modules[0].parameters())]
    last = [name.rpartition(".")[2] for name in leaves]
    return [short if last.count(short := name.rpartition(".")[2]) == 1 else name for name in with_params]


def frozen_layers(model: nn.Module, freeze: str) -> list[str]:
    """The leaf layers ``--freeze`` stops (in module order): up to and including the named one."""
    if not freeze:
        return []
    leaves = _leaves(model)
    names = list(leaves)
    if freeze == "features" and not any(n.startswith("features.") for n in names):
        return names[:names.index(head_name(model))]
    under = [i for i, n in enumerate(names) if n == freeze or n.startswith(freeze + ".")]
    if not under:                                   # a short name: conv5, fc7
        under = [i for i, n in enumerate(names) if n.rpartition(".")[2] == freeze]
        if len(under) > 1:
            raise UsageError(f"--freeze {freeze} is ambiguous: {', '.join(names[i] for i in under)}; "
                             "give the full name")
    if not under:
        raise UsageError(f"--freeze {freeze}: {getattr(model, 'model_name', 'the model')} has no such layer; give "
                         f"features, a block's name or one of the layers: {', '.join(_layer_names(leaves))}")
    return names[:max(under) + 1]


def _stay_in_eval(module: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(module, False)


def freeze(model: nn.Module, cfg) -> None:
    """``--freeze``: the frozen layers' parameters stop learning and the layers stay in eval mode (the run's
    ``model.train()`` each epoch leaves them so). Called before the optimizer is built, resumed runs too."""
    leaves = _leaves(model)
    for name in frozen_layers(model, cfg.freeze):
        for module in leaves[name]:
            module.requires_grad_(False)
            module.train = _stay_in_eval.__get__(module)
            module.eval()
    if cfg.freeze and not any(p.requires_grad for p in model.parameters()):
        raise UsageError(f"--freeze {cfg.freeze} freezes every layer of {cfg.model}: nothing would learn; name an "
                         f"earlier layer (the head is {head_name(model)})")


def check_flags(cfg, resume: bool = False) -> None:
    """What the command line checks before loading data: --init exists (unless resuming: last.pt has the
    weights), --reset-head has weights to act on, and --freeze names a layer of the model (built on the meta
    device at its default size)."""
    if cfg.init and not resume and not Path(cfg.init).is_file():
        raise UsageError(f"--init {cfg.init} does not exist (give a checkpoint or a state dict file)")
    if cfg.reset_head and not cfg.init:
        raise UsageError("--reset-head re-initialises the head of the --init weights; give --init CKPT too")
    if cfg.freeze:
        from alexnet.models import create_model
        try:
            with torch.device("meta"):
                model = create_model(cfg.model, **cfg.model_kwargs)
        except Exception:  # noqa: BLE001 - a model that needs the data's size: checked again when it is built
            return
        frozen_layers(model, cfg.freeze)


def read_init(path: str) -> tuple[dict[str, torch.Tensor], ModelSpec | None, list | None]:
    """(state dict, model spec or None, class names or None) of ``--init``: an alexnet checkpoint, or a state dict
    in a torch or safetensors file (``alexnet.weights``: DDP's and torch.compile's prefixes removed)."""
    label = f"--init {path}"
    if Path(path).is_file() and kind_of(Path(path)) == "caffemodel":
        if Path(path).suffix.lower() == ".caffemodel":
            raise UsageError(f"{label} is a Caffe model: convert it first (alexnet convert {path} --out CKPT), "
                             "then pass --init CKPT")
        raise UsageError(f"{label} is not a checkpoint or state dict (neither a torch file nor safetensors)")
    weights = read_weights(path, label=label)
    check_values(weights.tensors, label)          # floating point and finite, each bad tensor named
    if weights.kind != "checkpoint":
        return weights.tensors, None, None
    ckpt = Checkpoint.from_dict(weights.checkpoint, label)
    return ckpt.state_dict, ckpt.model, ckpt.classes


def adopt_init_model_kwargs(cfg, given: bool):
    """``cfg`` building the network ``--init``'s weights were trained in, when the command line names no
    ``--model-kwargs`` (``given``) and the checkpoint holds the same model: e.g. an ``alexnet_small`` of the earlier
    quick recipe (fc 256) fine-tuned under today's (fc 512). Anything else is left to ``load_init``'s checks."""
    if not cfg.init or given or not Path(cfg.init).is_file():
        return cfg
    theirs = peek_model(cfg.init)          # the tensors are read once, by the run (load_init)
    if theirs is None or theirs.name != cfg.model or theirs.kwargs == cfg.model_kwargs:
        return cfg
    return dataclasses.replace(cfg, model_kwargs=dict(theirs.kwargs))


def _check_spec(path: str, theirs: ModelSpec, ours: ModelSpec, input_flags: str) -> None:
    if theirs.name != ours.name:
        raise UsageError(f"--init {path} holds {theirs.name} weights and this run builds {ours.name}; "
                         f"fine-tune them with --model {theirs.name}")
    if theirs.in_channels != ours.in_channels:
        raise UsageError(f"--init {path} was trained on {theirs.in_channels}-channel images and this data has "
                         f"{ours.in_channels} channel(s); its first layer cannot take them (alexnet prepare DATA "
                         f"--out CACHE --channels {theirs.in_channels} makes a copy with that many)")
    if theirs.input_size != ours.input_size:
        raise UsageError(f"--init {path} was trained at {theirs.input_size} px and this run feeds "
                         f"{ours.input_size} px; {input_flags} {theirs.input_size} feeds it what it knows")


def prepare(model: nn.Module, cfg, spec: ModelSpec, classes: list[str], *, resumed: bool, log, warn: bool = True) -> None:
    """Fine-tuning in one call, before the optimizer takes the parameters: ``--init``'s weights copied into
    ``model`` (not its optimizer state; a resumed run has its own in last.pt and skips this), then ``--freeze``.
    ``log`` reports what was copied, reset and frozen."""
    if cfg.init and not resumed:
        copied, head = load_init(model, cfg, spec, classes, warn=warn)
        log(f"init: {copied} tensors from {cfg.init}" + (f"; {head} re-initialised (--reset-head)"
                                                         if cfg.reset_head else "") + "; no optimizer state")
    freeze(model, cfg)
    if cfg.freeze and not resumed:
        frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        layers = frozen_layers(model, cfg.freeze)
        log(f"frozen: {layers[0]} ... {layers[-1]} ({frozen:,} of {total:,} parameters; eval mode)")


def load_init(model: nn.Module, cfg, spec: ModelSpec, classes: list[str], warn: bool = True) -> tuple[int, str]:
    """Load ``cfg.init`` into ``model`` (built from ``spec`` for ``classes``); (tensors copied, head name).
    ``warn``: say so on stderr when the head is kept for other class names."""
    path = cfg.init
    state, theirs, their_classes = read_init(path)
    if theirs is not None:
        _check_spec(path, theirs, spec, "--resize-to" if cfg.resize_to else "--crop-size")
    head = head_name(model)
    own = model.state_dict()
    in_head = lambda key: key.startswith(head + ".")  # noqa: E731
    if cfg.reset_head:
        state = {k: v for k, v in state.items() if not in_head(k)}
    hint = "is it a checkpoint of another --model, --model-kwargs or input size?"
    if theirs is not None and theirs.kwargs != spec.kwargs:
        hint = f"it was built with --model-kwargs '{json.dumps(theirs.kwargs)}' (this run: '{json.dumps(spec.kwargs)}')"
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            layer, _, tensor = key.rpartition(".")
            if in_head(key):
                raise UsageError(f"--init {path}: layer {head} has {tensor} of shape {tuple(value.shape)} in the "
                                 f"checkpoint ({value.shape[0]} classes) but this run needs {tuple(own[key].shape)} "
                                 f"({own[key].shape[0]} classes); pass --reset-head to start it afresh (every other "
                                 "layer is still copied)")
            raise UsageError(f"--init {path}: layer {layer} has {tensor} of shape {tuple(value.shape)} in the "
                             f"checkpoint but {tuple(own[key].shape)} in this {cfg.model}; {hint}")
    missing = [k for k in own if k not in state and not (cfg.reset_head and in_head(k))]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = [f"{what} {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                 for what, keys in (("it lacks", missing), ("this model has no", unexpected)) if keys]
        raise UsageError(f"--init {path} does not fit {cfg.model}: {'; '.join(parts)}; {hint}")
    if warn and not cfg.reset_head and their_classes and list(their_classes) != list(classes):
        names = lambda values: ", ".join(map(str, values[:5])) + (", ..." if len(values) > 5 else "")  # noqa: E731
        print(f"alexnet train: warning: --init {path} was trained on the classes {names(their_classes)} and its "
              f"head {head} is kept for this data's {names(classes)}; pass --reset-head to start the head afresh",
              file=sys.stderr, flush=True)
    with torch.no_grad():
        model.load_state_dict({**own, **state})
    return len(state), head
