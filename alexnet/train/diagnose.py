"""Why a network does or does not learn: per-layer statistics, and a stall watch for the training loop.

``LayerStats`` watches every conv and linear layer of a model (forward hooks on those layers only, so the
fused relu -> LRN -> pool blocks keep running fused) and, on the steps it is asked to record, reports for
each layer:

- ``act_std``: std of the layer's output before its ReLU (the pre-activation);
- ``act_mean``: its mean (a large positive mean with a small std is a layer whose bias drowns its input);
- ``relu_zero``: the fraction of outputs at or below zero, i.e. zeroed by the ReLU that follows;
- ``dead``: the fraction of units (channels, or FC neurons) that are zero for every image in the batch;
- ``signal``: the std across images of each unit's output, averaged over units, divided by ``act_std``.
  It says how much of a layer's output depends on the input image at all (1: all of it, 0: a constant);
- ``grad_std``: std of the weight gradient; ``update_ratio``: ||W_after - W_before|| / ||W_before|| over
  one optimiser step (about 1e-3 is healthy for SGD; 1e-6 is a layer that does not move);
- for the last layer, ``logit_std``: the spread of the logits across classes.

``StallWatch`` reads the running training loss and says in plain words when it has sat at chance
(ln K, the loss of predicting the class prior) for a while, or blown up far above it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import torch
from torch import nn

def watched_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The conv and linear layers, by their short names (conv1 .. fc8) where the model has them."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    short = [name.rsplit(".", 1)[-1] for name, _ in layers]
    unique = len(set(short)) == len(short)
    return [(s if unique else name, m) for s, (name, m) in zip(short, layers)]


class LayerStats:
    """Per-layer activation, gradient and update statistics of ``model`` on the steps where ``armed``.

    Usage around one optimiser step::

        stats.arm()            # the next forward is recorded
        loss = criterion(model(x), y); loss.backward()
        stats.before_step()    # gradient statistics, weights remembered
        optimizer.step()
        row = stats.after_step(step)   # {"step": .., "layers": {name: {...}}, "logit_std": ..}

    Reading statistics never changes what the model computes.
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers = watched_layers(model)
        self.armed = False
        self._acts: dict[str, dict] = {}
        self._before: dict[str, torch.Tensor] = {}
        self._grads: dict[str, float] = {}
        self._logit_std = float("nan")
        self._handles = [m.register_forward_hook(self._hook(name)) for name, m in self.layers]

    def _hook(self, name: str):
        last = name == self.layers[-1][0]

        def hook(_module, _inputs, out):
            if self.armed and isinstance(out, torch.Tensor):
                self._acts[name] = activation_stats(out.detach())
                if last:
                    self._logit_std = out.detach().float().std(dim=1).mean().item()
        return hook

    def arm(self) -> None:
        self.armed, self._acts, self._grads, self._before = True, {}, {}, {}

    def before_step(self) -> None:
        if not self.armed:
            return
        self.armed = False   # the forward is over: later forwards (validation) are not recorded
        for name, m in self.layers:
            if m.weight.grad is not None:
                self._grads[name] = m.weight.grad.float().std().item()
            self._before[name] = m.weight.detach().clone()

    def after_step(self, step: int) -> dict | None:
        if not self._before:
            return None
        layers = {}
        for name, m in self.layers:
            row = dict(self._acts.get(name, {}))
            if name in self._grads:
                row["grad_std"] = self._grads[name]
            if name in self._before:
                before = self._before[name]
                row["update_ratio"] = ((m.weight.detach() - before).norm() / before.norm().clamp_min(1e-30)).item()
            layers[name] = row
        self._before = {}
        return {"step": step, "layers": layers, "logit_std": self._logit_std}

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def record_diagnosis(row: dict, path, writer, stats: LayerStats) -> None:
    """Append ``row`` to the jsonl file ``path``; scalars and weight/gradient histograms to TensorBoard."""
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
    step = row["step"]
    writer.add_scalar("diagnose/logit_std", row["logit_std"], step)
    for name, values in row["layers"].items():
        for key, value in values.items():
            writer.add_scalar(f"diagnose/{name}/{key}", value, step)
    for name, module in stats.layers:
        writer.add_histogram(f"weights/{name}", module.weight.detach().float().cpu(), step)
        if module.weight.grad is not None:
            writer.add_histogram(f"grads/{name}", module.weight.grad.float().cpu(), step)


def activation_stats(out: torch.Tensor) -> dict:
    """Statistics of a (B, C, H, W) or (B, F) pre-activation (see the module docstring)."""
    x = out.float()
    units = x.transpose(0, 1).reshape(x.shape[1], x.shape[0], -1)    # (C, B, positions)
    std = x.std().item()
    per_unit_over_images = units.mean(dim=2).std(dim=1) if x.shape[0] > 1 else torch.zeros(1)
    return {"act_mean": x.mean().item(), "act_std": std,
            "signal": per_unit_over_images.mean().item() / std if std > 0 else 0.0,
            "relu_zero": (x <= 0).float().mean().item(),
            "dead": (units.amax(dim=(1, 2)) <= 0).float().mean().item()}


def format_diagnosis(rows: list[dict]) -> str:
    """A table per recorded step: one line per layer."""
    lines = []
    for row in rows:
        lines.append(f"step {row['step']}: logit std {row['logit_std']:.3g}")
        lines.append(f"  {'layer':8s} {'mean':>9s} {'std':>9s} {'signal':>7s} {'relu=0':>7s} {'dead':>6s} "
                     f"{'grad std':>9s} {'update':>9s}")
        for name, s in row["layers"].items():
            lines.append(f"  {name:8s} {s.get('act_mean', math.nan):9.3g} {s.get('act_std', math.nan):9.3g} "
                         f"{s.get('signal', math.nan):7.3f} {s.get('relu_zero', math.nan):7.3f} "
                         f"{s.get('dead', math.nan):6.3f} {s.get('grad_std', math.nan):9.2e} "
                         f"{s.get('update_ratio', math.nan):9.2e}")
    return "\n".join(lines)


@dataclass
class StallWatch:
    """Notices a training loss stuck at chance (ln K) or blown up far above it.

    The loop feeds it the mean loss of every ``window`` steps. ``check`` returns a message once per kind of
    trouble (None otherwise): "stall" when ``patience`` windows in a row stay within ``tolerance``
    (relative) of ln K, "blowup" when a window's mean exceeds ``blowup`` x ln K, "diverged" when a window's mean
    is back above ln K after an earlier one fell below ``diverged`` x ln K (the network had learnt, then lost it:
    the paper recipe on grey photos, docs/paper_recipe.md, peaks at 19.9 for one step, but at most 2.4x chance
    over ten).
    """

    num_classes: int
    window: int = 10
    patience: int = 5
    tolerance: float = 0.03
    blowup: float = 3.0
    diverged: float = 0.9
    fixes: str = ""                  # the stall's likely fixes (``stall_fixes``); "" = the AlexNet init advice
    flat: int = 0
    lowest: float = math.inf         # the lowest window mean so far
    said: set = field(default_factory=set)
    window_sum: object = None        # the losses of the window so far, a tensor (no host sync until it is read)

    def observe(self, loss, step: int) -> str | None:
        """Add one step's loss (a detached tensor); every ``window`` steps, ``check`` their mean."""
        self.window_sum = loss if self.window_sum is None else self.window_sum + loss
        if step % self.window:
            return None
        mean, self.window_sum = self.window_sum.item() / self.window, None
        return self.check(mean, step)

    @property
    def chance(self) -> float:
        return math.log(self.num_classes)

    def check(self, mean: float, step: int) -> str | None:
        """``mean``: the mean training loss of the ``window`` steps that end at global step ``step``."""
        if self.num_classes < 2 or not math.isfinite(mean):
            return None     # one class has nothing to learn; non-finite losses are the loop's own error
        self.flat = self.flat + 1 if abs(mean - self.chance) <= self.tolerance * self.chance else 0
        if self.flat >= self.patience and "stall" not in self.said:
            self.said.add("stall")
            return (f"the training loss has stayed at {mean:.3f}, within {self.tolerance:.0%} of ln {self.num_classes} "
                    f"= {self.chance:.3f} (chance), for the last {self.flat * self.window} steps (to step {step}): "
                    "the network predicts the class frequencies and ignores the image. " + (self.fixes or STALL_FIXES))
        lowest, self.lowest = self.lowest, min(self.lowest, mean)
        steps = f"over steps {step - self.window + 1}-{step}"
        if mean > self.blowup * self.chance and "blowup" not in self.said:
            self.said.update(("blowup", "diverged"))
            return (f"the training loss averaged {mean:.3f} {steps}, {mean / self.chance:.1f}x chance (ln "
                    f"{self.num_classes} = {self.chance:.3f}): the logits are blowing up. " + BLOWUP_FIXES)
        if mean > self.chance > lowest / self.diverged and "diverged" not in self.said:
            self.said.add("diverged")
            return (f"the training loss averaged {mean:.3f} {steps}, back above chance (ln {self.num_classes} = "
                    f"{self.chance:.3f}) after falling to {lowest:.3f}: training diverged and the network is losing "
                    "what it learnt. " + BLOWUP_FIXES)
        return None


STALL_FIXES = ("Likely fixes: the paper's literal init (bias 1, N(0, 0.01) weights on 0-255 inputs) is known to do "
               "this; use --recipe paper (Krizhevsky's own conventions) rather than paper-literal, or "
               "--model-kwargs '{\"init_bias\": 0.1}' (Caffe's fix); a lower --lr; and "
               "--diagnose to see which layer carries no signal.")
GENERIC_STALL_FIXES = ("Likely fixes: a different --lr (too high saturates, too low never leaves the start; sigmoid "
                       "and tanh nets often need a larger one or more epochs), a different init, and --diagnose to see "
                       "which layer carries no signal.")
BLOWUP_FIXES = ("Likely fixes: a lower --lr (e.g. divide it by 10), --clip-grad-norm (e.g. 4x the gradient norm of the "
                "first steps; it steadied the paper recipe on grey photos, docs/paper_recipe.md), a smaller init, or "
                "--diagnose to see which layer.")


def stall_fixes(model) -> str:
    """The stall warning's advice: the paper-init fixes for the AlexNet family, general ones for other nets."""
    from alexnet.models import AlexNet, TwoTowerAlexNet
    return STALL_FIXES if isinstance(model, (AlexNet, TwoTowerAlexNet)) else GENERIC_STALL_FIXES
