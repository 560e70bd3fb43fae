"""The `paper` recipe is `paper-literal` with PAPER_DEPARTURES applied: each departure a record (the field it sets,
its value, its source and why), and the derived recipe exactly the one written out by hand before (issue 22)."""
import dataclasses
import inspect
import re

from alexnet.models.alexnet import AlexNet
from alexnet.train.recipes import (PAPER_CONVENTIONS, PAPER_DEPARTURES, RECIPES, Departure, TrainConfig,
                                   apply_departures, resolve_config)

# RECIPES["paper"] as it was written out by hand before the departures became records
HAND_WRITTEN_PAPER = dict(
    model="alexnet_2012",
    model_kwargs={"init_bias": 0.1, "lrn": "cuda-convnet2", "norm_before_relu": [1], "init": "cuda-convnet2"},
    epochs=90, batch_size=128, lr=0.01, momentum=0.9, weight_decay=5e-4, decay_norm_and_bias=False,
    bias_lr_mult=2.0, schedule="plateau", clip_grad_norm=5.0, image_size=256, crop_size=224, flip=True, pca_std=0.1,
    normalization="mean_image", pixel_scale=255.0, ten_crop=True, amp="off", out="runs/paper")


def _flat(cfg: TrainConfig) -> dict:
    """The config's fields, with model_kwargs.KEY for each model argument."""
    values = cfg.to_dict()
    kwargs = values.pop("model_kwargs")
    return {**values, **{f"model_kwargs.{key}": value for key, value in kwargs.items()}}


def test_the_derived_paper_recipe_is_the_hand_written_one():
    assert RECIPES["paper"] == HAND_WRITTEN_PAPER
    assert list(RECIPES["paper"]["model_kwargs"]) == list(HAND_WRITTEN_PAPER["model_kwargs"])   # config.json's order
    expected = TrainConfig(**HAND_WRITTEN_PAPER, recipe="paper")
    assert resolve_config("paper").to_dict() == expected.to_dict()
    assert dict(apply_departures(RECIPES["paper-literal"], PAPER_DEPARTURES), out="runs/paper") == HAND_WRITTEN_PAPER
    assert PAPER_CONVENTIONS == {"lrn": "cuda-convnet2", "norm_before_relu": [1], "init": "cuda-convnet2"}


def test_applying_departures_leaves_the_base_and_the_records_alone():
    base = dict(RECIPES["paper-literal"], model_kwargs={})
    paper = apply_departures(base, PAPER_DEPARTURES)
    assert base == dict(RECIPES["paper-literal"], model_kwargs={}) and "bias_lr_mult" not in base
    paper["model_kwargs"]["norm_before_relu"].append(2)
    assert PAPER_DEPARTURES[5].value == [1] and RECIPES["paper"]["model_kwargs"]["norm_before_relu"] == [1]
    assert apply_departures(base, ()) == base


def test_each_departure_sets_a_real_field():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    model_args = set(inspect.signature(AlexNet.__init__).parameters) - {"self", "num_classes", "in_channels"}
    assert RECIPES["paper"]["model"] == "alexnet_2012"      # whose builder hands its keyword arguments to AlexNet
    for departure in PAPER_DEPARTURES:
        assert isinstance(departure, Departure)
        if departure.field.startswith("model_kwargs."):
            assert departure.field.removeprefix("model_kwargs.") in model_args, departure.field
        else:
            assert departure.field in fields, departure.field
    assert len({d.field for d in PAPER_DEPARTURES}) == len(PAPER_DEPARTURES) == 7


def test_literal_and_paper_differ_exactly_in_the_departures():
    literal, paper = _flat(resolve_config("paper-literal")), _flat(resolve_config("paper"))
    differ = {key for key in literal.keys() | paper.keys() if literal.get(key) != paper.get(key)}
    assert differ - {"recipe", "out"} == {d.field for d in PAPER_DEPARTURES}
    for departure in PAPER_DEPARTURES:
        assert paper[departure.field] == departure.value


def test_each_departure_names_a_source_and_a_why():
    for departure in PAPER_DEPARTURES:
        assert departure.what and departure.source and departure.why
        assert re.search(r"cuda-convnet2|Caffe|measured here", departure.source), departure.source
        assert re.search(r"the text \[\d(\.\d)?\]", departure.why), departure.why     # what the paper's text says
        text = str(departure)
        assert departure.setting in text and departure.source in text and departure.why in text
    settings = [d.setting for d in PAPER_DEPARTURES]
    assert settings == ["--bias-lr-mult 2", "--no-decay-norm-and-bias", "model_kwargs init_bias 0.1",
                        "--clip-grad-norm 5", "model_kwargs lrn 'cuda-convnet2'", "model_kwargs norm_before_relu [1]",
                        "model_kwargs init 'cuda-convnet2'"]
    measured = [d for d in PAPER_DEPARTURES if "docs/paper_recipe.md" in d.why]
    assert [d.field for d in measured] == ["model_kwargs.init_bias", "clip_grad_norm", "model_kwargs.lrn"]
    assert PAPER_DEPARTURES[3].source == "measured here"
