"""The command line: argparse sub-commands, parsing and dispatch only.

Exit codes: 0 ok, 2 bad usage or bad input, 1 runtime failure, 130/143 interrupted.
"""
from __future__ import annotations

import argparse
import sys

from alexnet.errors import UsageError


def _models(args: argparse.Namespace) -> int:
    from alexnet.summary import models_text
    print(models_text())
    return 0


def _summary(args: argparse.Namespace) -> int:
    from alexnet.summary import summary_text
    print(summary_text(args.model, input_size=args.input_size, in_channels=args.in_channels,
                       num_classes=args.num_classes))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alexnet", description="AlexNet (NIPS 2012), reproduced faithfully.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list registered models with parameters and input size")
    p.set_defaults(func=_models)

    p = sub.add_parser("summary", help="layer-by-layer table: output shapes, parameters, multiply-adds")
    p.add_argument("model")
    p.add_argument("--input-size", type=int, default=None, help="input side in pixels (default: the model's)")
    p.add_argument("--in-channels", type=int, default=None, help="input channels (default: the model's)")
    p.add_argument("--num-classes", type=int, default=1000)
    p.set_defaults(func=_summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as err:
        print(f"alexnet {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
