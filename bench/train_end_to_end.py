"""End-to-end training speed: `alexnet train` (paper and d2l recipes) vs the torchvision way, same run.

    .venv/bin/python bench/train_end_to_end.py             # batch 64, 2 workers, 2 + 6 steps x 3 repeats
    .venv/bin/python bench/train_end_to_end.py --quick     # a smoke run: batch 8, 2 timed steps, 1 repeat

paper: a folder of 3000 real JPEG photos (bench/photos.py, the same as bench/input_pipeline.py), 9 classes.
  torchvision way: ImageFolder -> Resize(256), RandomCrop(224), RandomHorizontalFlip, ToTensor,
      Normalize -> DataLoader(shuffle, W worker processes) -> alexnet_2012 (the same grouped LRN net)
      -> SGD(lr 0.01, momentum 0.9, weight decay 5e-4): the plain loop, no extras.
  ours: ``alexnet.train.loop.train(resolve_config("paper", max_steps=...))``, i.e. `alexnet train --recipe paper`:
      the folder prepared once into a 256x256 uint8 cache (timed separately, the one-off), then
      BatchLoader with W threads + TrainTransform (crop, flip, PCA lighting, mean image, 0-255 inputs),
      channels_last, the whole training loop as shipped (progress, NaN check, signal check; since issue 9 also
      the recipe's gradient clipping, about 17 ms of a ~2.5 s step).
d2l: Fashion-MNIST (builtin) at 224 px.
  torchvision way (d2l's load_data_fashion_mnist(resize=224)): torchvision.datasets.FashionMNIST ->
      Resize(224), ToTensor per sample with PIL -> DataLoader(shuffle, W workers) -> alexnet_d2l -> SGD(lr 0.01).
  ours: `alexnet train --recipe d2l`: the 28x28 uint8 arrays in memory, batched resize to 224 in W threads.
Same batch, same torch threads, same network and optimiser on both sides. Each run is fresh; a rate is
images/s between the end of optimizer step ``--warmup`` and the end of the last step (a global
optimizer step hook timestamps both sides alike), so worker start-up, the first batches and the
one-off prepare are excluded. Runs alternate torchvision/ours (ABBA...); rates are medians over
``--repeats``, the ratio is the median of the ratios of runs made back to back.
"model step alone" is ours' network + SGD on one fixed batch in the same memory format: the ceiling
for a loop that feeds it.
"""
from __future__ import annotations

import argparse
import gzip
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from alexnet.util import memory

memory.configure()   # the memory settings, explicitly, before torch is imported (see alexnet.util.memory)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
from torch.optim.optimizer import register_optimizer_step_post_hook  # noqa: E402

from machine import load_average, machine  # noqa: E402  (bench/machine.py)
from photos import class_names, make_photo_folder  # noqa: E402  (bench/photos.py)

HERE = Path(__file__).resolve().parent
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@contextmanager
def step_clock(args):
    """perf_counter() at the end of every optimizer step taken inside the block (either side).

    On CUDA the device is synchronised at the two steps the rate is measured between, and only there.
    """
    stamps: list[float] = []
    sync_at = {args.warmup, args.warmup + args.steps} if torch.device(args.device).type == "cuda" else set()

    def stamp(*_) -> None:
        if len(stamps) + 1 in sync_at:
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    handle = register_optimizer_step_post_hook(stamp)
    try:
        yield stamps
    finally:
        handle.remove()


def steady_rate(stamps: list[float], warmup: int, batch_size: int) -> float:
    """Images per second from the end of step ``warmup`` to the end of the last step."""
    if warmup < 1 or len(stamps) <= warmup:
        raise RuntimeError(f"{len(stamps)} optimizer steps after {warmup} warm-up steps: need warm-up >= 1 "
                           "and more steps than that")
    return (len(stamps) - warmup) * batch_size / (stamps[-1] - stamps[warmup - 1])


# ---- the torchvision way ------------------------------------------------------------------------

def torchvision_run(dataset, model_name: str, num_classes: int, args, **sgd) -> tuple[float, float]:
    """The plain loop: DataLoader -> model -> cross entropy -> SGD. (images/s, mean training loss)."""
    from alexnet import create_model
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = create_model(model_name, num_classes=num_classes).to(device)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), **sgd)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                                         drop_last=True, persistent_workers=args.workers > 0,
                                         pin_memory=device.type == "cuda")
    batches, loss_sum = iter(loader), torch.zeros((), device=device)
    with step_clock(args) as stamps:
        for _ in range(args.warmup + args.steps):
            try:
                x, y = next(batches)
            except StopIteration:
                batches = iter(loader)
                x, y = next(batches)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
    del batches, loader
    return steady_rate(stamps, args.warmup, args.batch_size), loss_sum.item() / (args.warmup + args.steps)


def photo_dataset(folder: Path):
    T = torchvision.transforms
    return torchvision.datasets.ImageFolder(str(folder), transform=T.Compose([
        T.Resize(256), T.RandomCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]))


def fashion_mnist_dataset(root: Path):
    """torchvision.datasets.FashionMNIST at 224 px as d2l loads it, from the builtin's idx files."""
    from alexnet.data.builtin import find_builtin
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    source = Path(find_builtin("fashion-mnist", progress=False))
    for gz in source.glob("*-ubyte.gz"):          # torchvision reads the decompressed files
        target = raw / gz.name[:-3]
        if not target.exists():
            with gzip.open(gz) as f_in, open(target.with_suffix(".part"), "wb") as f_out:
                shutil.copyfileobj(f_in, f_out)
            target.with_suffix(".part").replace(target)
    T = torchvision.transforms
    return torchvision.datasets.FashionMNIST(str(root), train=True, download=False,
                                             transform=T.Compose([T.Resize(224), T.ToTensor()]))


# ---- ours ----------------------------------------------------------------------------------------

def ours_run(recipe: str, data: str, args) -> tuple[float, float]:
    """`alexnet train --recipe R --max-steps warmup+steps`, as shipped. (images/s, mean training loss)."""
    from alexnet.train.recipes import resolve_config
    from alexnet.train.loop import train
    from alexnet.checkpoint import load_checkpoint
    with tempfile.TemporaryDirectory(prefix=f"bench-{recipe}-") as out:
        cfg = resolve_config(recipe, data=data, batch_size=args.batch_size, max_steps=args.warmup + args.steps,
                             loader_threads=args.workers, workers=args.workers, device=args.device, out=out,
                             quiet=True)
        with step_clock(args) as stamps:
            result = train(cfg)
        last = load_checkpoint(Path(out) / "last.pt")["position"].get("partial") or {}
    if result.get("stopped_at") != args.warmup + args.steps:
        raise RuntimeError(f"{recipe}: training stopped at step {result.get('stopped_at')}, not at --max-steps; "
                           "an epoch ended inside the timed window (use fewer --steps or a smaller --batch-size)")
    loss = last.get("loss_sum", float("nan")) / max(last.get("seen", 1), 1)
    return steady_rate(stamps, args.warmup, args.batch_size), loss


def model_step_run(model_name: str, num_classes: int, in_channels: int, args, **sgd) -> float:
    """Ours' network and optimiser on one fixed channels_last batch: the step with no data and no loop."""
    from alexnet import create_model
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=num_classes).to(args.device, memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), **sgd)
    x = torch.randn(args.batch_size, in_channels, 224, 224, device=args.device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (args.batch_size,), device=args.device)
    with step_clock(args) as stamps:
        for _ in range(args.warmup + args.steps):
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return steady_rate(stamps, args.warmup, args.batch_size)


# ---- report ----------------------------------------------------------------------------------------

def spread(values: list[float], digits: int = 1) -> str:
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def compare(name: str, baseline, ours, ceiling, repeats: int) -> dict:
    """Alternate the two sides ``repeats`` times (baseline first on even repeats); medians."""
    rates: dict[str, list[float]] = {"torchvision": [], "ours": [], "ceiling": []}
    losses: dict[str, float] = {}
    for r in range(repeats):
        order = [("torchvision", baseline), ("ours", ours)]
        for side, run in (order if r % 2 == 0 else order[::-1]):
            rate, losses[side] = run()
            rates[side].append(rate)
            print(f"  {name} repeat {r + 1}/{repeats}: {side:<11} {rate:7.1f} img/s  (loss {losses[side]:.3f}, "
                  f"load {load_average()})", flush=True)
        rates["ceiling"].append(ceiling())
        print(f"  {name} repeat {r + 1}/{repeats}: model step alone {rates['ceiling'][-1]:7.1f} img/s", flush=True)
    # runs next to each other in time share the background load: compare them pairwise
    ratios = [o / t for o, t in zip(rates["ours"], rates["torchvision"])]
    bounds = [c / t for c, t in zip(rates["ceiling"], rates["torchvision"])]
    return {"name": name, "rates": rates, "ratios": ratios, "bounds": bounds,
            **{k: statistics.median(v) for k, v in rates.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="timed optimizer steps per run (default 6)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first (default 2)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2,
                        help="DataLoader worker processes / BatchLoader threads and prepare's decode processes")
    parser.add_argument("--repeats", type=int, default=3, help="fresh runs of each side (median reported)")
    parser.add_argument("--files", type=int, default=3000, help="JPEGs in the photo folder (default 3000)")
    parser.add_argument("--recipes", default="paper,d2l", help="comma-separated: paper, d2l")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i], for both sides")
    parser.add_argument("--data-dir", type=Path, default=HERE / "_data", help="where photos and caches live")
    parser.add_argument("--quick", action="store_true", help="a smoke run, not a measurement")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.batch_size, args.repeats, args.files = 2, 1, 8, 1, 48
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be >= 1 (the clock starts at the end of the last warm-up step)")
    recipes = [r for r in args.recipes.split(",") if r]
    if not set(recipes) <= {"paper", "d2l"}:
        parser.error(f"--recipes: choose from paper, d2l; got {args.recipes}")

    print(f"machine: {machine()}")
    print(f"load average at start: {load_average()}")
    print(f"batch {args.batch_size}, {args.workers} workers, {args.warmup} warm-up + {args.steps} timed steps per run, "
          f"{args.repeats} repeats (median), device {args.device}", flush=True)
    os.environ["ALEXNET_CACHE"] = str(args.data_dir / "alexnet-cache")   # implicit prepare caches, reused
    from alexnet.data import open_dataset
    from alexnet.data.sources import implicit_cache_path
    from alexnet.data.resolve import resolve_source
    rows, notes = [], []

    if "paper" in recipes:
        folder = make_photo_folder(args.data_dir, args.files, args.workers)
        cache = implicit_cache_path(resolve_source(str(folder)), None, image_column=None, label_column=None)
        shutil.rmtree(cache, ignore_errors=True)
        start = time.perf_counter()     # the one-off: what `alexnet train` does first on a new folder
        train_set = open_dataset(str(folder), "train", workers=args.workers, progress=False)
        prepare_s = time.perf_counter() - start
        if not os.path.isdir(cache):    # the removed cache was the one train() uses, and was built again
            raise RuntimeError(f"expected open_dataset to prepare {cache}; got {train_set.source}")
        steps_per_epoch = len(train_set) // args.batch_size
        if args.warmup + args.steps >= steps_per_epoch:
            parser.error(f"--warmup + --steps must be below the {steps_per_epoch} steps of an epoch")
        dataset = photo_dataset(folder)
        k = len(class_names())
        sgd = dict(lr=0.01, momentum=0.9, weight_decay=5e-4)
        print(f"paper: {args.files} JPEGs in {folder}, {k} classes; one-off prepare (decode + cache + stats, "
              f"{args.workers} processes): {prepare_s:.1f} s", flush=True)
        rows.append(compare("paper", lambda: torchvision_run(dataset, "alexnet_2012", k, args, **sgd),
                            lambda: ours_run("paper", str(folder), args),
                            lambda: model_step_run("alexnet_2012", k, 3, args, **sgd), args.repeats))
        notes.append(f"paper one-off prepare: {prepare_s:.1f} s for {args.files} JPEGs "
                     f"(= {args.files / rows[-1]['torchvision']:.0f} s of torchvision-way training at its rate)")

    if "d2l" in recipes:
        start = time.perf_counter()
        open_dataset("fashion-mnist", "train", progress=False)
        load_s = time.perf_counter() - start
        dataset = fashion_mnist_dataset(args.data_dir)
        print(f"d2l: Fashion-MNIST, {len(dataset)} train images; one-off load of the idx arrays: {load_s:.1f} s",
              flush=True)
        sgd = dict(lr=0.01)
        rows.append(compare("d2l", lambda: torchvision_run(dataset, "alexnet_d2l", 10, args, **sgd),
                            lambda: ours_run("d2l", "fashion-mnist", args),
                            lambda: model_step_run("alexnet_d2l", 10, 1, args, **sgd), args.repeats))
        notes.append(f"d2l one-off load of the idx arrays: {load_s:.1f} s")

    gpu = f", {torch.cuda.get_device_name(args.device)}" if torch.device(args.device).type == "cuda" else ""
    print(f"\nmachine: {machine()}{gpu}; load average at end: {load_average()}")
    print(f"batch {args.batch_size}, {args.workers} workers, {args.warmup} warm-up + {args.steps} timed steps, "
          f"median of {args.repeats} fresh runs (min-max in brackets)")
    print(f"{'recipe':<7} {'torchvision way img/s':>22} {'ours img/s':>19} {'ours/torchvision':>23} "
          f"{'model step alone img/s':>24}")
    for row in rows:
        r = row["rates"]
        print(f"{row['name']:<7} {row['torchvision']:>7.1f} ({spread(r['torchvision']):>12}) "
              f"{row['ours']:>6.1f} ({spread(r['ours']):>10}) {statistics.median(row['ratios']):>8.2f}x "
              f"({spread(row['ratios'], 2):>11}) {row['ceiling']:>9.1f} ({spread(r['ceiling']):>11})")
    print("ours/torchvision: median of the ratios of runs made back to back (the machine's load drifts)")
    for row in rows:
        print(f"{row['name']}: ours / torchvision way = {statistics.median(row['ratios']):.2f}x (target >= 2x); "
              f"ours reaches {row['ours'] / row['ceiling']:.0%} of the model step alone, which bounds any input "
              f"pipeline to {statistics.median(row['bounds']):.2f}x the torchvision way on this machine")
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
