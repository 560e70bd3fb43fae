"""The `alexnet export` sub-command: its flags and its handler (torch and onnx imported only when it runs)."""
from __future__ import annotations

import argparse

from alexnet.util import checks

FORMATS = ("onnx", "torchscript", "safetensors")


def add_parsers(sub) -> None:
    p = sub.add_parser("export", help="a checkpoint as ONNX, TorchScript or safetensors, with its classes and "
                                      "preprocessing inside",
                       description="Write CKPT as one file that carries the class names, the preprocessing and the "
                                   "model spec (ONNX metadata_props, TorchScript extra files, the safetensors header), "
                                   "with a dynamic batch axis. The file is read back and run against the checkpoint "
                                   "before it is put in place; predict and eval take .onnx and .safetensors files.")
    p.add_argument("checkpoint", metavar="CKPT", help="a checkpoint written by alexnet train (best.pt, last.pt)")
    p.add_argument("--format", required=True, choices=FORMATS, help="onnx (opset 17, LRN as ONNX's LRN), "
                   "torchscript (torch.jit.trace) or safetensors (the weights and the metadata)")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="the file to write (default: next to CKPT: NAME.onnx, NAME.torchscript.pt, NAME.safetensors)")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from alexnet.interchange.export import check_out, default_out, export_checkpoint
    out = args.out or default_out(args.checkpoint, args.format)
    checks.writable_file(out, "--out")
    check_out(args.checkpoint, args.format, out)
    done = export_checkpoint(args.checkpoint, args.format, out)     # ExportError, NoSpace: exit 1 from main()
    shape = "x".join("batch" if d is None else str(d) for d in done["input"])
    print(f"wrote {done['out']} ({done['format']}, {done['bytes'] / 1e6:.1f} MB): {done['model']}, input float32 "
          f"{shape}, {done['classes']} classes; {done['check']}")
    return 0
