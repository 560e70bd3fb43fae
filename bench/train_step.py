"""What LRN costs a training step: five AlexNets side by side on the same batch, threads and machine.

    .venv/bin/python bench/train_step.py              # batch 64, 224 px, channels_last
    .venv/bin/python bench/train_step.py --quick      # batch 16, one step per round: a smoke run (about a minute)
    .venv/bin/python bench/train_step.py --lrn-only   # LRN forward+backward alone, ours vs torch

(a) torchvision ``alexnet``; (b) ``alexnet_2012`` with ``torch.nn.LocalResponseNorm(5, 5e-4, 0.75, 2)``
(the paper's constants in PyTorch's alpha-on-the-mean form); (c) ``alexnet_2012`` as shipped: our LRN,
run fused with the ReLU before it and the max pool after it (``relu_lrn_max_pool``); (d) ``alexnet_2012``
without LRN (ReLU and pool as PyTorch ops), the ceiling for the rest of its math; (e) ``alexnet_2012`` with
``--recipe paper``'s model arguments (cuda-convnet2's LRN alpha / n, conv1's LRN before its ReLU, so conv1's block
runs unfused: our LRN, then ReLU and pool as PyTorch ops; conv2's stays fused). (b)-(e) share everything else,
fc6-fc8 on oneDNN included; all five run in one process with alexnet's memory settings.
Each repetition (round) times ``--steps`` SGD steps of every model in turn, so load from other
processes falls on all five alike; rates are medians over rounds, warm-up excluded, and the ratios are
medians of each round's own ratios. GFLOP/s counts 3 x 2 x the multiply-adds of conv and FC layers
per training image (forward, and backward for inputs and weights).
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

from alexnet.util import memory

memory.configure()   # the memory settings, explicitly, before torch is imported (see alexnet.util.memory)

import alexnet  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from torch import nn  # noqa: E402

from alexnet.ops import linear as linear_ops, lrn as lrn_ops  # noqa: E402
from alexnet.train.recipes import RECIPES  # noqa: E402
from alexnet.models.summary import layer_table  # noqa: E402
from machine import machine  # noqa: E402  (bench/machine.py)


def matmul_gflops(n: int = 2048, repeats: int = 3) -> float:
    """fp32 GFLOP/s of one large torch.mm: what the machine's BLAS reaches."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def paper_net(norm: Callable[[], nn.Module] | None) -> nn.Module:
    """``alexnet_2012``; ``norm`` replaces norm1 and norm2 when given."""
    model = alexnet.create_model("alexnet_2012")
    if norm is not None:
        model.features.norm1, model.features.norm2 = norm(), norm()
    return model


MODELS: dict[str, Callable[[], nn.Module]] = {
    "(a) torchvision alexnet": lambda: torchvision.models.alexnet(),
    "(b) alexnet_2012 + nn.LocalResponseNorm": lambda: paper_net(lambda: nn.LocalResponseNorm(5, 5e-4, 0.75, 2.0)),
    "(c) alexnet_2012 as shipped (fused LRN)": lambda: paper_net(None),
    "(d) alexnet_2012, no LRN": lambda: paper_net(nn.Identity),
    "(e) alexnet_2012, --recipe paper kwargs": lambda: alexnet.create_model(
        "alexnet_2012", **RECIPES["paper"]["model_kwargs"]),
}


class Trainer:
    """One model, its SGD optimiser and a fixed batch; ``run(steps)`` returns seconds per step."""

    def __init__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, channels_last: bool):
        self.model = model.to(memory_format=torch.channels_last) if channels_last else model
        self.model.train()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        self.images, self.labels = images, labels
        self.loss = torch.zeros(())

    def run(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            self.optimizer.zero_grad(set_to_none=True)
            self.loss = nn.functional.cross_entropy(self.model(self.images), self.labels)
            self.loss.backward()
            self.optimizer.step()
        return (time.perf_counter() - start) / steps


def train_step_bench(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    images = torch.randn(args.batch_size, 3, 224, 224)
    if args.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (args.batch_size,))
    trainers, gflop_per_image = {}, {}
    for name, build in MODELS.items():
        model = build()
        gflop_per_image[name] = 6 * sum(row.macs for row in layer_table(model, (3, 224, 224))) / 1e9
        trainers[name] = Trainer(model, images, labels, args.channels_last)
    for trainer in trainers.values():
        trainer.run(args.warmup)
    times: dict[str, list[float]] = {name: [] for name in trainers}
    peaks = []
    for _ in range(args.repeats):  # round robin: every model sees the same background load
        for name, trainer in trainers.items():
            times[name].append(trainer.run(args.steps))
        peaks.append(matmul_gflops())
    for name, trainer in trainers.items():
        if not torch.isfinite(trainer.loss).item():
            raise SystemExit(f"{name}: the loss is not finite ({trainer.loss.item()}); the benchmark is void")

    peak = statistics.median(peaks)
    rate = {name: args.batch_size / statistics.median(t) for name, t in times.items()}
    print(f"machine: {machine()}")
    print(f"LRN (c): {lrn_ops.implementation()}; fc6-fc8 (b, c, d): {linear_ops.implementation()}")
    print(f"batch {args.batch_size}, 224 px, "
          f"{'channels_last' if args.channels_last else 'contiguous (NCHW)'}, {args.steps} steps x "
          f"{args.repeats} repetitions, median; fp32 torch.mm 2048^3: {peak:.0f} GFLOP/s")
    print(f"{'model':<42} {'img/s':>7} {'range':>13} {'GFLOP/img':>10} {'GFLOP/s':>8} {'of mm':>6}")
    for name in trainers:
        spread = sorted(args.batch_size / t for t in times[name])
        achieved = rate[name] * gflop_per_image[name]
        print(f"{name:<42} {rate[name]:>7.1f} {spread[0]:>6.1f}-{spread[-1]:<6.1f} "
              f"{gflop_per_image[name]:>10.2f} {achieved:>8.1f} {achieved / peak:>6.0%}")
    a, b, c, d, e = (times[name] for name in MODELS)

    def ratio(ours: list[float], other: list[float]) -> float:  # paired: the same round's times
        return statistics.median(o / u for u, o in zip(ours, other))

    print(f"ratios (median of each round's): c/d = {ratio(c, d):.2f} (target >= 0.9), "
          f"c/b = {ratio(c, b):.2f} (target >= 2), c/a = {ratio(c, a):.2f} (target > 1), e/c = {ratio(e, c):.2f}")


def lrn_only_bench(args: argparse.Namespace) -> None:
    """LRN forward+backward alone on conv1- and conv2-shaped activations; then relu -> LRN -> pool."""
    ours = lrn_ops.LocalResponseNorm(5, 1e-4, 0.75, 2.0, alpha_on="sum")
    theirs = nn.LocalResponseNorm(5, 5e-4, 0.75, 2.0)
    chains = {
        "torch": lambda z: nn.functional.max_pool2d(theirs(nn.functional.relu(z)), 3, 2),
        "ours, unfused": lambda z: nn.functional.max_pool2d(ours(nn.functional.relu(z)), 3, 2),
        "ours, fused": lambda z: lrn_ops.relu_lrn_max_pool(z, 5, 1e-4, 0.75, 2.0, 3, 2),
    }
    print(f"machine: {machine()}")
    print(f"ours: {lrn_ops.implementation()}; {'channels_last' if args.channels_last else 'contiguous (NCHW)'}, "
          f"median of {args.repeats} x {args.steps}, batch {args.batch_size}; forward+backward (f+b) in ms")
    print(f"{'shape':<22} {'torch fwd':>10} {'ours fwd':>9} {'torch f+b':>10} {'ours f+b':>9} {'speed-up f+b':>13}   "
          f"relu-LRN-pool f+b: {' / '.join(chains)}")
    for channels, size in ((96, 55), (256, 27)):
        torch.manual_seed(0)
        x = torch.randn(args.batch_size, channels, size, size)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        z = x.clone().requires_grad_(True)
        x = x.relu().requires_grad_(True)
        results = {}
        for label, module in (("torch", theirs), ("ours", ours)):
            def forward() -> None:
                with torch.no_grad():
                    module(x)

            results[label] = [_median_ms(fn, args) for fn in (forward, _forward_backward(module, x))]
        chain_ms = [_median_ms(_forward_backward(chain, z), args) for chain in chains.values()]
        shape = f"{args.batch_size}x{channels}x{size}x{size}"
        (tf, tfb), (of, ofb) = results["torch"], results["ours"]
        print(f"{shape:<22} {tf:>8.1f}ms {of:>7.1f}ms {tfb:>8.1f}ms {ofb:>7.1f}ms {tfb / ofb:>12.1f}x   "
              f"{' / '.join(f'{ms:.1f}' for ms in chain_ms)} ms")


def _forward_backward(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        y = fn(x)
        y.backward(torch.ones_like(y))
        x.grad = None
    return step


def _median_ms(fn: Callable[[], None], args: argparse.Namespace) -> float:
    for _ in range(args.warmup):
        fn()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.steps):
            fn()
        times.append((time.perf_counter() - start) / args.steps)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per repetition (default 3)")
    parser.add_argument("--repeats", type=int, default=7, help="repetitions; the median is reported (default 7)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model first (default 2)")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                        help="keep NCHW (contiguous) tensors instead of channels_last")
    parser.add_argument("--quick", action="store_true", help="batch 16, 1 step x 3 repetitions, 1 warm-up")
    parser.add_argument("--lrn-only", action="store_true", help="time LRN forward+backward alone, ours vs torch")
    args = parser.parse_args()
    if args.quick:
        args.batch_size, args.steps, args.repeats, args.warmup = 16, 1, 3, 1
    (lrn_only_bench if args.lrn_only else train_step_bench)(args)


if __name__ == "__main__":
    main()
