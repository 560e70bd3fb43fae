"""The flags several sub-commands share, each declared here once: its help, choices, type and default.

A command's parser calls the helper; where commands differ (a default, what the flag is about) the helper takes
that as a parameter. ``alexnet train``'s flags are generated from TrainConfig's fields (``cli.main``), which are
their one home. A name shared by different things (``--out``: each command's own file or folder; ``--workers``:
decoding processes in ``prepare``, server processes in ``serve``; ``--model``) stays with its command.
"""
from __future__ import annotations

import argparse

SPLITS = ["train", "val", "test"]
BACKENDS = ("auto", "torch", "onnxruntime")
BACKEND_CHOSEN = "onnxruntime for an .onnx export, torch otherwise"
LAYER_HELP = ("a layer as `alexnet summary` names it (features.conv5, classifier.fc7) or its last part when "
              "unique (conv5, pool5, fc7, relu7); default last-hidden: the input of the final fully connected "
              "layer, which for the AlexNet family in eval mode is the post-ReLU fc7 the paper uses [6.1]")


# -- data: what to read and where from
def data(p: argparse.ArgumentParser, help: str, default: str | None = None) -> None:
    """``--data``: eval, compare, show neighbors and study each say what it is and what it defaults to."""
    p.add_argument("--data", default=default, help=help)


def data_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None, help="folder holding builtin datasets (searched first)")


def split(p: argparse.ArgumentParser, default: str = "test") -> None:
    p.add_argument("--split", default=default, choices=SPLITS, help=f"(default: {default})")


def layer(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layer", default=None, help=LAYER_HELP)


def input_size(p: argparse.ArgumentParser, help: str, metavar: str | None = None) -> None:
    """``--input-size``: summary's one model, compare's every model."""
    p.add_argument("--input-size", type=int, default=None, metavar=metavar, help=help)


# -- running a network: where, on what, how many at once
def device(p: argparse.ArgumentParser, default: str = "auto") -> None:
    p.add_argument("--device", default=default, help="auto, cpu, cuda or cuda:N")


def backend(p: argparse.ArgumentParser, default: str | None = None, auto: str = BACKEND_CHOSEN) -> None:
    """``--backend``; ``auto`` says what ``--backend auto`` picks (serve's picks onnxruntime for more)."""
    chosen = f"auto: {auto}" if default == "auto" else BACKEND_CHOSEN
    p.add_argument("--backend", choices=BACKENDS, default=default, help=f"what runs the network (default: {chosen})")


def ten_crop(p: argparse.ArgumentParser) -> None:
    """Tri-state: None (the flag absent) means as the checkpoint's recipe says."""
    p.add_argument("--ten-crop", action=argparse.BooleanOptionalAction, default=None,
                   help="average the softmax over the paper's 10 views [4] (default: as the checkpoint's recipe)")


def flip_view(p: argparse.ArgumentParser) -> None:
    """Tri-state, as ``--ten-crop``: None (the flag absent) means as the checkpoint's recipe says."""
    p.add_argument("--flip-view", action=argparse.BooleanOptionalAction, default=None,
                   help="average the centre view's softmax with its mirror image's (default: as the checkpoint's "
                        "recipe: a run trained with --flip-view does)")


def batch_size(p: argparse.ArgumentParser, default: int | None = 256, help: str | None = None) -> None:
    """``--batch-size``: images per batch of an evaluation (256), or compare's training batch (its own help)."""
    p.add_argument("--batch-size", type=int, default=default, help=help or f"images per batch (default: {default})")


def topk(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--topk", type=int, default=5, metavar="K", help=help)


def json_output(p: argparse.ArgumentParser, what: str) -> None:
    """``--json FILE``: eval's report, predict's predictions."""
    p.add_argument("--json", metavar="FILE", help=f"write the {what} as JSON (- for stdout)")


# -- runs: how long and how many times
def epochs(p: argparse.ArgumentParser, default: int | None, shown: str | None = None) -> None:
    """``--epochs`` per run; ``shown``: the help's words for the default when it is not a number."""
    p.add_argument("--epochs", type=int, default=default,
                   help=f"epochs per run (default: {default if shown is None else shown})")


def seeds(p: argparse.ArgumentParser, help: str, default: int | None = None, metavar: str | None = None) -> None:
    """``--seeds``: how many seeded runs of each thing (compare: each model; study: each arm)."""
    p.add_argument("--seeds", type=int, default=default, metavar=metavar, help=help)


def seed(p: argparse.ArgumentParser, of: str) -> None:
    """``--seed``: prepare's held-out order, show neighbors' query draw."""
    p.add_argument("--seed", type=int, default=0, help=f"seed of {of}, >= 0 (default: 0)")
