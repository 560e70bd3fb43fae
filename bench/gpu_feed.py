"""Does the JPEG cache keep the GPU fed? The paper network's training rate fed from the jpeg store, over its rate on
a batch already on the device (issue 21's target: >= 0.9 with nvJPEG decoding on the GPU).

SGD steps of ``alexnet_2012`` as ``--recipe paper`` builds it (batch 128, 224 px, channels_last, fp32 as the recipe
trains; --bf16 for autocast), momentum 0.9, weight decay 5e-4:
  (a) "on device":  one batch made once and kept on the device: the network alone, the ceiling;
  (b) "gpu decode": BatchLoader over the jpeg cache of the bench photos, each batch's JPEG bytes decoded on the
                    device by nvJPEG in one call, then the paper's augmentation [4] [4.1] on the device;
  (c) "cpu decode": the same loader decoding on the CPU with --threads loader threads, the batch copied over.
Rates are medians over --rounds windows of --steps steps, after warm-up; each row also gives its ratio to (a).
On a machine without CUDA it runs on the CPU (rows a and c: a smoke test of the same code, not the target).

    python bench/gpu_feed.py --json cuda-out/gpu_feed.json     # on a GPU machine (bench/cuda_checks.sh gpu-feed)
    python bench/gpu_feed.py --quick                           # CPU smoke test
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

from alexnet.util import memory

memory.configure()   # before torch is imported (see alexnet.util.memory)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import alexnet  # noqa: E402
from jsonout import check_json_path, write_json  # noqa: E402  (bench/jsonout.py)
from machine import machine  # noqa: E402  (bench/machine.py)
from photos import make_photo_folder  # noqa: E402  (bench/photos.py)

HERE = Path(__file__).resolve().parent


def sgd_rate(model, optimizer, batches, steps: int, rounds: int, warmup: int, batch_size: int, device,
             bf16: bool) -> list[float]:
    """img/s of ``rounds`` windows of ``steps`` SGD steps on ``batches`` (an iterator of (x, y)), after warm-up."""
    def step(x, y):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    for _ in range(warmup):
        step(*next(batches))
    rates = []
    for _ in range(rounds):
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            step(*next(batches))
        sync()
        rates.append(steps * batch_size / (time.perf_counter() - start))
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=3000, help="bench photos in the jpeg cache (default 3000)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed window")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="loader threads of (c) (default: all cores)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (the paper recipe trains in fp32)")
    parser.add_argument("--device", default=None, help="default: cuda when there is one, else cpu")
    parser.add_argument("--data-dir", type=Path, default=HERE / "_data")
    parser.add_argument("--json", default=None, metavar="FILE")
    parser.add_argument("--quick", action="store_true", help="tiny: a smoke test, not a measurement")
    args = parser.parse_args(argv)
    check_json_path(parser, args.json)
    if args.quick:
        args.files, args.batch_size, args.steps, args.rounds, args.warmup = 48, 8, 2, 2, 1
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    threads = args.threads or torch.get_num_threads()
    from alexnet.data import open_dataset, prepare
    from alexnet.data.loader import BatchLoader
    from alexnet.data.transforms import TrainTransform
    from alexnet.train.recipes import RECIPES

    print(f"machine: {machine()}; device {device}", flush=True)
    folder = make_photo_folder(args.data_dir, args.files, min(threads, 16))
    cache = args.data_dir / f"cache-jpeg-{args.files}"
    shutil.rmtree(cache, ignore_errors=True)
    prepare(str(folder), str(cache), store="jpeg", workers=min(threads, 16), progress=False)
    train = open_dataset(str(cache), "train", val_fraction=0.0, progress=False)
    transform = TrainTransform(224, flip=True, pca_std=0.1, normalization="mean_image", stats=train.stats)
    model = alexnet.create_model("alexnet_2012", num_classes=len(train.classes),
                                 **RECIPES["paper"]["model_kwargs"]).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    common = dict(steps=args.steps, rounds=args.rounds, warmup=args.warmup, batch_size=args.batch_size,
                  device=device, bf16=args.bf16)

    def endless(loader):
        epoch = 0
        while True:
            yield from loader.iterate(epoch)
            epoch += 1

    rows = []
    x, y = next(iter(BatchLoader(train.images, train.labels, args.batch_size, transform=transform, device=device,
                                 in_memory_bytes=0, prefetch=0)))

    def on_device():
        while True:
            yield x, y
    arms = [("on device", on_device(), None)]
    if device.type == "cuda":
        arms.append(("gpu decode", endless(BatchLoader(train.images, train.labels, args.batch_size,
                                                       transform=transform, device=device, in_memory_bytes=0,
                                                       threads=1, prefetch=3)), 1))
    arms.append(("cpu decode", endless(BatchLoader(train.images, train.labels, args.batch_size, transform=transform,
                                                   device=device, in_memory_bytes=0, gpu_decode=False,
                                                   threads=threads, prefetch=2 * threads)), threads))
    for name, batches, loader_threads in arms:
        rates = sgd_rate(model, optimizer, batches, **common)
        rows.append({"feed": name, "img_per_s": statistics.median(rates), "rates": rates,
                     "loader_threads": loader_threads})
        batches.close()
        print(f"{name:10s}: {statistics.median(rates):8.0f} img/s (median of {len(rates)}, min {min(rates):.0f}, "
              f"max {max(rates):.0f})", flush=True)
    ceiling = rows[0]["img_per_s"]
    for row in rows:
        row["vs_on_device"] = row["img_per_s"] / ceiling
    for row in rows[1:]:
        print(f"{row['feed']} / on device: {row['vs_on_device']:.2f}" +
              ("  (target >= 0.9)" if row["feed"] == "gpu decode" else ""))
    if args.json:
        write_json(args.json, {"machine": machine(), "device": str(device), "batch_size": args.batch_size,
                               "bf16": args.bf16, "files": args.files, "quick": args.quick, "rows": rows})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
