"""What ``predict`` and ``eval`` run: a checkpoint or an exported file, on PyTorch or onnxruntime.

``load(path, backend, device)`` gives a ``Loaded``: ``model`` maps a preprocessed float32 batch (B, C, H, W) on
``device`` to logits, and ``info`` is the checkpoint without its weights (``alexnet.checkpoint.Checkpoint``: model spec, classes,
config, preprocessing), read from the checkpoint or from the export's metadata (``alexnet.interchange.export``).
Preprocessing is built from ``info.preprocessing`` by the caller, one code path whatever runs the network.

Backends: ``torch`` (a ``.pt`` checkpoint, or a ``.safetensors`` export rebuilt into the zoo's model) and
``onnxruntime`` (an ``.onnx`` export, or a checkpoint exported in memory first). The default follows the file:
onnxruntime for ``.onnx``, torch otherwise. ``auto`` (``alexnet predict``'s default) is the faster engine as
measured by ``bench/inference.py`` and ``bench/predict_folder.py`` (docs/inference/): onnxruntime for an ``.onnx``
file; for a checkpoint, PyTorch (our eager path), except onnxruntime for a model it runs faster one image at a time
when the caller streams images (``images`` None); always PyTorch on a GPU.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from alexnet.checkpoint import Checkpoint
from alexnet.errors import UsageError
from alexnet.interchange.export import INPUT, onnx_bytes, read_metadata
from alexnet.ops.linear import Linear
from alexnet.train.parts import resolve_device
from alexnet.weights import load_checked, read_safetensors

BACKENDS = ("torch", "onnxruntime")
AUTO = "auto"
# --backend auto, from bench/inference.py and bench/predict_folder.py (docs/inference/, run 4). onnxruntime runs
# alexnet_owt (torchvision's network) 1.25x as fast as our eager path at batch 1, but not at batch 64 (0.96x), nor
# end to end in predict (0.84x, decoding threads sharing the cores); the paper's alexnet_2012 runs at half speed
# there (its grouped LRN and convolutions). A checkpoint must also be exported in memory first (0.76 s against
# 0.22 s to load it for torch). So auto picks onnxruntime for a checkpoint only for these models and only for an
# open-ended stream of images (``images`` None: a server answering one at a time), never for a list of files.
ONNXRUNTIME_FASTER = frozenset({"alexnet_owt"})


@dataclass
class Loaded:
    model: Callable[[torch.Tensor], torch.Tensor]   # has .eval(); logits for a batch on ``device``
    info: Checkpoint                                # without weights: model spec, classes, config, preprocessing
    backend: str
    device: torch.device                            # where its inputs go


class OnnxModel:
    """An onnxruntime session called like a module: float32 batch in, logits (a CPU tensor) out."""

    def __init__(self, session) -> None:
        self.session = session
        self.providers = session.get_providers()

    def eval(self) -> "OnnxModel":
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {INPUT: batch})[0])


def kind_of(path: str | os.PathLike) -> str:
    """onnx, safetensors or checkpoint, by the suffix (``alexnet export`` writes these suffixes)."""
    suffix = Path(path).suffix.lower()
    return {".onnx": "onnx", ".safetensors": "safetensors"}.get(suffix, "checkpoint")


def default_backend(path: str | os.PathLike) -> str:
    return "onnxruntime" if kind_of(path) == "onnx" else "torch"


def onnxruntime_installed() -> bool:
    try:
        import onnx  # noqa: F401  (a checkpoint's in-memory export needs it)
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def auto_backend(path: str | os.PathLike, device: str = "auto", images: int | None = None,
                 model: str | None = None) -> str:
    """What ``--backend auto`` runs ``model`` (a zoo name; None: read from the checkpoint) on, for ``images`` images
    (None: an open-ended stream, one at a time): onnxruntime for an ``.onnx`` file; for a checkpoint on the CPU,
    onnxruntime when it is installed, the model is in ONNXRUNTIME_FASTER and ``images`` is None; torch otherwise
    (a ``.safetensors`` file, a GPU, a list of files, a model PyTorch runs faster)."""
    kind = kind_of(path)
    if kind == "onnx":
        return "onnxruntime"
    if kind == "safetensors" or images is not None or resolve_device(device).type != "cpu" or not onnxruntime_installed():
        return "torch"
    if model is None:
        _exists(str(path))
        model = _read_checkpoint(str(path)).model.name
    return "onnxruntime" if model in ONNXRUNTIME_FASTER else "torch"


def load(path: str, backend: str | None = None, device: str = "auto", images: int | None = None,
         intra_op_threads: int = 0) -> Loaded:
    """The network in ``path`` ready to run on ``backend`` (None: the file's default; auto: ``auto_backend`` for
    ``images`` images) on ``device``. ``intra_op_threads``: onnxruntime's threads per call (0: its default, one per
    physical core); PyTorch's are process-wide (``torch.set_num_threads``), set by the caller."""
    kind = kind_of(path)
    ckpt = None
    if backend == AUTO:
        if kind == "checkpoint" and resolve_device(device).type == "cpu":
            _exists(path)
            ckpt = _read_checkpoint(path)       # read once: it names the model, and it is what runs
        backend = auto_backend(path, device, images, ckpt.model.name if ckpt else None)
    backend = backend or default_backend(path)
    if backend not in BACKENDS:
        raise UsageError(f"--backend must be one of {', '.join((AUTO, *BACKENDS))}, got {backend!r}")
    if backend == "onnxruntime":
        return _onnxruntime(path, kind, device, ckpt, intra_op_threads)
    if kind == "onnx":
        raise UsageError(f"{path} is an ONNX file: run it with --backend onnxruntime (its default)")
    target = resolve_device(device)          # a bad --device is named before any file is read
    _exists(path)
    if kind == "safetensors":
        model, info = _from_safetensors(path)
    else:
        ckpt = ckpt or _read_checkpoint(path)
        model, info = ckpt.build_model(), ckpt.without_weights()
    return Loaded(onednn_linear(model).to(target, memory_format=torch.channels_last), info, "torch", target)


def onednn_linear(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every plain ``nn.Linear`` running on oneDNN's matmul (``alexnet.ops.linear.Linear``: same
    parameters and state dict, F.linear off the CPU): the zoo's own models have it already, torchvision's class
    (``alexnet_owt``) gains from it (docs/inference/ runs 3 -> 4: 153 -> 158 img/s at batch 64, 18.2 -> 16.0 ms at
    batch 1)."""
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.__class__ = Linear
    return model


def _exists(path: str) -> None:
    if not Path(path).is_file():
        raise UsageError(f"{path} does not exist" if not Path(path).exists() else f"{path} is not a file")


def _read_checkpoint(path: str) -> Checkpoint:
    if _is_torchscript(path):
        raise UsageError(f"{path} is a TorchScript export; predict and eval read the checkpoint it came from, "
                         "or an .onnx or .safetensors export (alexnet export --format onnx)")
    return Checkpoint.load(path, map_location="cpu")


def _is_torchscript(path: str) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _from_safetensors(path: str):
    state, props = read_safetensors(Path(path), label=path)
    info = read_metadata(props, path)
    model = info.model.build()
    load_checked(model, state, source=str(path))
    return model.eval(), info


def _providers(device: str) -> list[str]:
    """onnxruntime's execution providers for ``--device``: auto takes CUDA when this onnxruntime has it."""
    import onnxruntime
    available = onnxruntime.get_available_providers()
    name = device if device == "auto" else str(resolve_device(device))
    if name.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise UsageError(f"--device {device}: this onnxruntime has no CUDA provider ({', '.join(available)}); "
                             "use --device cpu, or install onnxruntime-gpu")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if name == "auto" and "CUDAExecutionProvider" in available and torch.cuda.is_available():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _onnxruntime(path: str, kind: str, device: str, ckpt: Checkpoint | None = None, threads: int = 0) -> Loaded:
    try:
        import onnxruntime
    except ImportError:
        raise UsageError("--backend onnxruntime needs the onnxruntime package: pip install 'alexnet[export]'") from None
    providers, options = _providers(device), onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    _exists(path)
    if kind == "onnx":
        try:
            session = onnxruntime.InferenceSession(path, options, providers=providers)
        except Exception as err:  # noqa: BLE001 - onnxruntime's errors (InvalidProtobuf, Fail, ...) share no base
            raise UsageError(f"{path} is not a readable ONNX file ({str(err).splitlines()[0]}); was it truncated? "
                             "Export the checkpoint again with alexnet export --format onnx") from None
        info = read_metadata(session.get_modelmeta().custom_metadata_map, path)
        check_graph(session, info, path)
    elif kind == "safetensors":
        raise UsageError(f"{path} holds weights only: run it with --backend torch, or export the checkpoint "
                         "to .onnx for onnxruntime")
    else:            # a checkpoint, exported in memory: the same network onnxruntime would run from a file
        ckpt = ckpt or _read_checkpoint(path)
        info = ckpt.without_weights()
        session = onnxruntime.InferenceSession(onnx_bytes(ckpt), options, providers=providers)
    return Loaded(OnnxModel(session), info, "onnxruntime", torch.device("cpu"))


def check_graph(session, info: Checkpoint, path: str) -> None:
    """The ONNX graph takes what its metadata says it takes and gives one logit per named class: a file whose
    metadata was edited or copied from another export is refused here, not by an IndexError mid-prediction."""
    prep, classes = info.preprocessing, len(info.classes)
    inputs, outputs = session.get_inputs(), session.get_outputs()
    expected = [prep.channels, prep.crop_size, prep.crop_size]
    shape = list(inputs[0].shape[1:]) if len(inputs) == 1 else None
    if shape is None or any(isinstance(d, int) and d != e for d, e in zip(shape, expected)) or len(shape) != 3:
        raise UsageError(f"{path}: its metadata says inputs of {tuple(expected)} but the graph takes "
                         f"{tuple(shape) if shape else [tuple(i.shape) for i in inputs]}; export the checkpoint again")
    width = outputs[0].shape[-1] if outputs and outputs[0].shape else None
    if isinstance(width, int) and width != classes:
        raise UsageError(f"{path}: its metadata names {classes} classes but the graph gives {width} logits; "
                         "export the checkpoint again")
