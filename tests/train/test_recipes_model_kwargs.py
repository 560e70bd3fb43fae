"""A recipe's model arguments are its own model's (quick's fc_width/dropout never reach resnet18 or caffenet), and a
run recorded before a config field existed resumes with that field's neutral value and its own model arguments."""
import dataclasses

import torch

from alexnet.checkpoint import Checkpoint
from alexnet.cli.main import main
from alexnet.train.recipes import NEUTRAL, RECIPES, resolve_config
from alexnet.train.run_folder import resume_config


def test_the_recipes_model_arguments_go_to_its_own_model_only():
    own = RECIPES["quick"]["model_kwargs"]
    assert own and resolve_config("quick").model_kwargs == own
    assert resolve_config("quick", model="alexnet_small", model_kwargs={"dropout": 0.5}).model_kwargs \
        == {**own, "dropout": 0.5}                                     # the user's go on top, key by key
    for model in ("resnet18", "caffenet", "lenet5"):
        assert resolve_config("quick", model=model).model_kwargs == {}
    assert resolve_config("quick", model="lenet5", model_kwargs={"init": "xavier"}).model_kwargs == {"init": "xavier"}
    paper = RECIPES["paper"]
    assert resolve_config("paper").model_kwargs == paper["model_kwargs"]
    assert resolve_config("paper", model="alexnet_bn").model_kwargs == {}


def test_another_model_trains_with_the_quick_recipe(fashion, tmp_path):
    """Before the rule, quick's fc_width reached torchvision's ResNet; now lenet5 under quick just trains."""
    assert main(["train", "--data", fashion, "--model", "lenet5", "--train-subset", "256", "--val-subset", "128",
                 "--epochs", "1", "--out", str(tmp_path / "r"), "--quiet"]) == 0
    assert Checkpoint.load(tmp_path / "r" / "best.pt").model.kwargs == {}


def test_a_run_from_before_a_field_existed_resumes_as_it_ran(fashion, tmp_path):
    out = tmp_path / "old"
    assert main(["train", "--data", fashion, "--train-subset", "256", "--val-subset", "128", "--epochs", "2",
                 "--max-steps", "3", "--batch-size", "64", "--ema", "0", "--model-kwargs",
                 '{"fc_width": 256, "dropout": 0.5}', "--out", str(out), "--quiet"]) == 0
    last = Checkpoint.load(out / "last.pt")                              # as an older version wrote it
    assert last.training["position"]["global_step"] == 3
    for key in NEUTRAL:
        last.config.pop(key)
    last.config["model_kwargs"] = {}
    last.model = dataclasses.replace(last.model, kwargs={})
    last.save(out / "last.pt")
    cfg = resume_config(out)
    assert all(getattr(cfg, key) == value for key, value in NEUTRAL.items())   # not the recipe's ema 0.999
    assert cfg.model_kwargs == {}                                               # not quick's fc_width 512
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 0
    done = Checkpoint.load(out / "last.pt")
    assert done.model.kwargs == {} and "ema" not in done.training
    assert done.state_dict["classifier.fc6.weight"].shape == torch.Size([256, 1024])


def test_init_brings_its_own_model_arguments_unless_the_command_line_names_some(fashion, tmp_path, tiny_checkpoint):
    """A checkpoint of alexnet_small with the model's defaults (fc 256, as the earlier quick recipe trained it)
    fine-tunes under today's quick recipe (fc 512): the run builds the network the weights came from."""
    source = tiny_checkpoint(tmp_path / "source.pt", classes=tuple("0123456789"))
    out = tmp_path / "tuned"
    assert main(["train", "--data", fashion, "--init", source, "--train-subset", "128", "--val-subset", "64",
                 "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    tuned = Checkpoint.load(out / "best.pt")
    assert tuned.model.kwargs == {} and tuned.config["model_kwargs"] == {}
    assert main(["train", "--data", fashion, "--init", source, "--model-kwargs", '{"fc_width": 512}', "--epochs", "1",
                 "--train-subset", "128", "--out", str(tmp_path / "asked"), "--quiet"]) == 2   # named: checked, refused
