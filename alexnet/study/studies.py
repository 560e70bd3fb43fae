"""The paper's claims as ``alexnet study`` definitions: each a reference arm and arms that change one choice.

Effects are "arm minus reference" in percentage points of error (for ``relu-vs-tanh``: in epochs to 25%
training error), so a negative number means the arm's choice lowers the error. Every reference here is the
alternative the paper argues against (or, for ``depth``, the full net), so the paper's own numbers read
with the same sign: LRN -1.4 points top-1 [3.3].

Arms are config overrides on the study base (``base_config``): the ``alexnet_small`` family at 24 px crops of
Fashion-MNIST's 28 px images (the paper's 224 of 256, scaled) with every paper choice switched on: LRN after
conv1 and conv2 at the paper's constants [3.3], 3/2 pooling [3.4], dropout 0.5 [4.2], crops, flips and PCA
lighting [4.1], inputs as the paper feeds them (0-255 pixels minus the mean image [4]). An override may be
a function of the base model's layer lists (``layer_lists``) where it must rewrite them (towers, depth).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

# The settings every study starts from, on top of the quick recipe's SGD (Nesterov 0.9, one-cycle, weight decay
# 5e-4 off biases) at the paper's lr 0.01 [5] (the quick recipe's 0.05 left 2 of 3 seeds of this net at chance
# on 0-255 inputs), without label smoothing (a regulariser the paper does not have).
BASE = dict(model="alexnet_small", model_kwargs={"norm": "lrn", "norm_layers": [1, 2], "lrn": "paper",
                                                  "dropout": 0.5},
            crop_size=24, padding=0, flip=True, pca_std=0.1, normalization="mean_image", pixel_scale=255.0,
            label_smoothing=0.0, ten_crop=False, lr=0.01)
# Fig. 1 [3.1]: no regularisation of any kind, a constant lr (chosen per arm from FIG1 budget's lrs).
FIG1_BASE = dict(model="cnn4_fig1", model_kwargs={}, crop_size=0, padding=0, flip=False, pca_std=0.0,
                 normalization="channel", pixel_scale=1.0, label_smoothing=0.0, weight_decay=0.0, momentum=0.9,
                 nesterov=False, schedule="constant", warmup_epochs=0.0, ten_crop=False)

# quick: test-sized; full: calibrated so that `study all` at 3 seeds fits about an hour on a 2-core CPU.
BUDGETS = {
    "quick": dict(seeds=2, train=dict(train_subset=1024, epochs=1, val_subset=256, batch_size=64),
                  test_subset=500, train_eval_subset=500, fig1=dict(train_subset=2048, epochs=1, batch_size=64),
                  fig1_lrs=(0.01, 0.05), curve_block=4),
    "full": dict(seeds=3, train=dict(train_subset=10000, epochs=2, val_subset=500),
                 test_subset=0, train_eval_subset=5000, fig1=dict(train_subset=8000, epochs=1),
                 fig1_lrs=(0.01, 0.03, 0.1), curve_block=4),
}


@dataclass(frozen=True)
class Arm:
    name: str
    overrides: dict | Callable[[dict], dict] = field(default_factory=dict)   # config overrides (model_kwargs merged)
    expected: int | None = None          # the paper's sign of (arm - reference) on the study's metric; None: no claim
    evaluation: dict = field(default_factory=dict)   # ten_crop / ensemble: how the arm's runs are evaluated


@dataclass(frozen=True)
class Study:
    name: str
    section: str
    claim: str
    paper: dict                          # the paper's numbers, in the study's sign convention
    arms: tuple[Arm, ...]                # arms[0] is the reference
    about: str                           # the arm the paper's number (and the study's verdict) is about
    metric: str = "test_top1_error"
    extra_metrics: tuple[str, ...] = ()  # the study's own measurements
    kind: str = "train"                  # train | fig1 | ensemble
    notes: str = ""

    @property
    def reference(self) -> Arm:
        return self.arms[0]

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)


def _remove_layer(index: int) -> Callable[[dict], dict]:
    """Overrides that drop conv layer ``index`` (1-based, a middle one), keeping the norms and pools where they
    were in the sequence: the removed layer's own norm and pool follow the layer after it."""
    def overrides(layers: dict) -> dict:
        kw = {key: [v for i, v in enumerate(layers[key], start=1) if i != index]
              for key in ("widths", "kernels", "strides", "paddings", "groups")}
        for key in ("norm_layers", "pool_layers"):
            kw[key] = sorted({i - (i > index) for i in layers[key]})
        return {"model_kwargs": kw}
    overrides.__name__ = f"without_conv{index}"
    return overrides


def _one_tower(layers: dict) -> dict:
    """[3.2] the comparison net: half the kernels in every conv layer but the last, one tower."""
    widths = [w // 2 for w in layers["widths"][:-1]] + [layers["widths"][-1]]
    from alexnet.models.alexnet import PAPER_LRN       # one tower: LRN windows span all maps (alexnet_2012: 2)
    return {"model_kwargs": {"widths": widths, "groups": [1] * len(widths), "lrn": dict(PAPER_LRN, groups=1)}}


def _two_towers(layers: dict) -> dict:
    """[3.2] the paper's split: conv2, conv4 and conv5 see only their own tower's maps (groups 2), and each
    tower's LRN normalises its own maps; conv3 and the fc layers see both."""
    groups = [2 if i in (2, 4, 5) else 1 for i in range(1, len(layers["widths"]) + 1)]
    from alexnet.models.alexnet import PAPER_LRN
    return {"model_kwargs": {"groups": groups, "lrn": dict(PAPER_LRN, groups=2)}}


STUDIES: dict[str, Study] = {s.name: s for s in (
    Study("relu-vs-tanh", "3.1, Fig. 1", "a four-layer CNN reaches 25% training error six times faster with "
          "ReLUs than with tanh units", {"speed-up": 6.0},
          (Arm("tanh", {"model_kwargs": {"activation": "tanh"}}),
           Arm("relu", {"model_kwargs": {"activation": "relu"}}, expected=-1)),
          about="relu", metric="epochs_to_25", extra_metrics=("seconds_to_25", "final_train_error"),
          kind="fig1", notes="our reconstruction of Fig. 1's net (cnn4_fig1); each arm at its best constant lr "
          "from a one-seed sweep (fewest epochs to 25% training error); no weight decay, dropout or augmentation"),
    Study("lrn", "3.3", "local response normalisation lowers the error", {"top1": -1.4, "top5": -1.2},
          (Arm("none", {"model_kwargs": {"norm": "none"}}),
           Arm("lrn-paper", {}, expected=-1),
           Arm("lrn-cuda-convnet2", {"model_kwargs": {"lrn": "cuda-convnet2"}}, expected=-1),
           Arm("batchnorm", {"model_kwargs": {"norm": "bn"}})),
          about="lrn-paper", extra_metrics=("lrn_divisor_init", "lrn_divisor_end"),
          notes="lrn_divisor: the mean of (k + alpha * window sum of squares)^beta over the LRN inputs of a "
          "test batch, at init and after training (1: no normalisation; k^beta = 1.68 alone is a constant)"),
    Study("overlap-pool", "3.4", "overlapping max-pooling (3/2) lowers the error against 2/2",
          {"top1": -0.4, "top5": -0.3},
          (Arm("pool-2/2", {"model_kwargs": {"pool": [2, 2], "pool_padding": 0}}), Arm("pool-3/2", {}, expected=-1)),
          about="pool-3/2"),
    Study("dropout", "4.2", "dropout reduces substantial overfitting (no number given)", {},
          (Arm("dropout-off", {"model_kwargs": {"dropout": 0.0}}), Arm("dropout-0.5", {}, expected=-1)),
          about="dropout-0.5", extra_metrics=("train_top1_error", "gap"),
          notes="gap = test top-1 error - train top-1 error, the train error measured in eval mode (no dropout, "
          "centre view) on the first training images"),
    Study("augmentation", "4.1", "random crops and flips reduce overfitting (no number given)", {},
          (Arm("crops+flips-off", {"crop_size": 0, "flip": False}), Arm("crops+flips-on", {}, expected=-1)),
          about="crops+flips-on", extra_metrics=("train_top1_error", "gap"),
          notes="off: the whole 28 px image, no flips (the net's input is 28 px, not 24)"),
    Study("pca-lighting", "4.1", "PCA lighting lowers top-1 error by over 1%", {"top1": -1.0},
          (Arm("pca-off", {"pca_std": 0.0}), Arm("pca-0.1", {}, expected=-1)), about="pca-0.1",
          notes="Fashion-MNIST is grey: one eigenvector, so PCA lighting is a random brightness shift"),
    Study("towers", "3.2", "the two-tower net beats a one-tower net with half the kernels",
          {"top1": -1.7, "top5": -1.2},
          (Arm("one-tower", _one_tower), Arm("two-towers", _two_towers, expected=-1)), about="two-towers",
          extra_metrics=("params",), notes="two-towers: the base widths with groups 2 in conv2/4/5; one-tower: "
          "half the kernels except the last conv layer, groups 1, the same fc width"),
    Study("depth", "7", "removing any middle conv layer costs about 2% top-1", {"top1": 2.0},
          (Arm("full", {}), Arm("without-conv2", _remove_layer(2), expected=1),
           Arm("without-conv3", _remove_layer(3), expected=1), Arm("without-conv4", _remove_layer(4), expected=1)),
          about="without-conv3", extra_metrics=("params",),
          notes="the removed layer's norm and pool (if any) follow the next layer; in alexnet_small conv3 and conv4 "
          "are alike (96 maps, 3x3, groups 1), so without-conv3 and without-conv4 are the same net and share runs"),
    Study("ten-crop", "4.1", "averaging 10 views beats the centre view (ILSVRC-2010: 39.0/18.3 -> 37.5/17.0)",
          {"top1": -1.5, "top5": -1.3},
          (Arm("centre", {}), Arm("10-views", {}, expected=-1, evaluation={"ten_crop": True})), about="10-views",
          notes="no extra training: the same nets evaluated two ways"),
    Study("ensemble", "6", "averaging 5 CNNs beats one (ILSVRC-2012 val top-5 18.2 -> 16.4, top-1 40.7 -> 38.1)",
          {"top1": -2.6, "top5": -1.8},
          (Arm("1-cnn", {}), Arm("5-cnns", {}, expected=-1, evaluation={"ensemble": 5})), about="5-cnns",
          metric="test_top5_error", extra_metrics=("test_top1_error",), kind="ensemble",
          notes="seed s's net against the ensemble of seeds s..s+4 (sliding windows: the ensembles share nets, "
          "so their differences are correlated and the interval is optimistic)"),
)}
# `study all` runs them in this order: the baseline's seeds first serve lrn and ten-crop (free), the
# ensemble's extra seeds come last, so an interrupted `all` leaves the most studies complete.
ALL_ORDER = ("relu-vs-tanh", "lrn", "ten-crop", "overlap-pool", "pca-lighting", "dropout", "augmentation",
             "towers", "depth", "ensemble")
