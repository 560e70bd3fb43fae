"""The paper's two towers [3.2] on CUDA: does a stream per tower overlap them, and what do they cost?

    python bench/towers.py                      # batch 128, fp32 and bf16 autocast, every placement here
    python bench/towers.py --quick              # batch 32, fewer rounds: a smoke run
    python bench/towers.py --device cpu --quick # the same placements on the CPU (no streams there)

Times one SGD step (forward, loss, backward, update; momentum 0.9, decay 5e-4) of ``alexnet_2012`` as
(a) the grouped model on one device, (b) two towers on that device, each on a CUDA stream of its own (as
shipped), (c) the same two towers with ``overlap = False`` (both on the ambient stream, one after the
other) and, where a second GPU exists, (d) two towers on cuda:0 and cuda:1. Before timing, each model's
output on the same batch, and the gradients of its first SGD step (under the grouped model's keys),
are compared with (a)'s: the largest difference relative to the largest value, over all
tensors (PyTorch's defaults: TF32 convolutions on CUDA). Rounds are round robin over the models, so load from
elsewhere falls on all alike; a round is ``--steps`` steps between two ``torch.cuda.synchronize()``;
rates are medians over rounds and the ratios medians of each round's own ratios.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time

from alexnet.util import memory

memory.configure()   # the memory settings, explicitly, before torch is imported (see alexnet.util.memory)

import torch  # noqa: E402
from torch import nn  # noqa: E402

import alexnet  # noqa: E402
from jsonout import check_json_path, write_json  # noqa: E402  (bench/jsonout.py)
from machine import machine  # noqa: E402  (bench/machine.py)


def placements(device: str) -> dict[str, tuple | None]:
    """Name -> towers argument (None: the grouped model on ``device``)."""
    if device == "cpu":
        return {"(a) grouped, cpu": None, "(b) towers cpu, cpu": ("cpu", "cpu")}
    found = {"(a) grouped, cuda:0": None, "(b) towers cuda:0, cuda:0, a stream each": ("cuda:0", "cuda:0"),
             "(c) towers cuda:0, cuda:0, no streams": ("cuda:0", "cuda:0")}
    if torch.cuda.device_count() > 1:
        found["(d) towers cuda:0, cuda:1, a stream each"] = ("cuda:0", "cuda:1")
    return found


def build(towers: tuple | None, device: str, state: dict, overlap: bool) -> nn.Module:
    model = alexnet.create_model("alexnet_2012", dropout=0.0, **({"towers": towers} if towers else {}))
    model.load_state_dict(state)
    if towers is None:
        model.to(device)
    else:
        model.overlap = overlap
    return model.to(memory_format=torch.channels_last).train()


def grads_by_key(model: nn.Module) -> dict[str, torch.Tensor]:
    """Each parameter's gradient under its state-dict key: the towers' state dict joins their halves into
    the grouped model's keys and shapes, so the gradients are swapped in for the weights while it is read."""
    params = list(model.parameters())
    weights = [p.data for p in params]
    try:
        for p in params:
            p.data = p.grad
        return {k: v.clone() for k, v in model.state_dict().items()}
    finally:
        for p, w in zip(params, weights):
            p.data = w


def autocast(amp: bool):
    return torch.autocast("cuda", torch.bfloat16) if amp else contextlib.nullcontext()


class Stepper:
    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, amp: bool):
        self.model, self.x, self.y, self.amp = model, x, y, amp
        self.optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)

    def run(self, steps: int) -> float:
        cuda = self.x.is_cuda
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            self.optimizer.zero_grad(set_to_none=True)
            with autocast(self.amp):
                loss = nn.functional.cross_entropy(self.model(self.x), self.y)
            loss.backward()
            self.optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / steps


def bench(args: argparse.Namespace, amp: bool) -> dict:
    torch.manual_seed(0)
    state = alexnet.create_model("alexnet_2012", dropout=0.0).state_dict()
    x = torch.randn(args.batch_size, 3, 224, 224, device=args.device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (args.batch_size,), device=args.device)
    steppers, worst, step_diff = {}, {}, {}
    reference = grad_reference = None
    for name, towers in placements(args.device).items():
        model = build(towers, args.device, state, overlap="no streams" not in name)
        with torch.no_grad(), autocast(amp):
            out = model.eval()(x).float()
        model.train()
        reference = out if reference is None else reference
        worst[name] = float((out - reference).abs().max() / reference.abs().max())
        steppers[name] = Stepper(model, x, y, amp)
        steppers[name].run(1)   # the first SGD step: its gradients, compared in the grouped model's keys
        grads = grads_by_key(model)
        grad_reference = grads if grad_reference is None else grad_reference
        step_diff[name] = max(float((grads[k] - r).abs().max() / r.abs().max().clamp_min(1e-30))
                              for k, r in grad_reference.items())
    for stepper in steppers.values():
        if args.warmup:
            stepper.run(args.warmup)
    times: dict[str, list[float]] = {name: [] for name in steppers}
    for _ in range(args.rounds):
        for name, stepper in steppers.items():
            times[name].append(stepper.run(args.steps))
    first = next(iter(times))
    return {"amp": "bf16" if amp else "fp32", "rows": [
        {"model": name, "img_per_s": args.batch_size / statistics.median(t),
         "x_grouped": statistics.median(g / s for g, s in zip(times[first], t)),
         "output_rel_diff": worst[name], "first_step_grad_rel_diff": step_diff[name]} for name, t in times.items()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="steps per round (default 10)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds; medians are reported (default 7)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model first (default 3)")
    parser.add_argument("--quick", action="store_true", help="batch 32, 2 steps x 3 rounds, 1 warm-up")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON (atomically)")
    args = parser.parse_args()
    check_json_path(parser, args.json)
    if args.quick:
        args.batch_size, args.steps, args.rounds, args.warmup = 32, 2, 3, 1
    if min(args.batch_size, args.steps, args.rounds) < 1 or args.warmup < 0:
        parser.error("--batch-size, --steps and --rounds must be at least 1, --warmup at least 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench/towers.py: CUDA is not available here; --device cpu times the CPU placements")
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    results = [bench(args, amp) for amp in ((False, True) if args.device == "cuda" else (False,))]
    print(f"machine: {machine()}")
    print(f"alexnet_2012, batch {args.batch_size}, 224 px, channels_last, SGD step; {args.steps} steps x "
          f"{args.rounds} rounds, median")
    for result in results:
        print(f"{result['amp']}:  {'model':<44} {'img/s':>8} {'x (a)':>7} {'output vs (a)':>14} {'1st-step grads vs (a)':>22}")
        for row in result["rows"]:
            print(f"       {row['model']:<44} {row['img_per_s']:>8.1f} {row['x_grouped']:>6.2f}x "
                  f"{row['output_rel_diff']:>14.1e} {row['first_step_grad_rel_diff']:>22.1e}")
    if args.json:
        write_json(args.json, {"command": ["bench/towers.py", *sys.argv[1:]], "machine": machine(),
                               "batch_size": args.batch_size, "results": results})


if __name__ == "__main__":
    main()
