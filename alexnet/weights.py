"""Every weight file alexnet reads, in one place: ``.pt``/``.pth`` (torch, weights only), ``.safetensors`` and
Caffe's ``.caffemodel``, told apart by their bytes; state dicts cleaned once; loads checked shape by shape.

- ``read_weights(path)``: a ``Weights`` (the tensors, the kind of file, and for an alexnet checkpoint its raw
  dict: ``alexnet.checkpoint.Checkpoint.from_dict`` types it). A state dict saved from DDP or ``torch.compile``
  (keys under ``module.`` or ``_orig_mod.``) or wrapped as ``{"state_dict": ...}`` is unwrapped here
  (``clean_state_dict``). Used by ``train --init`` (``alexnet.train.finetune``), ``alexnet convert``
  (``alexnet.interchange.caffe``) and the ``.safetensors`` exports predict runs (``alexnet.inference.backends``).
- ``load_checked(model, state_dict)``: ``load_state_dict`` whose errors name the layer and both shapes.
- ``check_values(tensors, label)``: weights are floating point and finite (``convert`` and ``train --init``).

Loading never runs code from a file: torch files are read with ``weights_only=True``, a file that needs more is
refused in a sentence; a truncated or foreign file is a ``UsageError`` naming it, never a traceback.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from alexnet.errors import UsageError

FORMAT = "alexnet-checkpoint-v1"      # the marker of alexnet's own checkpoints (alexnet.checkpoint)
PREFIXES = ("module.", "_orig_mod.")  # DDP's and torch.compile's wrappers
CAFFE_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
CAFFE_TYPES = ("Convolution",) * 5 + ("InnerProduct",) * 3


@dataclass
class Weights:
    """A weight file's tensors and what the file said about itself."""

    tensors: dict[str, torch.Tensor]
    kind: str                         # "checkpoint" (alexnet's), "pth", "safetensors" or "caffemodel"
    checkpoint: dict | None = None    # the raw dict of an alexnet checkpoint
    metadata: dict[str, str] = field(default_factory=dict)     # a safetensors header's strings
    net_name: str = ""                # a caffemodel's NetParameter.name, or a safetensors file's "model" metadata
    file_names: dict[str, str] = field(default_factory=dict)   # conv1 -> a caffemodel's own name for that layer


def kind_of(path: Path) -> str:
    """"pth", "safetensors" or "caffemodel", by the first bytes (a zip or a pickle; an 8-byte length then a JSON
    header; anything else is read as a caffemodel's protobuf)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04" or (head[:1] == b"\x80" and path.suffix.lower() != ".caffemodel"):
        return "pth"
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
        return "safetensors"
    return "caffemodel"


def export_kind(path: Path) -> str | None:
    """"ONNX", "safetensors" or "TorchScript" when ``path`` is such an export (``alexnet export``), by its bytes
    (an ONNX model starts with its ir_version field, 0x08) or a TorchScript archive's code; else None."""
    import zipfile
    with open(path, "rb") as f:
        head = f.read(16)
    if path.suffix.lower() == ".onnx" or head[:1] == b"\x08":
        return "ONNX"
    if kind_of(path) == "safetensors":
        return "safetensors"
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as archive:
                if any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist()):
                    return "TorchScript"
        except (OSError, zipfile.BadZipFile):
            return None
    return None


def read_weights(path: str | os.PathLike, *, label: str | None = None, hint: str = "") -> Weights:
    """The tensors of ``path``. ``label``: how errors name the file (default: the path; e.g. "--init PATH");
    ``hint``: what errors add after "; " (e.g. which files are understood)."""
    path = Path(path)
    label = label or str(path)
    if not path.is_file():
        raise UsageError(f"{label} {'is a folder' if path.is_dir() else 'does not exist'}" + (f"; {hint}" if hint else ""))
    kind = kind_of(path)
    if kind == "safetensors":
        tensors, metadata = read_safetensors(path, label=label, hint=hint)
        return Weights(clean_state_dict(tensors), kind, metadata=metadata, net_name=metadata.get("model", ""))
    if kind == "caffemodel":
        tensors, net_name, file_names = read_caffemodel(path, label=label, hint=hint)
        return Weights(tensors, kind, net_name=net_name, file_names=file_names)
    obj = read_torch(path, label=label, hint=hint)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if not isinstance(obj.get("model"), dict) or not isinstance(obj.get("state_dict"), dict):
            raise UsageError(f"{label} is an alexnet checkpoint without its model or state_dict")
        return Weights(obj["state_dict"], "checkpoint", checkpoint=obj)
    tensors = clean_state_dict(obj)
    if tensors is None:
        raise UsageError(f"{label} is a torch file but not a state dict of tensors" + (f"; {hint}" if hint else ""))
    return Weights(tensors, kind)


def clean_state_dict(obj) -> dict[str, torch.Tensor] | None:
    """A plain state dict of ``obj``: ``{"state_dict": ...}`` unwrapped, a prefix every key shares (``module.``,
    ``_orig_mod.``, in any nesting) removed; None when ``obj`` is not a non-empty dict of tensors."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        return None
    state = dict(obj)
    while prefix := next((p for p in PREFIXES if all(k.startswith(p) for k in state)), None):
        state = {key[len(prefix):]: value for key, value in state.items()}
    return state


def read_torch(path: Path, *, label: str, hint: str = ""):
    """``torch.load(weights_only=True)``; what would run code, or is not a torch file, is a UsageError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UsageError(f"{label}: refusing a file that is not weights-only (loading it would run code from "
                         "the file)") from None
    except Exception as err:  # noqa: BLE001 - torch.load fails in many ways on a file that is not a checkpoint
        detail = str(err).splitlines()[0] if str(err) else ""
        raise UsageError(f"{label} is not a readable weights-only torch file ({type(err).__name__}: {detail})"
                         + (f"; {hint}" if hint else "")) from None


def read_safetensors(path: Path, *, label: str, hint: str = "") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, header metadata) of a ``.safetensors`` file."""
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: f.get_tensor(key) for key in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise UsageError(f"{label} is not a readable .safetensors file ({err}); "
                         + (hint or "was it truncated?")) from None


def read_caffemodel(path: Path, *, label: str, hint: str = "") -> tuple[dict[str, torch.Tensor], str, dict[str, str]]:
    """conv1.weight ... fc8.bias from the net's layers that hold weights, taken in order (a fine-tuned net may
    rename fc8), checked to be five convolutions then three inner products, each with weights and a bias."""
    from alexnet.interchange.caffe_proto import ProtoError, parse_net
    known = hint.removeprefix("give ") or "a caffemodel"
    try:
        name, layers = parse_net(path.read_bytes())
    except ProtoError as err:
        if str(err).startswith("layer "):        # the messages parsed, one blob's shape and data disagree
            raise UsageError(f"{label} is a damaged caffemodel: {err}; download it again") from None
        raise UsageError(f"{label} is not {known} (read as a caffemodel: {err})") from None
    weighted = [layer for layer in layers if layer.blobs]
    if not weighted:
        raise UsageError(f"{label} is not {known} (read as a caffemodel it holds no layer with weights)")
    found = [(layer.name, layer.type) for layer in weighted]
    if [t for _, t in found] != list(CAFFE_TYPES) or any(len(layer.blobs) != 2 for layer in weighted):
        raise UsageError(f"{label}: layers with weights {found} (blobs {[len(l.blobs) for l in weighted]}) are not "
                         f"AlexNet's five convolutions and three inner products, each with weights and a bias; "
                         f"convert reads bvlc_alexnet and bvlc_reference_caffenet (--model alexnet_caffe or caffenet)")
    tensors = {}
    for ours, layer in zip(CAFFE_LAYERS, weighted):
        tensors[f"{ours}.weight"], tensors[f"{ours}.bias"] = (torch.from_numpy(b) for b in layer.blobs)
    return tensors, name, {ours: layer.name for ours, layer in zip(CAFFE_LAYERS, weighted)}


def check_values(tensors: dict[str, torch.Tensor], label: str) -> None:
    """A UsageError naming ``label`` and each tensor that is not floating point (an int32 state dict would load
    truncated) or holds NaN or infinity (it would predict NaN). Integer counters (BatchNorm's
    ``num_batches_tracked``) are not weights and pass."""
    not_float = [f"{key} ({str(value.dtype).removeprefix('torch.')})" for key, value in tensors.items()
                 if not (value.is_floating_point() or key.endswith("num_batches_tracked"))]
    if not_float:
        raise UsageError(f"{label}: weights must be floating point, and {len(not_float)} tensor(s) are not: "
                         f"{', '.join(not_float[:8])}{' ...' if len(not_float) > 8 else ''}")
    broken = []
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            nan, inf = int(torch.isnan(value).sum()), int(torch.isinf(value).sum())
            broken.append(f"{key} ({', '.join(f'{n} {w}' for n, w in ((nan, 'NaN'), (inf, 'infinite')) if n)})")
    if broken:
        raise UsageError(f"{label} holds non-finite weights in {len(broken)} tensor(s): {', '.join(broken[:8])}"
                         f"{' ...' if len(broken) > 8 else ''}; these weights are broken (a diverged run?)")


def load_checked(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """``model.load_state_dict`` with errors that name the layer and both shapes."""
    own = model.state_dict()
    for key, value in state_dict.items():
        if key in own and own[key].shape != value.shape:
            raise UsageError(f"{source}: layer {key} has shape {tuple(value.shape)} but the model expects "
                             f"{tuple(own[key].shape)} (trained for a different number of classes or channels?)")
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise UsageError(f"{source} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.load_state_dict(state_dict)
