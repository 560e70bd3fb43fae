"""The `alexnet convert` sub-command: its flags and its handler (heavy modules imported only when it runs)."""
from __future__ import annotations

import argparse

from alexnet.util import checks


def add_parsers(sub) -> None:
    p = sub.add_parser("convert", help="published AlexNet weights (torchvision .pth, Caffe .caffemodel, .safetensors) "
                                       "into a checkpoint for eval and predict",
                       description="Write a checkpoint of published ImageNet weights, with the class names and the "
                                   "source's preprocessing inside: torchvision's AlexNet .pth -> alexnet_owt (resize "
                                   "256, centre 224, ImageNet mean/std); BVLC Caffe's bvlc_alexnet / "
                                   "bvlc_reference_caffenet .caffemodel -> alexnet_caffe / caffenet (0-255 pixels "
                                   "minus the mean, centre 227 of 256; conv1 turned from BGR to RGB); a .safetensors "
                                   "file of either.")
    p.add_argument("weights", metavar="WEIGHTS", help="the .pth, .caffemodel or .safetensors file")
    p.add_argument("--out", required=True, metavar="CKPT.pt", help="the checkpoint to write (atomically)")
    p.add_argument("--model", default=None, choices=("alexnet_owt", "alexnet_caffe", "caffenet"),
                   help="the network (default: alexnet_owt for torchvision's layout; for Caffe's, from the net's "
                        "name: AlexNet -> alexnet_caffe, CaffeNet -> caffenet)")
    p.add_argument("--mean", default=None, metavar="FILE|B,G,R",
                   help="Caffe only: the mean image (.binaryproto, e.g. imagenet_mean.binaryproto) or a per-channel "
                        "mean B,G,R in 0-255 (default: 104,117,123)")
    p.add_argument("--classes", default=None, metavar="FILE",
                   help="class names, one a line (default: ImageNet's 1000, when the net has 1000 outputs)")
    p.set_defaults(func=_convert)


def _convert(args: argparse.Namespace) -> int:
    checks.writable_file(args.out, "--out")
    from alexnet.interchange.caffe import convert
    done = convert(args.weights, args.out, model=args.model, mean=args.mean, classes=args.classes)
    rgb = ", conv1 turned from BGR to RGB" if done["bgr_to_rgb"] else ""
    print(f"{args.weights}: {done['format']} in {done['layout']}'s layout -> {done['model']}, "
          f"{done['num_classes']} classes{rgb}\npreprocessing: {done['preprocessing']}\nwrote {done['out']}")
    return 0
