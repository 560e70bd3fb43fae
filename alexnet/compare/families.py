"""Each model family's own training settings for `alexnet compare` (``--same-recipe`` gives every model the quick
recipe's instead).

A family's recipe is the ``quick`` recipe (data pipeline, epochs, seeds, one-cycle shape) with the optimizer
settings its own papers or reference code train it with, scaled to a short budget where they are step decays
over 60-160 epochs. Every entry says where its numbers come from and what was changed for short budgets; the
first family whose pattern matches a model's name is its recipe.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FamilyRecipe:
    family: str
    patterns: tuple[str, ...]
    overrides: dict = field(default_factory=dict)   # TrainConfig fields on top of the quick recipe
    source: str = ""                                 # where the settings come from, and what differs

    def describe(self) -> str:
        """``lr 0.1, momentum 0.9, ...``: the settings that differ from the quick recipe, in words."""
        shown = {k: v for k, v in self.overrides.items() if k != "model_kwargs"}
        words = [f"{k.replace('_', ' ')} {_value(v)}" for k, v in shown.items()]
        words += [f"{k} {_value(v)}" for k, v in self.overrides.get("model_kwargs", {}).items()]
        return ", ".join(words) if words else "the quick recipe"


def _value(v) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    return f"{v:g}" if isinstance(v, float) else str(v)


QUICK = FamilyRecipe("AlexNet", ("alexnet*", "caffenet*"), {},
                     "the quick recipe (docs/recipes.md), made for alexnet_small")
FAMILIES = (
    FamilyRecipe("LeNet", ("lenet*",),
                 dict(lr=0.1, momentum=0.9, nesterov=False, batch_size=64, weight_decay=0.0, label_smoothing=0.0,
                      schedule="constant", warmup_epochs=0.0, flip=False, padding=0, model_kwargs={"init": "xavier"}),
                 "d2l's LeNet (r0.17, ch. 6.6): sigmoid, Xavier init, no weight decay, no augmentation, a constant "
                 "step; d2l's plain SGD at lr 0.9 and batch 256 is here momentum 0.9 at lr 0.1 (about the same step "
                 "once momentum builds up) at batch 64, because a sigmoid LeNet needs hundreds of steps to leave "
                 "chance and short budgets give it tens"),
    FamilyRecipe("VGG", ("vgg*",),
                 dict(lr=0.01, momentum=0.9, nesterov=False, weight_decay=5e-4, label_smoothing=0.0),
                 "Simonyan & Zisserman 2014, sec. 3.1: SGD momentum 0.9, lr 0.01, weight decay 5e-4 (their batch 256 "
                 "and /10 steps over 74 epochs become the quick recipe's batch and one-cycle shape)"),
    FamilyRecipe("ResNet", ("resnet*",),
                 dict(lr=0.1, momentum=0.9, nesterov=False, weight_decay=1e-4, label_smoothing=0.0),
                 "He et al. 2015, sec. 4.2 (CIFAR-10): SGD momentum 0.9, lr 0.1, weight decay 1e-4, batch 128 (their "
                 "/10 steps at 32k and 48k iterations become the quick recipe's one-cycle shape)"),
    QUICK,
)


def family_recipe(model: str) -> FamilyRecipe:
    """The recipe of ``model``'s family (the quick recipe for a model of no listed family)."""
    for recipe in FAMILIES:
        if any(fnmatch.fnmatchcase(model, pattern) for pattern in recipe.patterns):
            return recipe
    return FamilyRecipe("other", ("*",), {}, "the quick recipe (no recipe of its own is listed for this model)")
