"""``alexnet convert``: published AlexNet weights into this project's checkpoints, with class names and
preprocessing inside, so that ``alexnet eval`` and ``alexnet predict`` need nothing else.

Three files are read, told apart by their bytes: torchvision's ``.pth`` (a zip written by ``torch.save``,
loaded as weights only), BVLC Caffe's ``.caffemodel`` (binary protobuf, read by ``alexnet.interchange.caffe_proto``) and
``.safetensors``. Their tensors come in one of three layouts, told apart by their names:

- ``torchvision``: ``features.0.weight`` ... ``classifier.6.bias``, torchvision's AlexNet: ``alexnet_owt``
  (torchvision's own class, so the keys are the same), with torchvision's ImageNet preprocessing;
- ``caffe``: ``conv1.weight`` ... ``fc8.bias`` (a caffemodel's layers, in order): ``alexnet_caffe``
  (bvlc_alexnet) or ``caffenet`` (bvlc_reference_caffenet), with Caffe's preprocessing. Caffe feeds BGR, so
  conv1's three input channels are reversed here and the checkpoint takes RGB like every other one;
- ``ours``: ``features.conv1.weight`` ... (this project's alexnet_caffe/caffenet state dicts): RGB already.

The number of classes follows the last layer (ImageNet's 1000 names by default; ``classes`` for others).
"""
from __future__ import annotations

import hashlib
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import torch

from alexnet.checkpoint import Checkpoint, ModelSpec
from alexnet.errors import UsageError
from alexnet.models import create_model
from alexnet.interchange.caffe_preprocessing import caffe_preprocessing, leading_ones_dropped, torchvision_preprocessing
from alexnet.weights import CAFFE_LAYERS, check_values, read_weights

TORCHVISION_LAYERS = ("features.0", "features.3", "features.6", "features.8", "features.10",
                      "classifier.1", "classifier.4", "classifier.6")
CAFFE_NETS = {"alexnet": "alexnet_caffe", "caffenet": "caffenet"}     # NetParameter.name -> our model
MODELS = ("alexnet_owt", "alexnet_caffe", "caffenet")
KNOWN = "a torchvision AlexNet .pth, a Caffe .caffemodel or a .safetensors file of either"


@dataclass
class Converted:
    """A weights file's tensors by the names of its ``layout``, and what the file said about itself."""

    tensors: dict[str, torch.Tensor]
    kind: str                 # "pth", "caffemodel" or "safetensors"
    layout: str               # "torchvision", "caffe" or "ours"
    net_name: str = ""        # a caffemodel's NetParameter.name, or a safetensors file's "model" metadata
    file_names: dict[str, str] = field(default_factory=dict)   # conv1 -> a caffemodel's own name for it


def read_published(path: str | os.PathLike) -> Converted:
    """The tensors of ``path`` (``alexnet.weights``) and their layout; a UsageError naming the file when it is
    none of ``KNOWN``."""
    weights = read_weights(path, hint=f"give {KNOWN}")
    if weights.kind == "checkpoint":
        raise UsageError(f"{path} is already an alexnet checkpoint; eval and predict take it as it is")
    check_values(weights.tensors, str(path))
    path = Path(path)
    return Converted(weights.tensors, weights.kind, _layout(weights.tensors, path), weights.net_name,
                     weights.file_names)


def _our_name(caffe_name: str) -> str:
    return f"{'features' if caffe_name.startswith('conv') else 'classifier'}.{caffe_name}"


def _layout(tensors: dict, path: Path) -> str:
    keys = set(tensors)
    for layout, prefixes in (("torchvision", TORCHVISION_LAYERS), ("caffe", CAFFE_LAYERS),
                             ("ours", [_our_name(n) for n in CAFFE_LAYERS])):
        if keys == {f"{p}.{s}" for p in prefixes for s in ("weight", "bias")}:
            return layout
    raise UsageError(f"{path}: unknown layout: its tensors are {sorted(keys)[:6]}{'...' if len(keys) > 6 else ''}; "
                     "convert reads torchvision's AlexNet (features.0.weight ... classifier.6.bias), Caffe's "
                     "(conv1.weight ... fc8.bias) or this project's alexnet_caffe (features.conv1.weight ...)")


def choose_model(weights: Converted, model: str | None, path: str) -> str:
    """--model, checked against the layout; else alexnet_owt for torchvision's, or the Caffe net's own name."""
    if weights.layout == "torchvision":
        if model not in (None, "alexnet_owt"):
            raise UsageError(f"--model {model}: {path} holds torchvision's AlexNet (features.0 ... classifier.6), "
                             f"which is alexnet_owt; pass --model alexnet_owt or leave --model out")
        return "alexnet_owt"
    if model is not None:
        if model not in ("alexnet_caffe", "caffenet"):
            raise UsageError(f"--model {model}: {path} holds Caffe's AlexNet layers (conv1 ... fc8), which convert to "
                             f"alexnet_caffe (bvlc_alexnet) or caffenet (bvlc_reference_caffenet); pass one of those")
        return model
    guess = weights.net_name.lower().replace("bvlc_", "").replace("reference_", "")
    guess = CAFFE_NETS.get(guess, guess if guess in CAFFE_NETS.values() else None)
    if guess is None:
        named = f"the net is named {weights.net_name!r}, neither" if weights.net_name else "the file names neither"
        raise UsageError(f"{path}: {named} bvlc_alexnet's 'AlexNet' nor 'CaffeNet'; their weights have the same "
                         f"shapes (they differ in the order of pooling and LRN): pass --model alexnet_caffe or "
                         f"--model caffenet")
    return guess


def state_dict_for(weights: Converted, model: str, path: str) -> tuple[dict[str, torch.Tensor], dict, int]:
    """(our state dict, model kwargs, num_classes): every tensor checked against ``model`` built on the meta
    device; legacy 4-D Caffe shapes ((1, 1, out, in) for an inner product) reshaped; conv1 made RGB."""
    names = TORCHVISION_LAYERS if weights.layout == "torchvision" else CAFFE_LAYERS
    prefix = {n: n if weights.layout == "torchvision" else _our_name(n) for n in names}
    file_prefix = {n: prefix[n] if weights.layout == "ours" else n for n in names}
    source = {n: tuple(weights.tensors[f"{file_prefix[n]}.{part}"] for part in ("weight", "bias")) for n in names}
    last, first_fc = source[names[-1]][0], source[names[5]][0]
    num_classes = leading_ones_dropped(last.shape)[0]
    width = leading_ones_dropped(first_fc.shape)[0]
    kwargs = {"fc_width": width} if weights.layout != "torchvision" and width != 4096 else {}
    with torch.device("meta"):
        expected = create_model(model, num_classes=num_classes, in_channels=3, **kwargs).state_dict()
    state = {}
    for name in names:
        for part, tensor in zip(("weight", "bias"), source[name]):
            key = f"{prefix[name]}.{part}"
            shape = expected[key].shape
            if tuple(tensor.shape) != tuple(shape):
                if leading_ones_dropped(tensor.shape) != leading_ones_dropped(shape):
                    label = f"{name}.{part}"
                    if weights.file_names.get(name, name) != name:
                        label += f" (the file's layer {weights.file_names[name]!r})"
                    raise UsageError(f"{path}: layer {label} has shape {tuple(tensor.shape)} but {model} expects "
                                     f"{tuple(shape)}; {_shape_hint(weights.layout)}")
                tensor = tensor.reshape(shape)
            state[key] = tensor.detach().to(torch.float32).contiguous()
    if set(state) != set(expected):
        raise UsageError(f"{path}: {model} also has {sorted(set(expected) - set(state))}, which the file lacks")
    if weights.layout == "caffe":            # Caffe's BGR input: conv1's channels reversed, so it takes RGB
        state["features.conv1.weight"] = state["features.conv1.weight"].flip(1).contiguous()
    return state, kwargs, num_classes


def _shape_hint(layout: str) -> str:
    if layout == "torchvision":
        return ("torchvision's AlexNet (alexnet_owt: convolutions 64-192-384-256-256, fc 4096) is the network "
                "this layout converts to; was the file saved from another network?")
    return ("alexnet_caffe (--model alexnet_caffe, bvlc_alexnet) and caffenet (--model caffenet) take "
            "bvlc_alexnet's shapes: 3 input channels, conv2/conv4/conv5 in two groups, 6x6x256 into fc6; "
            "weights of another network do not convert (fc sizes and the number of classes may differ)")


def read_classes(path: str | None, count: int, source: str) -> list[str]:
    """Class names: one a line of ``path`` (UTF-8, a byte order mark dropped, blank lines skipped; each name
    distinct and free of control characters); else ImageNet's 1000 (torchvision's list, in the synset order
    Caffe's ILSVRC 2012 models use too) when the net has 1000 outputs."""
    if path is None:
        if count != 1000:
            raise UsageError(f"{source} has {count} outputs, not ImageNet's 1000: pass --classes FILE "
                             f"with {count} class names, one a line")
        from torchvision.models import AlexNet_Weights
        return list(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])
    try:
        lines = [line.strip() for line in Path(path).read_text(encoding="utf-8-sig").split("\n")]
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"--classes {path}: cannot read it ({err}); give a text file, one class name a line") from None
    names, seen = [], {}
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        bad = next((c for c in line if unicodedata.category(c) in ("Cc", "Zl", "Zp")), None)
        if bad is not None:
            raise UsageError(f"--classes {path}: line {number} holds the control character {bad!r}; "
                             "give one printable class name a line")
        if line in seen:
            raise UsageError(f"--classes {path}: line {number} repeats {line!r} of line {seen[line]}; "
                             "class names must be distinct")
        names.append(line)
        seen[line] = number
    if len(names) != count:
        raise UsageError(f"--classes {path} has {len(names)} names but {source} has {count} outputs; "
                         f"give a file with {count} names, one a line")
    return names


def convert(weights_path: str, out: str, *, model: str | None = None, mean: str | None = None,
            classes: str | None = None) -> dict:
    """Write ``out``, a checkpoint of ``weights_path`` (atomically); returns what was converted."""
    if os.path.exists(out) and os.path.samefile(out, weights_path):
        raise UsageError(f"--out {out} is the weights file itself; give another path")
    weights = read_published(weights_path)
    name = choose_model(weights, model, weights_path)
    if mean is not None and name == "alexnet_owt":
        raise UsageError("--mean is Caffe's mean; torchvision's weights use ImageNet's mean/std: leave --mean out")
    state, kwargs, num_classes = state_dict_for(weights, name, weights_path)
    names = read_classes(classes, num_classes, weights_path)
    pre = torchvision_preprocessing() if name == "alexnet_owt" else caffe_preprocessing(mean)
    digest = hashlib.sha256()
    with open(weights_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    source = {"file": os.path.basename(weights_path), "sha256": digest.hexdigest(), "format": weights.kind,
              "layout": weights.layout, "net_name": weights.net_name, "bgr_to_rgb": weights.layout == "caffe",
              "preprocessing": pre.source}
    config = {"data": None, "data_root": None, "val_fraction": 0.0, "seed": 0, "ten_crop": False, "model": name,
              "model_kwargs": kwargs, "converted_from": source["file"]}
    input_size = 224 if name == "alexnet_owt" else 227
    Checkpoint(ModelSpec(name, num_classes, 3, input_size, kwargs), names, config, pre, state,
               extra={"source": source}).save(out)
    return {"out": out, "model": name, "num_classes": num_classes, **source}
