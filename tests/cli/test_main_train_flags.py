"""alexnet.cli.main: `alexnet train`'s flags are TrainConfig's fields: every field has one, booleans have --x/--no-x."""
import dataclasses

import pytest

from alexnet.cli.main import build_parser
from alexnet.train.recipes import TrainConfig


def _train_flags() -> set[str]:
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    return {s for action in train._actions for s in action.option_strings}


def test_every_config_field_is_a_flag():
    flags = _train_flags()
    for f in dataclasses.fields(TrainConfig):
        name = "--" + f.name.replace("_", "-")
        assert name in flags, name
        if f.type == "bool":
            assert "--no-" + f.name.replace("_", "-") in flags
        assert f.metadata.get("help"), f"{f.name} has no help text"


def test_flags_reach_the_config():
    args = build_parser().parse_args(["train", "--no-flip", "--nesterov", "--pixel-scale", "255", "--warmup-epochs",
                                      "0.5", "--normalization", "channel", "--diagnose", "--bias-lr-mult", "2"])
    assert (args.flip, args.nesterov, args.pixel_scale, args.warmup_epochs, args.normalization, args.diagnose,
            args.bias_lr_mult) == (False, True, 255.0, 0.5, "channel", 10, 2.0)
    assert args.epochs is None and args.lr is None           # unset flags leave the recipe's values


@pytest.mark.parametrize("command", [["eval", "x.pt"], ["predict", "x.pt", "y.png"]])
def test_ten_crop_means_the_same_in_eval_and_predict(command):
    parser = build_parser()
    assert parser.parse_args(command).ten_crop is None                     # as the checkpoint's recipe
    assert parser.parse_args(command + ["--ten-crop"]).ten_crop is True
    assert parser.parse_args(command + ["--no-ten-crop"]).ten_crop is False
