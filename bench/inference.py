"""Inference speed: alexnet_2012 and alexnet_owt on four engines side by side, in one process on one machine.

    .venv/bin/python bench/inference.py            # batch 1 latency (p50/p99) and batch 64 throughput
    .venv/bin/python bench/inference.py --quick    # a smoke run: few calls, batch 8 (well under a minute)
    .venv/bin/python bench/inference.py --json docs/inference/inference.json   # also the numbers as JSON
    .venv/bin/python bench/inference.py --busy 1 [--threads 1]   # with one core kept busy by another process

Engines: (a) PyTorch eager with torchvision's ``alexnet`` (the baseline every ratio is against); for each of
``alexnet_2012`` and ``alexnet_owt``: (b) our eager path as predict runs it (channels_last; for alexnet_2012 the
fused ReLU-LRN-pool kernel; fc6-fc8 on oneDNN for both: alexnet_owt *is* torchvision's class, so its (b) is (a)'s
network with ``alexnet.inference.backends.onednn_linear``), (c) TorchScript (``torch.jit.trace`` as ``alexnet export
--format torchscript`` writes it, then ``torch.jit.freeze``), (d) onnxruntime on the ONNX file ``alexnet export
--format onnx`` writes (CPU provider); and (e) alexnet_2012 in stock torch.nn modules, PyTorch eager on the paper's
own network (torchvision has none: (a) is the 2014 variant, without LRN or towers).
All run in inference mode with random weights on random 224x224 inputs, the torch thread count and onnxruntime's
default (one thread per physical core) as they are, or both set by ``--threads``. Each round times every engine
in turn, so load from other processes falls on all of them alike; latency percentiles pool every round's batch-1
calls (the latency ratio is of p50s), throughput is the median over rounds and its ratio the median of the rounds'
own ratios against (a). The machine is shared: the load average is printed before and after, and numbers from a
loaded machine compare only within the run; ``--busy N`` loads it on purpose, N spinning processes while every
engine is timed. Last, for each model and regime: the fastest engine, and the engine ``--backend auto`` picks for
a checkpoint (``alexnet.inference.backends.auto_backend``: batch 1 as a stream of single images, as ``alexnet serve`` runs
it; batch 64 as ``alexnet predict`` on files) with its ratio against the fastest other engine running the same
network, and against (a).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from typing import Callable
import multiprocessing

from alexnet.util import memory

memory.configure()   # the memory settings, explicitly, before torch is imported (see alexnet.util.memory)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
from torch import nn  # noqa: E402

import alexnet  # noqa: E402
from alexnet.inference import backends  # noqa: E402
from alexnet.interchange.export import INPUT, to_onnx, to_torchscript  # noqa: E402
from alexnet.ops import linear as linear_ops, lrn as lrn_ops  # noqa: E402
from jsonout import check_json_path, write_json  # noqa: E402  (bench/jsonout.py)
from machine import load_average, machine  # noqa: E402  (bench/machine.py)

Engine = Callable[[torch.Tensor], object]


def eager(model: torch.nn.Module) -> Engine:
    model = model.eval().to(memory_format=torch.channels_last)

    def run(x: torch.Tensor):
        with torch.inference_mode():
            return model(x.contiguous(memory_format=torch.channels_last))
    return run


def torchscript(model: torch.nn.Module, example: torch.Tensor) -> Engine:
    with warnings.catch_warnings():   # torch.jit's deprecation note
        warnings.simplefilter("ignore")
        frozen = torch.jit.freeze(to_torchscript(model, example).eval())

    def run(x: torch.Tensor):
        with torch.inference_mode():
            return frozen(x)
    return run


def onnxruntime_engine(model: torch.nn.Module, example: torch.Tensor, threads: int = 0) -> Engine:
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads           # 0: onnxruntime's default, one per physical core
    session = onnxruntime.InferenceSession(to_onnx(model, example), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {INPUT: x.numpy()})[0]


class StockLRN(nn.Module):
    """The paper's LRN [3.3] with PyTorch's own ``F.local_response_norm`` (what ``nn.LocalResponseNorm`` runs; it
    puts alpha on the window mean, so the paper's alpha on the sum becomes alpha x size), once per tower."""

    def __init__(self, norm) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = norm.size, norm.alpha_sum * norm.size, norm.beta, norm.k
        self.groups = norm.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.local_response_norm(part, self.size, self.alpha, self.beta, self.k)
                          for part in x.chunk(self.groups, dim=1)], dim=1)


def stock(model: torch.nn.Module) -> torch.nn.Module:
    """``alexnet_2012`` as one writes it with torch.nn alone: the same weights and logits, but LRN by
    ``F.local_response_norm`` per tower, fc6-fc8 as plain ``nn.Linear`` (MKL), ReLU, LRN and pool module by module."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, lrn_ops.LocalResponseNorm):
                setattr(parent, name, StockLRN(child))
            elif isinstance(child, nn.Linear):
                child.__class__ = nn.Linear
    model.fuse = False
    return model


def engines(threads: int = 0) -> dict[str, Engine]:
    torch.manual_seed(0)
    example = torch.randn(1, 3, 224, 224)
    built = {"(a) torchvision alexnet, eager [baseline]": eager(torchvision.models.alexnet())}
    for name in ("alexnet_2012", "alexnet_owt"):
        model = alexnet.create_model(name)     # one set of weights; each engine gets its own copy (export changes it)
        label = "fused LRN, oneDNN fc" if name == "alexnet_2012" else "torchvision's class, oneDNN fc"
        built[f"(b) {name}, eager ({label})"] = eager(backends.onednn_linear(copy.deepcopy(model)))
        built[f"(c) {name}, TorchScript (traced, frozen)"] = torchscript(copy.deepcopy(model), example)
        built[f"(d) {name}, onnxruntime (CPU)"] = onnxruntime_engine(copy.deepcopy(model), example, threads)
        if name == "alexnet_2012":    # torchvision has no paper network: the same one in stock torch.nn modules
            built["(e) alexnet_2012, eager, stock torch.nn layers"] = eager(
                stock(copy.deepcopy(model)))
    return built


def check_agreement(built: dict[str, Engine]) -> None:
    """Each model's engines give the same logits: they time the same computation."""
    x = torch.randn(2, 3, 224, 224)
    for name in ("alexnet_2012", "alexnet_owt"):
        outs = [torch.as_tensor(np.asarray(run(x))).float().numpy() for label, run in built.items() if name in label]
        spread = max(float(np.abs(o - outs[0]).max()) for o in outs)
        if not spread <= 1e-3 * max(1.0, float(np.abs(outs[0]).max())):
            raise SystemExit(f"{name}: the engines disagree (max |logit diff| {spread:.3g}); the benchmark is void")


def measure(built: dict[str, Engine], args: argparse.Namespace) -> tuple[dict, dict]:
    one, batch = torch.randn(1, 3, 224, 224), torch.randn(args.batch_size, 3, 224, 224)
    for run in built.values():
        for _ in range(args.warmup):
            run(one)
        run(batch)
    latencies: dict[str, list[float]] = {label: [] for label in built}
    rates: dict[str, list[float]] = {label: [] for label in built}
    for _ in range(args.rounds):     # round robin: every engine sees the same background load
        for label, run in built.items():
            for _ in range(args.calls):
                start = time.perf_counter()
                run(one)
                latencies[label].append(time.perf_counter() - start)
            start = time.perf_counter()
            run(batch)
            rates[label].append(args.batch_size / (time.perf_counter() - start))
    return latencies, rates


def table(latencies: dict, rates: dict, args: argparse.Namespace) -> dict:
    """Per engine: batch-1 p50/p99 (ms), batch-N img/s (median over rounds) and both ratios against (a)."""
    base = next(iter(latencies))

    def p(values: list[float], q: float) -> float:
        return 1e3 * float(np.percentile(values, q))
    return {label: {"b1_p50_ms": p(latencies[label], 50), "b1_p99_ms": p(latencies[label], 99),
                    "b1_x_base": p(latencies[base], 50) / p(latencies[label], 50),
                    "bN_img_s": statistics.median(rates[label]),
                    "bN_x_base": statistics.median(rates[label][r] / rates[base][r] for r in range(args.rounds))}
            for label in latencies}


def auto_choice(name: str, regime: str) -> str:
    """The engine letter ``--backend auto`` runs a checkpoint of ``name`` on, on the CPU: b1, a stream of single
    images (``Predictor(backend="auto")``, a server); bN, a list of files (``alexnet predict``)."""
    images = None if regime == "b1" else 1000
    return "d" if backends.auto_backend("model.pt", "cpu", images, model=name) == "onnxruntime" else "b"


def summary(rows: dict) -> dict:
    """Per model and regime: the fastest engine, auto's choice, and its speed over the fastest other engine running
    the *same network* (> 1: faster) and over (a), torchvision's eager alexnet. For alexnet_owt (a) is the same
    network (torchvision's class); for alexnet_2012 it is a different one (the 2014 variant: no LRN, no towers,
    64 conv1 kernels), so the same-network field leaves it out and ``auto_x_torchvision`` reports it on its own.
    Latency compares batch-1 p50s; throughput the median img/s."""
    out = {}
    for name in ("alexnet_2012", "alexnet_owt"):
        engines = {label[1]: row for label, row in rows.items() if name in label or label.startswith("(a)")}
        for regime, key in (("b1", "b1_p50_ms"), ("bN", "bN_img_s")):
            ours = auto_choice(name, regime)
            speed = {e: (1 / r[key] if key.endswith("ms") else r[key]) for e, r in engines.items()}
            same = [e for e in engines if e != ours and (e != "a" or name == "alexnet_owt")]
            other = max(same, key=speed.get)
            out[f"{name} {regime}"] = {"fastest": max(speed, key=speed.get), "auto": ours, "fastest_other": other,
                                       "auto_x_fastest_other": speed[ours] / speed[other],
                                       "auto_x_torchvision": speed[ours] / speed["a"]}
    return out


def report(rows: dict, args: argparse.Namespace) -> None:
    print(f"{'engine':<58} {'b1 p50 ms':>9} {'p99 ms':>7} {'x base':>7} {f'b{args.batch_size} img/s':>11} "
          f"{'x base':>7}")
    for label, r in rows.items():
        print(f"{label:<58} {r['b1_p50_ms']:>9.2f} {r['b1_p99_ms']:>7.2f} {r['b1_x_base']:>6.2f}x "
              f"{r['bN_img_s']:>11.1f} {r['bN_x_base']:>6.2f}x")
    print("x base: (a)'s p50 / the engine's (batch 1); the median over rounds of the engine's img/s / (a)'s "
          f"(batch {args.batch_size}); > 1 is faster than torchvision eager")
    for key, s in summary(rows).items():
        print(f"{key.replace('bN', f'b{args.batch_size}')}: fastest ({s['fastest']}); --backend auto "
              f"({s['auto']}) is {s['auto_x_fastest_other']:.2f}x the fastest other engine of the same network "
              f"({s['fastest_other']}), {s['auto_x_torchvision']:.2f}x (a)")
    print("--backend auto: b1, a stream of single images (alexnet serve); b64, files (alexnet predict)")


def spin() -> None:
    """A busy process (``--busy``): it keeps one core's worth of run queue occupied until terminated."""
    while True:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=64, help="the throughput batch (default 64)")
    parser.add_argument("--calls", type=int, default=20, help="batch-1 calls per engine per round (default 20)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batch-1 calls per engine first (default 3)")
    parser.add_argument("--quick", action="store_true", help="batch 8, 3 calls x 2 rounds, 1 warm-up: a smoke run")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON (atomically)")
    parser.add_argument("--busy", type=int, default=0, metavar="N",
                        help="N processes spinning on the CPU while every engine is timed: a loaded machine, on purpose")
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="torch and onnxruntime intra-op threads (0: as they are, torch's count and onnxruntime's "
                             "default); alexnet serve --threads sets the same")
    args = parser.parse_args()
    check_json_path(parser, args.json)   # named now, not after minutes of measuring
    if args.quick:
        args.batch_size, args.calls, args.rounds, args.warmup = 8, 3, 2, 1
    print(f"machine: {machine()}")
    before = load_average()
    print(f"load average before: {before} (a shared machine: compare numbers within this run only)")
    if args.threads:
        torch.set_num_threads(args.threads)
    built = engines(args.threads)
    check_agreement(built)
    import onnxruntime
    print(f"LRN: {lrn_ops.implementation()}; fc: {linear_ops.implementation()}; onnxruntime "
          f"{onnxruntime.__version__}; 224x224 inputs, {args.rounds} rounds x {args.calls} batch-1 calls and one "
          f"batch-{args.batch_size} call per engine")
    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.busy)]
    for p in spinners:
        p.start()
    try:
        latencies, rates = measure(built, args)
    finally:
        for p in spinners:
            p.terminate()
    rows = table(latencies, rates, args)
    report(rows, args)
    after = load_average()
    print(f"load average after: {after}")
    if args.json:
        write_json(args.json, {
            "command": "python bench/inference.py " + " ".join(sys.argv[1:]), "machine": machine(),
            "load_average_before": before, "load_average_after": after, "onnxruntime": onnxruntime.__version__,
            "busy": args.busy, "threads": args.threads or torch.get_num_threads(),
            "batch_size": args.batch_size, "rounds": args.rounds, "calls": args.calls, "warmup": args.warmup,
            "engines": rows, "summary": summary(rows),
            "raw": {"b1_seconds": latencies, "bN_img_s": rates}})


if __name__ == "__main__":
    main()
