"""``alexnet export``: a checkpoint as ONNX, TorchScript or safetensors, carrying what predict and eval need.

Every file carries the same metadata, string to string (ONNX ``metadata_props``, TorchScript extra files,
the safetensors header): ``alexnet.format`` (the marker), ``alexnet.model`` (the model spec), ``alexnet.classes``,
``alexnet.preprocessing`` (``Preprocessing.to_dict()``), ``alexnet.config`` (the run config: the data set and
the recipe's test-time views), all JSON. The mean image is stored exactly, as base64 of its float32 bytes
(1 MB for 256x256x3, against ~4 MB as decimal JSON, and bit-identical: the file alone reproduces the
checkpoint's preprocessing, so its top-k). The network's input is the preprocessed crop, float32
(batch, C, H, W); the batch axis is dynamic, the sides are the checkpoint's.

ONNX goes through PyTorch's TorchScript-based exporter (``dynamo=False``: the dynamo one needs onnxscript),
opset 17, with our LRN as ONNX's own ``LRN`` (alpha times size: ONNX divides it by size, like torch and Caffe)
and torchvision's adaptive pool made exportable at any input size (``alexnet.ops.exportable``). TorchScript is
``torch.jit.trace`` of the unfused model. Before a file is put in place it is read back and run (onnxruntime,
``torch.jit.load``, ``safetensors``) against the eager model at batch 1 and 2: a file that disagrees is never
written.
"""
from __future__ import annotations

import base64
import errno
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from alexnet.checkpoint import Checkpoint, ModelSpec
from alexnet.data.preprocessing import Preprocessing
from alexnet.errors import Failure, UsageError
from alexnet.ops.exportable import onnx_ready
from alexnet.util.atomic import atomic_path

MARKER = "alexnet-export-v1"
FORMATS = {"onnx": (".onnx",), "torchscript": (".pt", ".pth", ".ts"), "safetensors": (".safetensors",)}
DEFAULT_SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "safetensors": ".safetensors"}
KEYS = ("alexnet.format", "alexnet.model", "alexnet.classes", "alexnet.preprocessing", "alexnet.config")
OPSET = 17
INPUT, OUTPUT = "input", "logits"
CHECK_BATCHES = (1, 2)       # the file is run at both before it is put in place: the batch axis is dynamic


class ExportError(Failure):
    """The exporter failed, or the exported file does not reproduce the checkpoint; nothing was written (exit 1)."""

    def report(self) -> str:
        said = "nothing was written" in str(self)      # a full disk's NoSpace (alexnet.util.atomic) says it already
        return f"error: {self}" if said else f"error: {self}; nothing was written"


# ---- the metadata --------------------------------------------------------------------------------------------
def metadata(ckpt: Checkpoint) -> dict[str, str]:
    """The strings every exported file carries (see the module docstring)."""
    data = ckpt.preprocessing.to_dict()
    mean = np.ascontiguousarray(data["stats"]["mean_image"], dtype="<f4")
    data["stats"]["mean_image"] = {"dtype": "float32", "shape": list(mean.shape),
                                   "base64": base64.b64encode(mean.tobytes()).decode("ascii")}
    return {"alexnet.format": MARKER, "alexnet.model": json.dumps(ckpt.model.to_dict()),
            "alexnet.classes": json.dumps(ckpt.classes), "alexnet.preprocessing": json.dumps(data),
            "alexnet.config": json.dumps(ckpt.config),
            "alexnet.input": f"{INPUT}: float32 (batch, C, H, W), images preprocessed as alexnet.preprocessing says "
                             f"(alexnet.data.preprocessing.Preprocessing.from_dict(...).eval_transform()); {OUTPUT}: "
                             "(batch, classes)"}


def read_metadata(props: dict[str, str | bytes], path: str | os.PathLike) -> Checkpoint:
    """The checkpoint (without weights) an exported file's metadata describes (values as str, or as bytes:
    ``torch.jit.load``'s extra files)."""
    props = {key: value.decode() if isinstance(value, bytes) else value for key, value in props.items()}
    if props.get("alexnet.format") != MARKER:
        raise UsageError(f"{path} carries no alexnet metadata ('alexnet.format': {MARKER!r}); "
                         "give a file written by alexnet export, or the checkpoint itself")
    try:
        model, classes, data, config = (json.loads(props[f"alexnet.{key}"])
                                        for key in ("model", "classes", "preprocessing", "config"))
        mean = data["stats"]["mean_image"]
        data["stats"]["mean_image"] = np.frombuffer(base64.b64decode(mean["base64"]), dtype="<f4").reshape(
            mean["shape"]).astype(np.float32)
        return Checkpoint(ModelSpec.from_dict(model), list(classes), dict(config), Preprocessing.from_dict(data))
    except (KeyError, TypeError, ValueError) as err:
        raise UsageError(f"{path}: its alexnet metadata is incomplete or malformed ({type(err).__name__}: {err}); "
                         "export the checkpoint again") from None


def example_batch(ckpt: Checkpoint, batch: int, seed: int = 0) -> torch.Tensor:
    """Random images of the stored size, preprocessed as the checkpoint's evaluation does: realistic inputs."""
    prep = ckpt.preprocessing
    height, width = prep.image_size
    images = torch.randint(0, 256, (batch, prep.channels, height, width), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(seed))
    return prep.eval_transform()(images).contiguous()


def onnx_bytes(ckpt: Checkpoint, props: dict[str, str] | None = None) -> bytes:
    """The checkpoint's network as an ONNX model (batch axis dynamic), with ``props`` as metadata_props."""
    return to_onnx(ckpt.build_model(), example_batch(ckpt, 1), props)


def to_onnx(model: torch.nn.Module, example: torch.Tensor, props: dict[str, str] | None = None) -> bytes:
    """``model`` (changed: see ``onnx_ready``) as ONNX bytes for inputs shaped like ``example``, any batch."""
    try:
        import onnx
    except ImportError:
        raise UsageError("ONNX export needs the onnx package: pip install 'alexnet[export]'") from None
    name = getattr(model, "model_name", type(model).__name__)
    model = onnx_ready(model.eval(), example)
    buffer = io.BytesIO()
    with warnings.catch_warnings():   # the legacy exporter's deprecation note; shape checks traced as constants
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=OPSET, input_names=[INPUT],
                              output_names=[OUTPUT], dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
        except Exception as err:  # noqa: BLE001 - torch.onnx raises many kinds; nothing was written
            raise ExportError(f"{name} cannot be exported to ONNX ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}); try --format torchscript") from None
    proto = onnx.load_model_from_string(buffer.getvalue())
    for key, value in (props or {}).items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = f"alexnet {name}: see the alexnet.* metadata"
    serialized = proto.SerializeToString()
    onnx.checker.check_model(serialized)
    return serialized


# ---- writing and checking ------------------------------------------------------------------------------------
def _compare(name: str, run, ckpt: Checkpoint) -> list[tuple[int, float]]:
    """Max |logit difference| of ``run`` (a batch -> logits callable) against the eager model, per batch size;
    an ExportError when one is above 1e-4 times the logits' scale."""
    eager = ckpt.build_model()
    diffs = []
    for batch in CHECK_BATCHES:
        x = example_batch(ckpt, batch, seed=batch)
        with torch.no_grad():
            ref = eager(x.contiguous(memory_format=torch.channels_last))
        got = torch.as_tensor(run(x))
        diff = (got - ref).abs().max().item() if got.shape == ref.shape else float("inf")
        if not diff <= 1e-4 * max(1.0, ref.abs().max().item()):
            raise ExportError(f"the {name} file gives other logits than the checkpoint at batch {batch} "
                              f"(max |difference| {diff:.3g}, shapes {tuple(got.shape)} and {tuple(ref.shape)})")
        diffs.append((batch, diff))
    return diffs


def _check_onnx(tmp: Path, ckpt: Checkpoint) -> str:
    try:
        import onnxruntime
    except ImportError:
        return "not run with onnxruntime (pip install 'alexnet[export]' to check exports)"
    session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    diffs = _compare("ONNX", lambda x: session.run(None, {INPUT: x.numpy()})[0], ckpt)
    return "onnxruntime vs eager: " + ", ".join(f"max |logit diff| {d:.2g} at batch {b}" for b, d in diffs)


def to_torchscript(model: torch.nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` of ``model`` (eval, unfused: LRN and fc as plain operations), any batch size."""
    model.eval().fuse = False
    with warnings.catch_warnings():   # shape checks traced as constants; torch.jit's deprecation notes
        warnings.simplefilter("ignore")
        return torch.jit.trace(model, example, check_trace=False)


def _write_torchscript(tmp: Path, ckpt: Checkpoint, props: dict[str, str]) -> str:
    traced = to_torchscript(ckpt.build_model(), example_batch(ckpt, 1))
    with warnings.catch_warnings():   # torch.jit's deprecation notes
        warnings.simplefilter("ignore")
        buffer = io.BytesIO()        # (saved through a buffer: the archive's folder is not named after tmp)
        torch.jit.save(traced, buffer, _extra_files=props)
        tmp.write_bytes(buffer.getvalue())
        loaded = torch.jit.load(str(tmp), map_location="cpu")
    diffs = _compare("TorchScript", lambda x: loaded(x).detach(), ckpt)
    return "torch.jit.load vs eager: " + ", ".join(f"max |logit diff| {d:.2g} at batch {b}" for b, d in diffs)


def _write_safetensors(tmp: Path, ckpt: Checkpoint, props: dict[str, str]) -> str:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import save_file
    tensors = {key: value.detach().contiguous() for key, value in ckpt.state_dict.items()}
    try:
        save_file(tensors, str(tmp), metadata=props)
    except SafetensorError as err:    # its own error, no errno: a full disk made an OSError for atomic_path's NoSpace
        for code in (errno.ENOSPC, errno.EDQUOT):
            if f"(os error {code})" in str(err) or os.strerror(code).lower() in str(err).lower():
                raise OSError(code, os.strerror(code), str(tmp)) from err
        raise ExportError(f"safetensors could not write the file ({err})") from None
    with safe_open(str(tmp), framework="pt") as f:
        if f.metadata() != props or any(not torch.equal(f.get_tensor(k), v) for k, v in tensors.items()):
            raise ExportError("the safetensors file read back differs from the checkpoint")
    return f"{len(tensors)} tensors read back identical"


def default_out(checkpoint: str, fmt: str) -> str:
    path = Path(checkpoint)
    return str(path.with_name(path.stem + DEFAULT_SUFFIX[fmt]))


def check_out(checkpoint: str, fmt: str, out: str) -> None:
    """``out`` has the format's suffix (predict and eval pick the backend by it) and is not the checkpoint."""
    if not out.lower().endswith(FORMATS[fmt]):
        raise UsageError(f"--out {out}: a {fmt} file must end in {' or '.join(FORMATS[fmt])} "
                         "(predict and eval recognise exports by the suffix)")
    if os.path.exists(out) and os.path.exists(checkpoint) and os.path.samefile(out, checkpoint):
        raise UsageError(f"--out {out} is the checkpoint itself; give another file name")


def export_checkpoint(checkpoint: str, fmt: str, out: str) -> dict:
    """Write ``checkpoint`` as ``fmt`` to ``out`` (atomically, after checking it); returns what was done."""
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if Path(checkpoint).suffix.lower() in (".onnx", ".safetensors"):
        raise UsageError(f"{checkpoint} is already an export; give the .pt checkpoint it was written from")
    ckpt = Checkpoint.load(checkpoint)
    props = metadata(ckpt)
    with atomic_path(out, durable=True, label=f"--out {out}") as tmp:
        if fmt == "onnx":
            tmp.write_bytes(onnx_bytes(ckpt, props))
            check = _check_onnx(tmp, ckpt)
        elif fmt == "torchscript":
            check = _write_torchscript(tmp, ckpt, props)
        else:
            check = _write_safetensors(tmp, ckpt, props)
    side = ckpt.preprocessing.crop_size
    return {"out": out, "format": fmt, "bytes": os.path.getsize(out), "model": ckpt.model.name,
            "input": [None, ckpt.model.in_channels, side, side], "classes": len(ckpt.classes), "check": check}
