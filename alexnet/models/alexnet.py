"""The AlexNet family: one configurable class, and each published variant as a short builder.

Layer names follow Caffe's bvlc_alexnet (conv1, relu1, norm1, pool1, ..., fc6, relu6, drop6, ...)
so the layer table reads like the paper's and published Caffe weights map one-to-one.
``alexnet_owt`` is torchvision's own class, so its state dicts load unchanged.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torchvision
from torch import nn

from alexnet.errors import UsageError
from alexnet.ops.linear import Linear
from alexnet.ops.lrn import LocalResponseNorm, relu_lrn_max_pool
from alexnet.models.registry import register_model

# LRN constants as each source states them. "sum": alpha multiplies the window's sum of squares (the paper's
# formula [3.3]); "mean": alpha is divided by n first (cuda-convnet2's layer.py, Caffe, torch.nn).
PAPER_LRN = dict(size=5, alpha=1e-4, beta=0.75, k=2.0, alpha_on="sum")    # [3.3]: 1e-4 on the sum
CONVNET2_LRN = dict(size=5, alpha=1e-4, beta=0.75, k=2.0, alpha_on="mean")  # cuda-convnet2 cmrnorm: 2e-5 on the sum
CAFFE_LRN = dict(size=5, alpha=1e-4, beta=0.75, k=1.0, alpha_on="mean")   # bvlc_alexnet prototxt: k=1, 2e-5 on the sum
LRN_PRESETS = {"paper": PAPER_LRN, "cuda-convnet2": CONVNET2_LRN, "caffe": CAFFE_LRN}
BIAS_ONE_LAYERS = ("conv2", "conv4", "conv5", "fc6", "fc7")               # [5]
INIT_SCHEMES = ("paper", "cuda-convnet2", "caffe", "xavier", "xavier-weights", "default")


def _out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class AlexNet(nn.Module):
    """Five conv layers and three FC layers, every paper choice an argument a study can toggle.

    norm: "lrn" (paper [3.3]), "bn" (BatchNorm in place of LRN) or "none".
    pool_before_norm: CaffeNet's order (pool, then LRN) instead of the paper's (LRN, then pool).
    pool: (kernel, stride); (3, 2) is the paper's overlapping pooling [3.4], (2, 2) the usual.
    lrn: the LRN constants, a dict for LocalResponseNorm or a preset name: "paper" [3.3], "cuda-convnet2"
    (alpha divided by n: 2e-5 on the sum) or "caffe" (k=1, alpha divided by n).
    norm_before_relu: layers whose LRN normalises the conv output before its ReLU (cuda-convnet2's conv1).
    init: "paper" [5], "cuda-convnet2" (conv3-5 std 0.03), "caffe" (bvlc prototxt fillers), "xavier"
    (xavier weights, zero biases), "xavier-weights" (d2l r0.17: xavier weights, PyTorch's default biases)
    or "default" (PyTorch's, d2l 1.x).
    """

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, *, input_size: int = 224,
                 widths: Sequence[int] = (96, 256, 384, 384, 256), kernels: Sequence[int] = (11, 5, 3, 3, 3),
                 strides: Sequence[int] = (4, 1, 1, 1, 1), paddings: Sequence[int] = (2, 2, 1, 1, 1),
                 groups: Sequence[int] = (1, 2, 1, 2, 2), norm: str = "lrn", lrn: dict | None = None,
                 norm_layers: Sequence[int] = (1, 2), norm_before_relu: Sequence[int] = (),
                 pool_layers: Sequence[int] = (1, 2, 5),
                 pool: tuple[int, int] = (3, 2), pool_padding: int = 0, pool_before_norm: bool = False,
                 activation: str = "relu", fc_width: int = 4096, dropout: float = 0.5,
                 init: str = "paper", init_bias: float | dict = 1.0) -> None:
        super().__init__()
        if norm not in ("lrn", "bn", "none"):
            raise UsageError(f"norm must be lrn, bn or none, got {norm!r}")
        if activation not in ("relu", "tanh"):
            raise UsageError(f"activation must be relu or tanh, got {activation!r}")
        if isinstance(lrn, str):
            if lrn not in LRN_PRESETS:
                raise UsageError(f"unknown lrn preset {lrn!r}; choose {', '.join(LRN_PRESETS)} or give a dict")
            lrn = LRN_PRESETS[lrn]
        if init not in INIT_SCHEMES:
            raise UsageError(f"unknown init {init!r}; choose {', '.join(INIT_SCHEMES)}")
        act = nn.ReLU if activation == "relu" else nn.Tanh
        self.input_size = input_size
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels, size = in_channels, input_size
        for i, (width, k, s, p, g) in enumerate(zip(widths, kernels, strides, paddings, groups), start=1):
            layers[f"conv{i}"] = nn.Conv2d(channels, width, k, stride=s, padding=p, groups=g)
            relu = (f"relu{i}", act(inplace=True) if activation == "relu" else act())
            size = _out_size(size, k, s, p)
            blocks: list[tuple[str, nn.Module]] = []
            if i in norm_layers and norm != "none":
                blocks.append((f"norm{i}", LocalResponseNorm(**(lrn or PAPER_LRN)) if norm == "lrn"
                               else nn.BatchNorm2d(width)))
            if blocks and i in norm_before_relu:   # cuda-convnet2: conv1 -> LRN -> ReLU -> pool
                layers.update(blocks)
                blocks = []
            layers.update([relu])
            if i in pool_layers:
                blocks.append((f"pool{i}", nn.MaxPool2d(pool[0], stride=pool[1], padding=pool_padding)))
                size = _out_size(size, pool[0], pool[1], pool_padding)
            if pool_before_norm:
                blocks.reverse()
            layers.update(blocks)
            channels = width
        if size < 1:
            raise UsageError(f"input size {input_size} is too small for this network (feature map vanishes); "
                             "use a larger --input-size (summary) or --crop-size/--resize-to (train)")
        self.features = nn.Sequential(layers)
        self.avgpool = nn.Identity()  # fixed input size: the feature map is already size x size
        self.feature_shape = (channels, size, size)
        self.classifier = nn.Sequential(OrderedDict([
            ("fc6", Linear(channels * size * size, fc_width)), ("relu6", act()), ("drop6", nn.Dropout(dropout)),
            ("fc7", Linear(fc_width, fc_width)), ("relu7", act()), ("drop7", nn.Dropout(dropout)),
            ("fc8", Linear(fc_width, num_classes)),
        ]))
        init_weights(self, init, init_bias)
        self.fuse = True   # run relu -> LRN -> pool blocks fused on the CPU (see _features); False: module by module

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, classes)
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise UsageError(f"{getattr(self, 'model_name', 'this AlexNet')} was built for "
                             f"{self.input_size}x{self.input_size} inputs, got {tuple(x.shape[-2:])}")
        x = self.avgpool(self._features(x))
        return self.classifier(torch.flatten(x, 1))

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """``self.features(x)``, with each relu -> LRN -> max-pool run of the paper's order [3.3, 3.4] as one
        fused operation (``relu_lrn_max_pool``: the same values and gradients, a third of the memory traffic)
        unless ``fuse`` is False or a hook watches one of the three modules."""
        if not self.fuse or nn.modules.module._global_forward_hooks or x.device.type != "cpu":
            return self.features(x)
        modules = list(self.features)
        i = 0
        while i < len(modules):
            fused = fusable_block(modules[i:i + 3])
            if fused is not None:
                x, i = fused(x), i + 3
            else:
                x, i = modules[i](x), i + 1
        return x


def _watched(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or getattr(module, "_backward_pre_hooks", None))


def fusable_block(block: list[nn.Module]):
    """A function running ``block`` (ReLU, our LRN, MaxPool2d 3x3-style without padding) fused, or None."""
    if len(block) != 3:
        return None
    relu, norm, pool = block
    if not (type(relu) is nn.ReLU and type(norm) is LocalResponseNorm and type(pool) is nn.MaxPool2d):
        return None
    kernel, stride, padding, dilation = (v if isinstance(v, int) else (v[0] if len(set(v)) == 1 else None)
                                         for v in (pool.kernel_size, pool.stride or pool.kernel_size,
                                                   pool.padding, pool.dilation))
    if None in (kernel, stride) or padding != 0 or dilation != 1 or pool.ceil_mode or any(map(_watched, block)):
        return None
    return lambda x: relu_lrn_max_pool(x, norm.size, norm.alpha_sum, norm.beta, norm.k, kernel, stride, norm.groups)


def init_weights(model: nn.Module, scheme: str, bias_value: float | dict = 1.0) -> None:
    """Initialise conv and linear layers by name (conv1..conv5, fc6..fc8); see ``AlexNet`` for the schemes.

    ``bias_value``: the bias of conv2, conv4, conv5, fc6 and fc7 (the others start at 0), or a dict by layer
    name, e.g. ``{"fc6": 0.1, "fc7": 0.1}`` (unnamed layers keep the paper's 1)."""
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        short = name.rsplit(".", 1)[-1]
        if scheme in ("paper", "cuda-convnet2", "caffe"):
            std = 0.01                          # [5] N(0, 0.01) ...
            if scheme == "cuda-convnet2" and short in ("conv3", "conv4", "conv5"):
                std = 0.03                      # layers-imagenet-2gpu-model.cfg: initW=0.03 on conv3-5
            if scheme == "caffe" and short in ("fc6", "fc7"):
                std = 0.005                     # bvlc prototxt: fc6/fc7 std 0.005
            nn.init.normal_(module.weight, 0.0, std)
            # [5] bias 1 (Caffe's bvlc_alexnet: 0.1) in conv2, conv4, conv5, fc6, fc7; 0 elsewhere
            if short in BIAS_ONE_LAYERS:
                value = bias_value.get(short, 1.0) if isinstance(bias_value, dict) else bias_value
            else:
                value = 0.0
            nn.init.constant_(module.bias, value)
        elif scheme in ("xavier", "xavier-weights"):
            nn.init.xavier_uniform_(module.weight)
            if scheme == "xavier":
                nn.init.zeros_(module.bias)     # xavier-weights (d2l r0.17) keeps PyTorch's default bias
        elif scheme != "default":
            raise UsageError(f"unknown init {scheme!r}; choose {', '.join(INIT_SCHEMES)}")


PAPER_NOTES = (
    "[3.5] input 224 with conv1 padding 2, or 227 without padding: both give 55x55",
    "[3.3] LRN k=2, n=5, alpha=1e-4 on the SUM of squares, beta=0.75 "
    "(= torch.nn.LocalResponseNorm(5, alpha=5e-4, k=2): PyTorch/Caffe divide alpha by n)",
    "[3.3] LRN after ReLU of conv1 and conv2, before pooling; [3.4] overlapping max-pool 3/2",
    "[3.2] groups=2 on conv2, conv4, conv5 (the two-GPU split); conv3 and FC see both halves",
    "[4.2] dropout 0.5 on the outputs of fc6 and fc7; [5] init N(0, 0.01), bias 1 in conv2/4/5, fc6/7",
    "LRN conventions: alexnet_2012 takes the paper's text (alpha 1e-4 on the sum, k=2; lrn='paper'); "
    "lrn='cuda-convnet2' is Krizhevsky's code (cmrnorm scale 1e-4 divided by n=5: 2e-5 on the sum, k=2); "
    "alexnet_caffe and caffenet use Caffe's (k=1, alpha 1e-4 divided by n)",
    "Krizhevsky's code also differs in: conv1's LRN before its ReLU (norm_before_relu=[1]), conv3-5 init std "
    "0.03 (init='cuda-convnet2'), fc8 bias -7 in the 1-GPU cfg (no effect: softmax ignores a shared shift); its 2-GPU cfg also "
    "adds a spatial contrast norm (cnorm2) after norm2, which the paper does not describe and we leave out",
    "--recipe paper trains this net with Krizhevsky's code where it differs from the text (cuda-convnet2: LRN "
    "alpha/n, conv1's LRN before its ReLU, conv3-5 std 0.03, 2x bias lr, no bias decay), bias 0.1 (Caffe's) and "
    "gradients clipped to norm 5 (measured needed); --recipe paper-literal with the text's conventions, bias 1 and "
    "one rate, which stalls at ln K (docs/paper_recipe.md, alexnet.train.recipes.PAPER_DEPARTURES)",
)


def _paper_padding(input_size: int) -> tuple[int, ...]:
    return (2 if input_size == 224 else 0, 2, 1, 1, 1)


@register_model("alexnet_2012", input_size=224, input_sizes=(224, 227), source="Krizhevsky et al. 2012",
                description="the paper's network: grouped convs, LRN, overlapping pooling, paper init",
                notes=PAPER_NOTES + (
                    "[3.2] LRN windows stay inside each tower's 48 (conv1) / 128 (conv2) maps, as cuda-convnet2's "
                    "layers-imagenet-2gpu-model.cfg (rnorm1a/rnorm1b, one per GPU): LRN groups=2",
                    "[3.2] towers=('cuda:0', 'cuda:1') runs the two towers on two devices; they exchange "
                    "activations only into conv3, fc6, fc7 and fc8 (same state dict as the grouped model)"),
                towers=True)
def alexnet_2012(*, num_classes: int, in_channels: int, input_size: int, **kw) -> nn.Module:
    model = AlexNet(num_classes, in_channels, input_size=input_size, paddings=_paper_padding(input_size), **kw)
    if not (isinstance(kw.get("lrn"), dict) and "groups" in kw["lrn"]):   # [3.2] each tower normalises its own maps
        for module in model.features:
            if isinstance(module, LocalResponseNorm):
                module.groups = 2
    return model


@register_model("alexnet_2012_one_gpu", input_size=224, input_sizes=(224, 227), source="Krizhevsky et al. 2012 [3.2]",
                description="the paper's one-GPU comparison net: half the kernels except conv5, one tower",
                notes=("[3.2] 48-128-192-192-256, groups=1; the paper reports it 1.7% worse top-1",))
def alexnet_2012_one_gpu(*, num_classes: int, in_channels: int, input_size: int, **kw) -> AlexNet:
    return AlexNet(num_classes, in_channels, input_size=input_size, paddings=_paper_padding(input_size),
                   widths=(48, 128, 192, 192, 256), groups=(1, 1, 1, 1, 1), **kw)


CAFFE_NOTES = (
    "BVLC Caffe: 227x227 crops, conv1 without padding",
    "Caffe LRN: k=1, alpha=1e-4 DIVIDED BY n=5 (paper: k=2, alpha=1e-4 on the sum)",
    "Caffe fillers: weights N(0, 0.01), fc6/fc7 N(0, 0.005)",
)


@register_model("alexnet_caffe", input_size=227, input_sizes=(227,), source="BVLC Caffe bvlc_alexnet",
                description="Caffe's bvlc_alexnet: k=1 LRN with alpha/n, bias 0.1, 227 input",
                notes=CAFFE_NOTES + ("bias 0.1 in conv2/4/5, fc6/7 (paper: 1)",))
def alexnet_caffe(*, num_classes: int, in_channels: int, input_size: int, **kw) -> AlexNet:
    kw = dict(dict(lrn=CAFFE_LRN, init="caffe", init_bias=0.1), **kw)
    return AlexNet(num_classes, in_channels, input_size=input_size, paddings=(0, 2, 1, 1, 1), **kw)


@register_model("caffenet", input_size=227, input_sizes=(227,), source="BVLC Caffe bvlc_reference_caffenet",
                description="CaffeNet: bvlc_alexnet with pooling BEFORE LRN (pool1 -> norm1)",
                notes=CAFFE_NOTES + ("CaffeNet order: pool then norm (paper: norm then pool)",
                                     "bias 1 in conv2/4/5, fc6/7, as bvlc_reference_caffenet"))
def caffenet(*, num_classes: int, in_channels: int, input_size: int, **kw) -> AlexNet:
    kw = dict(dict(lrn=CAFFE_LRN, init="caffe", init_bias=1.0, pool_before_norm=True), **kw)
    return AlexNet(num_classes, in_channels, input_size=input_size, paddings=(0, 2, 1, 1, 1), **kw)


@register_model("alexnet_bn", input_size=224, input_sizes=(224, 227), source="seed 004 (Keras)",
                description="the paper's network with BatchNorm in place of LRN",
                notes=("BatchNorm after ReLU of conv1 and conv2, where the paper has LRN",))
def alexnet_bn(*, num_classes: int, in_channels: int, input_size: int, **kw) -> AlexNet:
    return AlexNet(num_classes, in_channels, input_size=input_size, paddings=_paper_padding(input_size),
                   norm="bn", **kw)


@register_model("alexnet_d2l", input_size=224, input_sizes=(224,), in_channels=1, source="d2l.ai (seed 002)",
                description="d2l's Fashion-MNIST AlexNet: 1 channel, no LRN, no groups, 6400-input fc6",
                notes=("d2l: conv1 padding 1 on 224 gives 54x54; 5x5x256 = 6400 inputs to fc6",
                       "no LRN, no groups",
                       "init as d2l r0.17's train_ch6: xavier_uniform_ weights, PyTorch's default biases "
                       "U(+-1/sqrt(fan_in)) (init='xavier-weights'); d2l 1.x's init_cnn never reaches its lazy "
                       "layers, so every parameter is PyTorch's default there: --model-kwargs '{\"init\": \"default\"}'"))
def alexnet_d2l(*, num_classes: int, in_channels: int, input_size: int, **kw) -> AlexNet:
    kw = dict(dict(norm="none", init="xavier-weights"), **kw)
    return AlexNet(num_classes, in_channels, input_size=input_size, paddings=(1, 2, 1, 1, 1),
                   groups=(1, 1, 1, 1, 1), **kw)


@register_model("alexnet_small", input_size=28, min_input_size=16, in_channels=1, source="this project",
                description="AlexNet's ingredients sized for 28-64 px: ReLU, BN, overlapping pooling, dropout FC",
                notes=("3x3 convs at 32-64-96-96-64 with overlapping max-pool 3/2 (padding 1)",
                       "BatchNorm after every conv's ReLU by default (fast, stable CPU training); "
                       "--model-kwargs '{\"norm\": \"lrn\", \"norm_layers\": [1, 2]}' gives the paper's LRN placement"))
def alexnet_small(*, num_classes: int, in_channels: int, input_size: int, **kw) -> AlexNet:
    kw = dict(dict(widths=(32, 64, 96, 96, 64), kernels=(3, 3, 3, 3, 3), strides=(1, 1, 1, 1, 1),
                   paddings=(1, 1, 1, 1, 1), groups=(1, 1, 1, 1, 1), norm="bn", norm_layers=(1, 2, 3, 4, 5),
                   pool_padding=1,
                   fc_width=256, init="default"), **kw)
    return AlexNet(num_classes, in_channels, input_size=input_size, **kw)


@register_model("alexnet_owt", input_size=224, min_input_size=63, source="torchvision (Krizhevsky 2014, 'one weird trick')",
                description="torchvision's AlexNet: 64-192-384-256-256, no LRN, adaptive 6x6 pool",
                notes=("'One weird trick' (2014) variant, not the 2012 paper: no LRN, no groups",
                       "dropout BEFORE fc6/fc7 (paper: after); AdaptiveAvgPool 6x6; state dicts = torchvision's"))
def alexnet_owt(*, num_classes: int, in_channels: int, input_size: int, **kw) -> nn.Module:
    model = torchvision.models.AlexNet(num_classes=num_classes, **kw)
    if in_channels != 3:
        model.features[0] = nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2)
    return model
