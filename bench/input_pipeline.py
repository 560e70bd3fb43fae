"""Input pipeline speed: torchvision ImageFolder + DataLoader vs `alexnet prepare` + BatchLoader.

Both make augmented 224x224 float batches from the same folder of JPEG photographs:
  (a) torchvision: ImageFolder -> Resize(256), RandomCrop(224), RandomHorizontalFlip, ToTensor,
      Normalize, in a DataLoader with W worker processes (decodes every JPEG every epoch);
  (b) ours: `alexnet.data.prepare` decodes once into a 256x256 uint8 cache (W decode processes),
      then BatchLoader + TrainTransform (random 224 crop, flip, PCA lighting [4.1], mean-image
      subtraction [4]) as batched tensor ops in W loader threads (one core each: torch ops
      release the GIL), the whole cache in one in-memory uint8 tensor.
The photos are real ones shipped with scikit-image and scikit-learn, randomly cropped and rescaled
to ImageNet-like sizes (short side 300-500), one class per source photo, in bench/_data/ (reused).
Rates exclude warm-up (worker start, first batches); each is the median of --repeats windows.

    python bench/input_pipeline.py                 # 3000 files, batch 128, W=2
    python bench/input_pipeline.py --quick         # a smoke test in seconds
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from itertools import islice
from pathlib import Path

from alexnet import memory

memory.configure()   # the memory settings, explicitly, before torch is imported (see alexnet.memory)

import torch  # noqa: E402
import torchvision  # noqa: E402

from machine import load_average, machine  # noqa: E402  (bench/machine.py)
from photos import class_names, make_photo_folder  # noqa: E402  (bench/photos.py)

HERE = Path(__file__).resolve().parent
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def timed_windows(batches, warmup: int, window: int, repeats: int, batch_size: int) -> list[float]:
    """Images per second over ``repeats`` windows of ``window`` batches, after ``warmup`` batches."""
    for _ in islice(batches, warmup):
        pass
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        n = sum(len(y) for _, y in islice(batches, window))
        rates.append(n / (time.perf_counter() - start))
        if n < window * batch_size:
            raise RuntimeError("ran out of batches; use more --files or fewer --batches")
    return rates


def torchvision_batches(folder: Path, batch_size: int, workers: int):
    """(a): the usual torchvision pipeline, endless (sampling with replacement across epochs)."""
    T = torchvision.transforms
    transform = T.Compose([T.Resize(256), T.RandomCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    dataset = torchvision.datasets.ImageFolder(str(folder), transform=transform)
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=10 ** 9)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                         drop_last=True, persistent_workers=workers > 0)
    return iter(loader), len(dataset)


def alexnet_batches(folder: Path, cache: Path, batch_size: int, workers: int):
    """(b): prepare once (timed), then BatchLoader + TrainTransform, endless over epochs."""
    from alexnet.data import open_dataset, prepare
    from alexnet.data.loader import BatchLoader
    from alexnet.data.transforms import TrainTransform

    shutil.rmtree(cache, ignore_errors=True)
    start = time.perf_counter()
    prepare(str(folder), str(cache), size=256, workers=workers, progress=False)
    prepare_s = time.perf_counter() - start
    train = open_dataset(str(cache), "train", val_fraction=0.0, progress=False)
    transform = TrainTransform(224, flip=True, pca_std=0.1, normalization="mean_image", stats=train.stats)
    loader = BatchLoader(train.images, train.labels, batch_size, transform=transform, seed=0, threads=workers,
                         prefetch=2 * workers)

    def endless():
        epoch = 0
        while True:
            yield from loader.iterate(epoch)
            epoch += 1

    return endless(), prepare_s, len(train)


def describe(rates: list[float]) -> str:
    spread = f"min {min(rates):.0f}, max {max(rates):.0f}"
    return f"{statistics.median(rates):7.0f} img/s  (median of {len(rates)}; {spread})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=3000, help="JPEGs in the photo folder (default 3000)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2,
                        help="W: DataLoader worker processes for (a); loader threads and prepare's decode "
                             "processes for (b) (default 2 = this machine's cores)")
    parser.add_argument("--repeats", type=int, default=5, help="timed windows per pipeline (median reported)")
    parser.add_argument("--batches", type=int, default=8, help="batches per timed window")
    parser.add_argument("--warmup", type=int, default=6,
                        help="batches before timing starts (more than either pipeline prefetches)")
    parser.add_argument("--data-dir", type=Path, default=HERE / "_data", help="where the photos and cache live")
    parser.add_argument("--quick", action="store_true", help="small and fast: a smoke test, not a measurement")
    args = parser.parse_args(argv)
    if args.quick:
        args.files, args.batch_size, args.repeats, args.batches, args.warmup = 48, 8, 2, 4, 6

    print(f"machine: {machine()}, load average {load_average()}")
    folder = make_photo_folder(args.data_dir, args.files, args.workers)
    print(f"data: {args.files} JPEGs, short side 300-500, {len(class_names())} classes, in {folder}")
    common = dict(warmup=args.warmup, window=args.batches, repeats=args.repeats, batch_size=args.batch_size)

    batches, n_files = torchvision_batches(folder, args.batch_size, args.workers)
    rates_a = timed_windows(batches, **common)
    del batches
    print(f"(a) torchvision ImageFolder + DataLoader, {args.workers} worker processes: {describe(rates_a)}")

    batches, prepare_s, n_cached = alexnet_batches(folder, args.data_dir / f"cache-{args.files}", args.batch_size,
                                                   args.workers)
    rates_b = timed_windows(batches, **common)
    batches.close()
    print(f"(b) alexnet prepare + BatchLoader, {args.workers} loader threads:             {describe(rates_b)}")

    rate_a, rate_b = statistics.median(rates_a), statistics.median(rates_b)
    print(f"ratio (b)/(a): {rate_b / rate_a:.1f}x  (target >= 3x)")
    print(f"one-off prepare ({n_cached} images cached): {prepare_s:.1f} s   vs   one epoch of (a) "
          f"({n_files} images at {rate_a:.0f} img/s): {n_files / rate_a:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
