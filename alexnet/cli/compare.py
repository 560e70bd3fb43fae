"""The `alexnet compare` sub-command: its flags and its handler (heavy modules imported only when it runs)."""
from __future__ import annotations

import argparse
import shlex
import sys

from alexnet.cli import flags
from alexnet.util import checks

EXAMPLE = "lenet5,alexnet_small,vgg11_bn,resnet18"


def add_parsers(sub) -> None:
    p = sub.add_parser("compare", help="train several models on one data set with one budget; table, JSON, plot",
                       description="Train each model with one budget (the same epochs, data, seeds) and its family's "
                                   "own optimizer settings (--same-recipe: the quick recipe's for all) at one input "
                                   "size, score it on the test split, and write DIR/compare.json, DIR/compare.md and "
                                   "DIR/compare.png.")
    p.add_argument("models", nargs="+", metavar="MODELS",
                   help=f"registered models, comma- or space-separated, e.g. {EXAMPLE}")
    flags.data(p, "the data set, as for alexnet train (default: fashion-mnist)", default="fashion-mnist")
    flags.data_root(p)
    flags.epochs(p, 2)
    flags.seeds(p, "seeds 0..S-1, one run per model and seed; the table gives the mean (± std when S > 1) "
                "(default: 1)", default=1, metavar="S")
    p.add_argument("--train-subset", type=int, default=0, metavar="N",
                   help="train on the first N training images only (default: all)")
    p.add_argument("--val-subset", type=int, default=0, metavar="N",
                   help="validate each epoch (best.pt, the lr plateau) on the first N held-out images (default: all)")
    flags.input_size(p, "one input side for every model (default: the smallest every model accepts, from the "
                     "data's own size up; e.g. 32 for Fashion-MNIST's 28 px with VGG or ResNet)", metavar="PX")
    flags.batch_size(p, None, help="batch size for every model (default: each model's recipe's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate for every model (default: each model's "
                   "recipe's)")
    p.add_argument("--same-recipe", action="store_true",
                   help="train every model with the quick recipe's settings (only the model differs) instead of its "
                        "family's own (LeNet: d2l's; VGG, ResNet: their papers'; see docs/compare.md)")
    flags.device(p)
    p.add_argument("--out", default="runs/compare", metavar="DIR",
                   help="folder for compare.json/.md/.png and the runs (DIR/runs/MODEL-seedK) (default: runs/compare)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    p.set_defaults(func=_compare)


def _compare(args: argparse.Namespace) -> int:
    from alexnet.compare.runner import Budget, compare, parse_models
    models = parse_models(args.models)
    checks.at_least(args.seeds, 1, "--seeds")
    checks.at_least(args.epochs, 1, "--epochs")
    checks.writable_folder(args.out, "--out")
    if args.input_size is not None:
        checks.input_size(args.input_size, 3)
    budget = Budget(epochs=args.epochs, seeds=args.seeds, train_subset=args.train_subset,
                    val_subset=args.val_subset, batch_size=args.batch_size, lr=args.lr, same_recipe=args.same_recipe)
    command = shlex.join(["alexnet", "compare", *_argv_after_command(args)])
    # an interrupt or a diverged run ends here with its exit code, which main() applies (alexnet.errors)
    result = compare(models, data=args.data, data_root=args.data_root, out=args.out, budget=budget,
                     input_size=args.input_size, device=args.device, quiet=args.quiet, command=command,
                     log=lambda text: print(text, file=sys.stderr, flush=True))
    from alexnet.compare.report import headline, markdown_table, write_outputs
    paths = write_outputs(result, args.out)
    print(f"{headline(result)}\n\n{markdown_table(result)}\n")
    print(f"wrote {paths['json']}, {paths['md']}, {paths['png']}; runs in {args.out}/runs")
    return 0


def _argv_after_command(args: argparse.Namespace) -> list[str]:
    """The command line (for compare.json), rebuilt from the parsed flags: those left at their default omitted."""
    words = [",".join(args.models)]
    for flag, value, default in (("--data", args.data, "fashion-mnist"), ("--epochs", args.epochs, None),
                                 ("--seeds", args.seeds, None), ("--train-subset", args.train_subset, 0),
                                 ("--val-subset", args.val_subset, 0),
                                 ("--input-size", args.input_size, None), ("--batch-size", args.batch_size, None),
                                 ("--lr", args.lr, None), ("--device", args.device, "auto"), ("--out", args.out, None),
                                 ("--same-recipe", args.same_recipe or None, None)):
        if value is not None and value != default:
            words += [flag] if value is True else [flag, str(value)]
    return words
