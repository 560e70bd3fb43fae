"""The flags several sub-commands share have one home, alexnet/cli/flags.py, and each command keeps them as before:
the same commands have each flag, with the same default (train's come from TrainConfig's fields: default None)."""
from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

from alexnet.cli.main import build_parser

CLI = Path(__file__).resolve().parents[2] / "alexnet" / "cli"

# flag -> {sub-command: default}, as the commands had them before flags.py
SHARED = {
    "--data": {"train": None, "eval": None, "compare": "fashion-mnist", "show neighbors": None, "study": None},
    "--data-root": {"prepare": None, "train": None, "eval": None, "compare": None, "features": None,
                    "show neighbors": None},
    "--split": {"eval": "test", "features": "test", "show neighbors": "test"},
    "--layer": {"features": None, "show neighbors": None},
    "--input-size": {"summary": None, "compare": None},
    "--device": {"train": None, "eval": "auto", "predict": "auto", "compare": "auto", "features": "auto",
                 "show neighbors": "auto", "serve": "auto"},
    "--backend": {"eval": None, "predict": "auto", "serve": "auto"},
    "--ten-crop": {"train": None, "eval": None, "predict": None, "serve": None},
    "--batch-size": {"train": None, "eval": 256, "compare": None, "features": 256, "show neighbors": 256},
    "--topk": {"predict": 5, "serve": 5},
    "--json": {"eval": None, "predict": None},
    "--epochs": {"train": None, "compare": 2, "study": None},
    "--seeds": {"compare": 1, "study": None},
    "--seed": {"prepare": 0, "train": None, "show neighbors": 0},
}
TYPES = {"--input-size": int, "--batch-size": int, "--topk": int, "--epochs": int, "--seeds": int, "--seed": int}
CHOICES = {"--split": ["train", "val", "test"], "--backend": ("auto", "torch", "onnxruntime")}


def sub_commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every sub-command's parser by its words ("show neighbors"), nested ones included."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                words = f"{prefix} {name}".strip()
                found[words] = sub
                found.update(sub_commands(sub, words))
    return found


def option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in parser._actions if flag in a.option_strings), None)


def add_argument_literals(path: Path) -> set[str]:
    """The option strings written as literals in ``add_argument`` calls of one module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
            found.update(a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
    return found


@pytest.mark.parametrize("path", sorted(p for p in CLI.glob("*.py") if p.name != "flags.py"), ids=lambda p: p.name)
def test_shared_flags_are_declared_only_in_flags(path):
    assert add_argument_literals(path) & set(SHARED) == set()


def test_flags_declares_every_shared_flag():
    assert set(SHARED) <= add_argument_literals(CLI / "flags.py")


@pytest.mark.parametrize("flag", sorted(SHARED))
def test_each_command_keeps_its_shared_flags_and_defaults(flag):
    commands = sub_commands(build_parser())
    have = {name: option(p, flag).default for name, p in commands.items() if option(p, flag) is not None}
    assert have == SHARED[flag]
    for name, p in commands.items():
        action = option(p, flag)
        if action is None or name == "train":      # train's: TrainConfig's fields (tests/cli/test_main_train_flags.py)
            continue
        assert action.help, f"{name} {flag} has no help"
        if flag in TYPES:
            assert action.type is TYPES[flag], (name, flag)
        if flag in CHOICES:
            assert list(action.choices) == list(CHOICES[flag]), (name, flag)


@pytest.mark.parametrize("command", [["eval", "x.pt"], ["predict", "x.pt", "y.png"], ["serve", "x.pt"]])
def test_ten_crop_is_tri_state_wherever_it_is_shared(command):
    parser = build_parser()
    assert [parser.parse_args(command + extra).ten_crop for extra in ([], ["--ten-crop"], ["--no-ten-crop"])] \
        == [None, True, False]


def test_backend_help_says_what_auto_picks():
    commands = sub_commands(build_parser())
    helps = {name: option(commands[name], "--backend").help for name in ("eval", "predict", "serve")}
    assert "auto:" not in helps["eval"] and "auto:" in helps["predict"] and "alexnet_owt" in helps["serve"]
