"""Input pipeline speed: torchvision ImageFolder + DataLoader vs `alexnet prepare` + BatchLoader, both stores.

Each makes augmented 224x224 float batches from the same folder of JPEG photographs:
  (a) "torchvision": ImageFolder -> Resize(256), RandomCrop(224), RandomHorizontalFlip, ToTensor,
      Normalize, in a DataLoader with W worker processes (decodes every original JPEG every epoch);
  (b) "raw cache": `alexnet prepare --store raw` decodes once into a 256x256 uint8 cache (W decode
      processes), then BatchLoader + TrainTransform (random 224 crop, flip, PCA lighting [4.1], mean-image
      subtraction [4]) in W loader threads (one core each: the ops release the GIL), the whole cache in
      one in-memory uint8 tensor;
  (c) "jpeg cache": `alexnet prepare --store jpeg` (256x256 squares as JPEG, quality 90), then the same
      BatchLoader + TrainTransform, each loader thread decoding its batch's JPEGs (nothing held decoded in
      memory, as at ImageNet scale, where the decoded set would not fit).
The photos are real ones shipped with scikit-image and scikit-learn, randomly cropped and rescaled
to ImageNet-like sizes (short side 300-500), one class per source photo, in bench/_data/ (reused).
Rates exclude warm-up (worker start, first batches); each is the median of --repeats windows.
The targets of issue 21: (c) >= 1,000 img/s per core, and (c) >= 3x (a) with the same W.

    python bench/input_pipeline.py                 # 3000 files, batch 128, W=2
    python bench/input_pipeline.py --json docs/imagenet/input_pipeline.json
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

from alexnet.util import memory

memory.configure()   # the memory settings, explicitly, before torch is imported (see alexnet.util.memory)

import torch  # noqa: E402
import torchvision  # noqa: E402

from jsonout import check_json_path, write_json  # noqa: E402  (bench/jsonout.py)
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


def alexnet_batches(folder: Path, cache: Path, batch_size: int, workers: int, store: str):
    """(b) or (c): prepare once into ``store`` (timed), then BatchLoader + TrainTransform, endless over epochs."""
    from alexnet.data import open_dataset, prepare
    from alexnet.data.loader import BatchLoader
    from alexnet.data.transforms import TrainTransform

    shutil.rmtree(cache, ignore_errors=True)
    start = time.perf_counter()
    report = prepare(str(folder), str(cache), size=256, workers=workers, store=store, progress=False)
    prepare_s = time.perf_counter() - start
    train = open_dataset(str(cache), "train", val_fraction=0.0, progress=False)
    transform = TrainTransform(224, flip=True, pca_std=0.1, normalization="mean_image", stats=train.stats)
    loader = BatchLoader(train.images, train.labels, batch_size, transform=transform, seed=0, threads=workers,
                         prefetch=2 * workers, in_memory_bytes=0 if store == "jpeg" else 1 << 40)

    def endless():
        epoch = 0
        while True:
            yield from loader.iterate(epoch)
            epoch += 1

    return endless(), prepare_s, len(train), report.stored_bytes


def decoder_rates(cache: Path, workers: int, images: int = 512, repeats: int = 3) -> list[dict]:
    """Decoding alone, the jpeg cache's 256x256 squares: torchvision's decode_jpeg operator (what the loader uses)
    against Pillow's decoder (the same libjpeg-turbo), each on 1 and on ``workers`` threads; best of ``repeats``."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from alexnet.data import open_dataset
    from alexnet.data.jpeg_store import cpu_decoder, decode_pil

    store = open_dataset(str(cache), "train", val_fraction=0.0, progress=False).images
    blobs = [np.array(store.data[s:e]) for s, e in zip(store.starts[:images], store.ends[:images])]
    ops = cpu_decoder()
    decoders = {"torchvision decode_jpeg": lambda part: [ops(b, 3) for b in part],
                "Pillow": lambda part: [decode_pil(b.tobytes(), 3) for b in part]}
    rows = []
    for name, decode in decoders.items():
        for threads in sorted({1, workers}):
            parts = [blobs[i::threads] for i in range(threads)]
            with ThreadPoolExecutor(threads) as pool:
                best = 0.0
                for _ in range(repeats):
                    start = time.perf_counter()
                    list(pool.map(decode, parts))
                    best = max(best, len(blobs) / (time.perf_counter() - start))
            rows.append({"decoder": name, "threads": threads, "img_per_s": best})
    return rows


def describe(rates: list[float]) -> str:
    spread = f"min {min(rates):.0f}, max {max(rates):.0f}"
    return f"{statistics.median(rates):7.0f} img/s  (median of {len(rates)}; {spread})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=3000, help="JPEGs in the photo folder (default 3000)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2,
                        help="W: DataLoader worker processes for (a); loader threads and prepare's decode "
                             "processes for (b) and (c) (default 2 = this machine's cores)")
    parser.add_argument("--repeats", type=int, default=5, help="timed windows per pipeline (median reported)")
    parser.add_argument("--batches", type=int, default=8, help="batches per timed window")
    parser.add_argument("--warmup", type=int, default=6,
                        help="batches before timing starts (more than either pipeline prefetches)")
    parser.add_argument("--data-dir", type=Path, default=HERE / "_data", help="where the photos and cache live")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the rows and the machine as JSON")
    parser.add_argument("--quick", action="store_true", help="small and fast: a smoke test, not a measurement")
    args = parser.parse_args(argv)
    check_json_path(parser, args.json)
    if args.quick:
        args.files, args.batch_size, args.repeats, args.batches, args.warmup = 48, 8, 2, 4, 6

    print(f"machine: {machine()}, load average {load_average()}")
    folder = make_photo_folder(args.data_dir, args.files, args.workers)
    original = sum(p.stat().st_size for p in folder.rglob("*.jpg"))
    print(f"data: {args.files} JPEGs, short side 300-500, {len(class_names())} classes, in {folder} "
          f"({original / args.files / 1e3:.1f} KB each)")
    common = dict(warmup=args.warmup, window=args.batches, repeats=args.repeats, batch_size=args.batch_size)
    rows = []

    batches, n_files = torchvision_batches(folder, args.batch_size, args.workers)
    rates = timed_windows(batches, **common)
    del batches
    rows.append({"pipeline": "torchvision", "img_per_s": statistics.median(rates), "workers": args.workers,
                 "rates": rates, "bytes_per_image": original / args.files})
    print(f"(a) torchvision ImageFolder + DataLoader, {args.workers} worker processes: {describe(rates)}")

    for letter, store in (("b", "raw"), ("c", "jpeg")):
        batches, prepare_s, n_cached, stored = alexnet_batches(folder, args.data_dir / f"cache-{store}-{args.files}",
                                                               args.batch_size, args.workers, store)
        rates = timed_windows(batches, **common)
        batches.close()
        rows.append({"pipeline": f"{store} cache", "img_per_s": statistics.median(rates), "workers": args.workers,
                     "rates": rates, "prepare_s": prepare_s, "images": n_cached, "bytes_per_image": stored / n_cached})
        print(f"({letter}) alexnet prepare --store {store:4s} + BatchLoader, {args.workers} loader threads: "
              f"{describe(rates)}   (prepare {prepare_s:.1f} s, {stored / n_cached / 1e3:.1f} KB per image)")

    decoders = decoder_rates(args.data_dir / f"cache-jpeg-{args.files}", args.workers)
    for row in decoders:
        print(f"decode alone, {row['decoder']:23s} {row['threads']} thread(s): {row['img_per_s']:7.0f} img/s")
    torchvision_rate, jpeg = rows[0]["img_per_s"], rows[2]
    for row in rows:
        row["per_core"] = row["img_per_s"] / args.workers
        row["vs_torchvision"] = row["img_per_s"] / torchvision_rate
    print(f"ratio (b)/(a): {rows[1]['vs_torchvision']:.1f}x   ratio (c)/(a): {jpeg['vs_torchvision']:.1f}x  "
          f"(target >= 3x)")
    print(f"jpeg cache (c) per core: {jpeg['per_core']:.0f} img/s  (target >= 1000)")
    print(f"one-off prepare ({n_files} images): raw {rows[1]['prepare_s']:.1f} s, jpeg {jpeg['prepare_s']:.1f} s   "
          f"vs   one epoch of (a) ({n_files} images at {torchvision_rate:.0f} img/s): {n_files / torchvision_rate:.1f} s")
    if args.json:
        write_json(args.json, {"machine": machine(), "load_average": load_average(), "files": args.files,
                               "batch_size": args.batch_size, "workers": args.workers, "repeats": args.repeats,
                               "batches_per_window": args.batches, "quick": args.quick, "rows": rows,
                               "decoders": decoders})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
