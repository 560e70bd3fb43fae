"""``alexnet features`` and ``alexnet show kernels|neighbors``: parsing only; the work is in alexnet.inspection.features
and alexnet.inspection.show, imported when a command runs (``alexnet --help`` stays fast)."""
from __future__ import annotations

import argparse
import sys

from alexnet.cli import flags
from alexnet.util import checks
from alexnet.errors import UsageError


def _features(args: argparse.Namespace) -> int:
    from alexnet.inspection.features import checkpoint_features, default_out, save_features
    from alexnet.train.parts import resolve_device
    checks.at_least(args.batch_size, 1, "--batch-size")
    out = args.out or default_out(args.checkpoint, args.layer or "last-hidden", args.split)
    checks.writable_file(out, "--out")      # before the work: finished features are not thrown away
    result = checkpoint_features(args.checkpoint, args.data, args.split, args.layer, batch_size=args.batch_size,
                                 device=resolve_device(args.device), data_root=args.data_root)
    save_features(result, out)
    n, dim = result["features"].shape
    print(f"{out}: {n} x {dim} features of {result['layer']} ({result['data']}, {args.split}, "
          f"{len(result['classes'])} classes)")
    return 0


def _kernels(args: argparse.Namespace) -> int:
    from alexnet.inspection.show import show_kernels
    if args.out is not None:
        checks.figure_file(args.out, "--out")
    shown = show_kernels(args.checkpoint, args.out)
    print(f"{shown['png']}: {shown['model']} " + " | ".join(f"{label}" for label, _ in shown["blocks"]))
    return 0


def _neighbors(args: argparse.Namespace) -> int:
    from alexnet.inspection.show import MAX_K, MAX_QUERIES, show_neighbors
    from alexnet.train.parts import resolve_device
    checks.at_least(args.queries, 1, "--queries")
    checks.at_most(args.queries, MAX_QUERIES, "--queries", " (one row of the figure each)")
    checks.at_least(args.k, 1, "--k")
    checks.at_most(args.k, MAX_K, "--k", " (one column of the figure each)")
    checks.at_least(args.seed, 0, "--seed")
    checks.at_least(args.batch_size, 1, "--batch-size")
    if args.out is not None:
        checks.figure_file(args.out, "--out")
    info = show_neighbors(args.checkpoint, args.data, args.split, queries=args.queries, k=args.k, layer=args.layer,
                          out=args.out, seed=args.seed, batch_size=args.batch_size,
                          device=resolve_device(args.device),
                          data_root=args.data_root)
    print(f"{info['png']}: {len(info['queries'])} {args.split} images and their {args.k} nearest training images "
          f"in {info['layer']}; {info['same_class']:.0%} of the neighbours share the query's class")
    return 0


def _show_usage(parser: argparse.ArgumentParser):
    def handler(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        raise UsageError("choose what to show: kernels or neighbors")
    return handler


def _data_flags(p: argparse.ArgumentParser, split: str) -> None:
    flags.split(p, split)
    flags.layer(p)
    flags.data_root(p)
    flags.batch_size(p)
    flags.device(p)


def add_parsers(sub) -> None:
    """The ``features`` and ``show`` sub-commands, on the main parser's sub-parsers."""
    p = sub.add_parser("features", help="activations of a layer for every image of a split, as an npz file")
    p.add_argument("checkpoint")
    p.add_argument("data", nargs="?", metavar="DATA", help="data to run (default: the checkpoint's training data)")
    _data_flags(p, "test")
    p.add_argument("--out", metavar="NPZ", help="features (N x D float32), labels, classes, indices "
                   "(default: features_<layer>_<split>.npz next to the checkpoint)")
    p.set_defaults(func=_features)

    show = sub.add_parser("show", help="what a network learned: conv1's kernels (Fig. 3), nearest neighbours (Fig. 4)")
    show.set_defaults(func=_show_usage(show))
    figures = show.add_subparsers(dest="figure", metavar="FIGURE")
    p = figures.add_parser("kernels", help="the first conv layer's kernels as an image grid (the paper's Fig. 3)")
    p.add_argument("checkpoint")
    p.add_argument("--out", metavar="IMAGE", help="image to write, in the format its suffix names: .png, .jpg, "
                   ".pdf, .svg, .tif or .webp (default: kernels.png next to the checkpoint)")
    p.set_defaults(func=_kernels)

    p = figures.add_parser("neighbors", help="query images and the training images nearest in feature space "
                           "(the paper's Fig. 4)")
    p.add_argument("checkpoint")
    flags.data(p, "data of the queries and the training images (default: the checkpoint's)")
    _data_flags(p, "test")
    p.add_argument("--queries", type=int, default=5, help="query images, drawn with --seed, at most 100 and at "
                   "most the split's size (default: 5)")
    p.add_argument("--k", type=int, default=6, help="neighbours per query, at most 50 (default: 6, as in Fig. 4)")
    flags.seed(p, "the query draw")
    p.add_argument("--out", metavar="IMAGE", help="image to write, in the format its suffix names (as for show "
                   "kernels; default: neighbors_<split>.png next to the checkpoint)")
    p.set_defaults(func=_neighbors)
