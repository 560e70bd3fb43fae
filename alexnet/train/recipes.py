"""Training recipes: named bundles of defaults for one flat config. Every flag overrides them.

The resolved config is written to ``config.json`` and stored in every checkpoint.

``paper-literal`` is the paper's text [4, 5] word for word. ``paper`` is the paper as it trains: the text,
except where Krizhevsky's own code (cuda-convnet2's ImageNet configs) says what he ran, Caffe's bias 0.1, and
gradient clipping, which the measurement showed is needed (``PAPER_DEPARTURES``: each a ``Departure`` record with
the field it sets, its value, its source and why; ``paper`` is ``paper-literal`` with them applied). With the
literal init the first SGD step moves fc8 by ~20% of its norm and the network falls back to predicting the class
frequencies (loss ln K); bias 0.1 stops this, and clipping the gradients' global norm at 5 steadies the runs that
learned and then collapsed. The measurements: docs/paper_recipe.md. ``quick``: docs/recipes.md.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import re
from dataclasses import dataclass, field

from alexnet.errors import UsageError


def _opt(default, help: str, **argparse_extra):
    """A config field whose ``help`` (and any argparse extras) the command line's train flag is built from."""
    kw = {"default_factory": default} if callable(default) else {"default": default}
    return field(**kw, metadata={"help": help, **argparse_extra})


@dataclass
class TrainConfig:
    """One flat training config. Every field is a ``alexnet train`` flag (``--batch-size`` for batch_size)."""
    recipe: str = _opt("quick", "named defaults for every other field", choices=("quick", "paper", "paper-literal", "d2l"))
    data: str = _opt("fashion-mnist", "fashion-mnist, mnist, a class-folder tree, a CSV file, an idx or CIFAR "
                     "folder, or a cache made by alexnet prepare")
    data_root: str | None = _opt(None, "folder holding builtin datasets (searched first)")
    model: str = _opt("alexnet_small", "a registered model (see alexnet models)")
    model_kwargs: dict = _opt(dict, "JSON object of model arguments on top of the recipe's (which are for the recipe's "
                              "own model only), e.g. '{\"norm\": \"lrn\"}'")
    out: str = _opt("runs/quick", "run folder (default: runs/<recipe>)")
    epochs: int = _opt(10, "epochs to train")
    batch_size: int = _opt(128, "global batch (split across torchrun processes)")
    lr: float = _opt(0.01, "learning rate of the weights [5]")
    momentum: float = _opt(0.9, "SGD momentum [5]")
    nesterov: bool = _opt(False, "Nesterov momentum")
    weight_decay: float = _opt(5e-4, "L2 weight decay [5]")
    decay_norm_and_bias: bool = _opt(True, "decay biases and norm parameters too (the paper's text: yes; "
                                     "cuda-convnet2, Caffe and modern recipes: no)")
    bias_lr_mult: float = _opt(1.0, "biases learn at this multiple of --lr (cuda-convnet2 epsB, Caffe lr_mult: 2)")
    label_smoothing: float = _opt(0.0, "cross-entropy label smoothing")
    ema: float = _opt(0.0, "keep an exponential moving average of the weights with this decay per step (e.g. 0.999; "
                      "0 = off; not in the paper): validation, best.pt, eval and predict use the average")
    clip_grad_norm: float = _opt(0.0, "scale the gradients down to this global L2 norm when above it (0 = never; "
                                 "not in the paper)")
    schedule: str = _opt("plateau", "lr schedule: plateau [5] (/10 when val error stops improving), onecycle, "
                         "cosine or constant", choices=("plateau", "onecycle", "cosine", "constant"))
    warmup_epochs: float = _opt(0.0, "linear warm-up of any schedule, in epochs")
    plateau_patience: int = _opt(4, "epochs without a better val error before lr /= 10")
    plateau_max_drops: int = _opt(3, "at most this many lr drops ([5]: three times)")
    # data and augmentation [4]
    image_size: int = _opt(256, "short side stored when a photo folder is prepared ([4]: 256)")
    crop_size: int = _opt(224, "training/eval crop ([4]: 224; 0 = the whole stored image)")
    resize_to: int = _opt(0, "batched resize before cropping (d2l: 28 -> 224; 0 = none)")
    padding: int = _opt(0, "zero padding before random crops (small images)")
    flip: bool = _opt(True, "random horizontal flips [4]")
    pca_std: float = _opt(0.1, "fancy-PCA lighting [4.1], alpha ~ N(0, pca_std); 0 turns it off")
    erase: float = _opt(0.0, "random erasing (Zhong et al. 2017; not in the paper): with this probability a box of "
                        "a 50th to 2/5 of the crop is set to the mean pixel")
    normalization: str = _opt("mean_image", "subtract the mean image [4], per-channel mean/std, or nothing",
                              choices=("mean_image", "channel", "none"))
    pixel_scale: float = _opt(1.0, "network inputs in these units (255: 0-255 pixels, as the paper's init expects)")
    ten_crop: bool = _opt(True, "10-view evaluation for the eval report [4]")
    flip_view: bool = _opt(False, "test-time mirror (not in the paper, whose 10 views [4] hold mirrors): per-epoch "
                           "validation, eval, predict and serve average the centre view's softmax with its mirror's")
    val_fraction: float = _opt(0.1, "held-out fraction of train when the data has no val split")
    # fine-tuning (alexnet/train/finetune.py)
    init: str = _opt("", "start from these weights: an alexnet checkpoint, or a state dict (.pt, .safetensors) of the "
                     "same model; no optimizer state comes along ('' = the model's own init)", metavar="CKPT")
    freeze: str = _opt("", "stop training 'features' or every layer up to and including LAYER (module order); those "
                       "layers run in eval mode (BatchNorm keeps its stored statistics)", metavar="features|LAYER")
    head_lr_mult: float = _opt(1.0, "the last layer (the head: classifier.fc8, fc, ...) learns at this multiple of "
                               "--lr (Caffe's fine-tuning: 10)")
    reset_head: bool = _opt(False, "keep the head freshly initialised instead of taking --init's (needed when the "
                            "class count differs)")
    # execution
    seed: int = _opt(0, "seed of the init, the data order and the held-out split")
    device: str = _opt("auto", "auto, cpu, cuda or cuda:N")
    towers: str = _opt("", "[3.2] alexnet_2012's two towers on two devices, e.g. cuda:0,cuda:1 (inputs on the first)",
                       metavar="DEV0,DEV1")
    channels_last: bool = _opt(True, "channels_last memory format (faster on CPU and GPU)")
    amp: str = _opt("auto", "bf16 autocast: auto (on CUDA except the paper recipes), bf16 or off",
                    choices=("auto", "bf16", "off"))
    compile: bool = _opt(False, "torch.compile the model")
    workers: int = _opt(0, "decode processes when a photo folder is prepared (0 = all cores)")
    max_steps: int = _opt(0, "stop (resumably) after this many optimizer steps in all (0 = no limit)")
    train_subset: int = _opt(0, "train on the first N images only (0 = all)")
    eval_batch_size: int = _opt(256, "batch size of the per-epoch validation")
    val_subset: int = _opt(0, "validate on the first N held-out images only (0 = all)")
    loader_threads: int = _opt(1, "threads making augmented batches")
    quiet: bool = _opt(False, "no progress bars or per-epoch lines")
    diagnose: int = _opt(0, "record per-layer statistics every N steps (default N 10): diagnose.jsonl, TensorBoard "
                         "scalars and histograms, a table after each epoch", nargs="?", const=10, metavar="N")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Departure:
    """One place where the ``paper`` recipe departs from the paper's text, and on whose authority."""
    field: str      # the TrainConfig field it sets, or model_kwargs.KEY for one model argument
    value: object   # what ``paper`` sets it to (``paper-literal`` keeps the text's)
    what: str       # the change, in words
    source: str     # who does it this way: cuda-convnet2's file, Caffe's bvlc_alexnet, or "measured here"
    why: str        # what the text [section] says, and what was measured here (numbers, the doc they live in)

    @property
    def model_kwarg(self) -> str | None:
        """KEY when the departure sets ``model_kwargs.KEY``, else None."""
        return self.field.removeprefix("model_kwargs.") if self.field.startswith("model_kwargs.") else None

    @property
    def setting(self) -> str:
        """As it is asked for: ``--bias-lr-mult 2``, ``--no-decay-norm-and-bias``, ``model_kwargs init_bias 0.1``."""
        if self.model_kwarg:
            return f"model_kwargs {self.model_kwarg} {self.value!r}"
        flag = "--" + self.field.replace("_", "-")
        if isinstance(self.value, bool):
            return flag if self.value else "--no-" + flag[2:]
        return f"{flag} {self.value:g}"

    def __str__(self) -> str:
        return f"{self.what} ({self.setting}). Source: {self.source}. Why: {self.why}"


# Where the `paper` recipe departs from the paper's text: RECIPES["paper"] is RECIPES["paper-literal"] with these
PAPER_DEPARTURES = (
    Departure("bias_lr_mult", 2.0, "biases learn at 2x the weights' learning rate",
              source="cuda-convnet2's layer-params-imagenet-*.cfg sets epsB = 2 x epsW (0.04 vs 0.02); Caffe's "
              "bvlc_alexnet lr_mult 2",
              why="the text [5] gives one rate for all layers and says nothing of biases"),
    Departure("decay_norm_and_bias", False, "no weight decay on biases",
              source="cuda-convnet2 sets wball=0 for biases; Caffe's bvlc_alexnet decay_mult 0",
              why="the text [5] decays 'the weights'"),
    Departure("model_kwargs.init_bias", 0.1, "bias 0.1 instead of 1 in conv2, conv4, conv5, fc6 and fc7",
              source="Caffe's bvlc_alexnet uses 0.1 'since initialization to 1 resulted in flat training loss'",
              why="the text [5] says 1. Measured here (docs/paper_recipe.md): with 1, fc8's first step is 20% of its "
              "norm, the loss blows up to ~17 and then sits at ln K; 0.1 in fc6/fc7 alone is enough to learn, 0.1 in "
              "all five learns fastest"),
    Departure("clip_grad_norm", 5.0, "gradients clipped to a global L2 norm of 5",
              source="measured here",
              why="the text [5] does not clip, nor do cuda-convnet2's or Caffe's configs; measured needed here "
              "(docs/paper_recipe.md): without it the held-out top-1 climbs and then collapses to chance on grey "
              "photos (0.342/0.125/0.717 after 3 epochs, seeds 0/1/2) and swings on colour ones; with it "
              "0.871/0.971/0.933 (grey) and 0.983/0.983/0.957 (colour). 5 is about 4x the gradient norm of the first "
              "steps (1.1-1.7), fixed before any clipped run; a smaller step only when a gradient spikes"),
    Departure("model_kwargs.lrn", "cuda-convnet2", "LRN alpha divided by n: 2e-5 on the sum of squares, k=2",
              source="cuda-convnet2's layer.py divides the cfg's scale 1e-4 by the window size 5 (Caffe's LRN also "
              "divides by n)",
              why="the text [3.3] puts 1e-4 on the sum. Measured with the next two, conv1's order and conv3-5's init "
              "(docs/paper_recipe.md): 3 epochs reach 0.958-0.996 held-out top-1 on both photo sets, seeds 0-4, "
              "against 0.846-0.983 with the text's conventions"),
    Departure("model_kwargs.norm_before_relu", [1], "conv1's LRN before its ReLU",
              source="cuda-convnet2's layers-imagenet-2gpu-model.cfg normalises conv1's output (rnorm1) and applies "
              "the ReLU at pool1",
              why="the text [3.3] applies it after the ReLU"),
    Departure("model_kwargs.init", "cuda-convnet2", "conv3, conv4 and conv5 initialised with std 0.03",
              source="cuda-convnet2's layers-imagenet-2gpu-model.cfg sets initW=0.03 on conv3-5",
              why="the text [5] says 0.01 for every layer"),
)
# cuda-convnet2's conventions (LRN alpha/n, conv1's order, conv3-5's init): the model arguments it is the source of
PAPER_CONVENTIONS = {d.model_kwarg: d.value for d in PAPER_DEPARTURES
                     if d.model_kwarg and d.source.startswith("cuda-convnet2")}


def apply_departures(base: dict, departures) -> dict:
    """A copy of the recipe ``base`` with each departure's field (or model argument) set to its value."""
    recipe = copy.deepcopy(base)
    for departure in departures:
        value = copy.deepcopy(departure.value)
        if departure.model_kwarg:
            recipe["model_kwargs"] = {**recipe.get("model_kwargs", {}), departure.model_kwarg: value}
        else:
            recipe[departure.field] = value
    return recipe


# [5] + [4]: the paper's text, literally.
_PAPER_LITERAL = dict(model="alexnet_2012", model_kwargs={}, epochs=90, batch_size=128, lr=0.01, momentum=0.9,
                      weight_decay=5e-4, schedule="plateau", image_size=256, crop_size=224, flip=True, pca_std=0.1,
                      normalization="mean_image", pixel_scale=255.0, ten_crop=True, amp="off", out="runs/paper-literal")

RECIPES: dict[str, dict] = {
    "paper-literal": _PAPER_LITERAL,
    # the paper as it trains: the text, with PAPER_DEPARTURES (Krizhevsky's code where it differs; Caffe's bias;
    # clipping, measured)
    "paper": dict(apply_departures(_PAPER_LITERAL, PAPER_DEPARTURES), out="runs/paper"),
    # seed 002 / d2l: Fashion-MNIST resized to 224, plain SGD.
    "d2l": dict(data="fashion-mnist", model="alexnet_d2l", epochs=10, batch_size=128, lr=0.01, momentum=0.0,
                weight_decay=0.0, schedule="constant", crop_size=0, resize_to=224, flip=False, pca_std=0.0,
                normalization="none", ten_crop=False, out="runs/d2l"),
    # CPU-friendly: the AlexNet ingredients at 28 px, tuned for accuracy per second.
    # docs/recipes.md#measured-the-quick-recipe: what was tried on the held-out split, and what each gave
    "quick": dict(data="fashion-mnist", model="alexnet_small", model_kwargs={"fc_width": 512, "dropout": 0.25},
                  epochs=8, batch_size=128, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4,
                  decay_norm_and_bias=False, label_smoothing=0.1, schedule="onecycle", warmup_epochs=0.3,
                  ema=0.999, crop_size=28, padding=2, flip=True, pca_std=0.0, normalization="channel",
                  ten_crop=False, out="runs/quick"),
}


def absolute_data(spec: str) -> str:
    """A --data folder or file as an absolute path (so eval works from any directory); builtin names stay names."""
    import os
    path = os.path.abspath(os.path.expanduser(spec))
    if not os.path.exists(path):
        return spec
    from alexnet.data.builtin import BUILTINS       # only now: alexnet.data is heavy, the CLI's --help is not
    return spec if spec in BUILTINS else path


def absolute_path(path: str) -> str:
    import os
    return os.path.abspath(os.path.expanduser(path))


def resolve_config(recipe: str = "quick", **overrides) -> TrainConfig:
    """The recipe's defaults with ``overrides`` (None values ignored) applied on top. The recipe's model arguments
    are its own model's: with another ``model`` they are left out, and only the given ``model_kwargs`` apply."""
    if recipe not in RECIPES:
        raise UsageError(f"unknown recipe {recipe!r}; choose one of: {', '.join(RECIPES)}")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(overrides) - names
    if unknown:
        raise UsageError(f"unknown config keys {sorted(unknown)}")
    values = dict(RECIPES[recipe], recipe=recipe)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides.get("model", values.get("model")) != values.get("model"):
        values["model_kwargs"] = {}
    if "model_kwargs" in overrides:     # the user's model arguments go on top of the recipe's, key by key
        overrides["model_kwargs"] = {**values.get("model_kwargs", {}), **overrides["model_kwargs"]}
    values.update(overrides)
    if "data" in values:                # the paper recipes name no data: the dataclass default stands
        values["data"] = absolute_data(values["data"])
    if values.get("init"):              # recorded as an absolute path: config.json says which weights started the run
        values["init"] = absolute_path(values["init"])
    cfg = TrainConfig(**values)
    if cfg.schedule not in ("plateau", "onecycle", "cosine", "constant"):
        raise UsageError(f"unknown schedule {cfg.schedule!r}; choose plateau, onecycle, cosine or constant")
    if cfg.normalization not in ("mean_image", "channel", "none"):
        raise UsageError(f"unknown normalization {cfg.normalization!r}; choose mean_image, channel or none")
    check_ranges(cfg)
    return cfg


# field -> (rule, what the rule says): every numeric TrainConfig field must be listed (tests/cli/test_main.py).
# Integers with a ceiling are those whose absurd values cost memory or overflow (tests/train/test_recipes_ranges.py).
MAX_SIDE = 4096                           # alexnet.util.checks.MAX_INPUT_ELEMENTS's side: above any model's input
# Fields added after runs and studies were first recorded, at the value that changes nothing: what an older
# config.json (which lacks them) meant, so --resume and the study cache keep their meaning.
NEUTRAL = {"ema": 0.0, "erase": 0.0, "flip_view": False}

RULES = {
    "positive": (lambda v: v > 0, "> 0"), "non-negative": (lambda v: v >= 0, ">= 0"),
    "fraction": (lambda v: 0 <= v < 1, "in [0, 1)"), "probability": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "any": (lambda v: True, "a number"),
    "side": (lambda v: 0 <= v <= MAX_SIDE, f"in [0, {MAX_SIDE}] (pixels)"),
    "positive side": (lambda v: 0 < v <= MAX_SIDE, f"in [1, {MAX_SIDE}] (pixels)"),
    "padding": (lambda v: 0 <= v <= 256, "in [0, 256] (pixels)"),
    "seed": (lambda v: 0 <= v < 2 ** 63, "in [0, 2**63)"),
    "threads": (lambda v: 1 <= v <= 256, "in [1, 256]"), "processes": (lambda v: 0 <= v <= 1024, "in [0, 1024]"),
}
RANGES = {
    "epochs": "positive", "batch_size": "positive", "lr": "positive", "momentum": "fraction",
    "weight_decay": "non-negative", "bias_lr_mult": "non-negative", "label_smoothing": "fraction",
    "clip_grad_norm": "non-negative", "ema": "fraction", "erase": "probability",
    "warmup_epochs": "non-negative", "plateau_patience": "non-negative", "plateau_max_drops": "non-negative",
    "image_size": "positive side", "crop_size": "side", "resize_to": "side", "padding": "padding",
    "pca_std": "non-negative", "pixel_scale": "positive", "val_fraction": "fraction", "seed": "seed",
    "workers": "processes", "max_steps": "non-negative", "train_subset": "non-negative",
    "eval_batch_size": "positive", "val_subset": "non-negative", "loader_threads": "threads",
    "diagnose": "non-negative", "head_lr_mult": "positive",
}
DEVICE = re.compile(r"(auto|cpu|mps|cuda(:\d+)?)")


def check_ranges(cfg: TrainConfig) -> None:
    """Every numeric field finite and within its RANGES rule; --device a device name."""
    for f in dataclasses.fields(TrainConfig):
        if f.type not in ("int", "float"):
            continue
        value, (ok, says) = getattr(cfg, f.name), RULES[RANGES.get(f.name, "any")]
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"{flag} must be a number, got {value!r}")
        if not math.isfinite(value) or not ok(value):
            raise UsageError(f"{flag} must be {'a finite number' if f.type == 'float' else 'an integer'} {says}, "
                             f"got {value}")
    if not DEVICE.fullmatch(cfg.device):
        raise UsageError(f"--device {cfg.device!r} is not a device; use auto, cpu, cuda or cuda:N")
