"""ILSVRC-2012 at scale, without ImageNet: a generated ILSVRC-shaped tree of N photographs, prepared and loaded.

The tree is the devkit layout (train/<wnid>/ for 1,000 synsets, a flat val/ of ILSVRC2012_val_%08d.JPEG, the devkit
tar.gz; bench/ilsvrc_tree.py) with photo-like content: random crops of the real photographs shipped in scikit-image
and scikit-learn (bench/photos.py), at ImageNet's size mix (most 500x375 or 375x500, the rest 200-500 px on the long
side at varied aspect; about 400x350 on average) and JPEG quality 85-95. It measures, each step on its own:
  listing      detect + list_ilsvrc (scandir of 1,000 folders), and the fingerprint's stat of every file
  prepare      `alexnet prepare --store jpeg` (and raw) in a subprocess: img/s per core, peak memory of the process
               tree (PSS, sampled every 0.2 s: shared pages counted once), bytes per image; also at 1k and 8k
               images (hard-linked subsets of the same tree), to show how peak memory grows with N
  loader       BatchLoader over the jpeg cache (decoding per batch, W threads): img/s per core, first-batch latency
  train        a few hundred SGD steps of `--recipe paper` (alexnet_2012, batch 128) fed from the jpeg cache
Results go to --json; docs/imagenet.md has the table and the projection to 1.28 M images.

    python bench/imagenet_scale.py --n 100000 --json docs/imagenet/scale-100k.json
    python bench/imagenet_scale.py --n 2000 --steps 3 --skip-raw      # a quick look
    python bench/imagenet_scale.py --parts loader,train --json FILE   # measure again what changed
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from alexnet.util import memory

memory.configure()   # before torch is imported (see alexnet.util.memory)

import numpy as np  # noqa: E402

from ilsvrc_tree import make_plan, synsets, write_devkit  # noqa: E402  (bench/ilsvrc_tree.py)
from jsonout import check_json_path, write_json  # noqa: E402  (bench/jsonout.py)
from machine import load_average, machine  # noqa: E402  (bench/machine.py)

HERE = Path(__file__).resolve().parent
CLASSES = 1000


# ---- the tree ---------------------------------------------------------------------------------

def imagenet_size(rng: np.random.Generator) -> tuple[int, int]:
    """(width, height) drawn from an ImageNet-like mix: 60% 500x375 or 375x500, the rest long side 200-500
    at an aspect from 1:2 to 2:1."""
    if rng.random() < 0.6:
        return (500, 375) if rng.random() < 0.75 else (375, 500)
    long_side = int(rng.integers(200, 501))
    aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    short = max(64, int(round(long_side / max(aspect, 1 / aspect))))
    return (long_side, short) if aspect >= 1 else (short, long_side)


def _write_files(jobs: list[tuple[str, int, int]]) -> int:
    """Write (path, class index, seed) photo-like JPEGs; returns bytes written."""
    from PIL import Image

    from photos import source_photos  # bench/photos.py

    photos = list(source_photos().values())
    written = 0
    for path, class_index, seed in jobs:
        rng = np.random.default_rng(seed)
        photo = photos[class_index % len(photos)]
        width, height = imagenet_size(rng)
        h, w = photo.shape[:2]
        scale = rng.uniform(0.35, 1.0)                            # a crop of the photo at the target's aspect
        ch = int(min(h, w * height / width) * scale)
        cw = int(ch * width / height)
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = Image.fromarray(photo[top:top + ch, left:left + cw]).resize((width, height), Image.BILINEAR)
        if class_index // len(photos) % 2:                         # more variety between classes of one photo
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crop.save(path, quality=int(rng.integers(85, 96)))
        written += os.path.getsize(path)
    return written


def make_tree(root: Path, n: int, val: int, workers: int) -> dict:
    """The devkit layout with ``n`` train images (n / 1000 per synset) and ``val`` val images; reused when there."""
    done = root / ".complete"
    if done.exists():
        return dict(json.loads(done.read_text()), reused=True)
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    plan = make_plan(synsets(CLASSES, seed=0), train_per_class=max(1, n // CLASSES),
                     val_per_class=max(1, val // CLASSES), seed=0)
    write_devkit(root, plan.synsets, plan.ground_truth, as_tar_gz=True)
    classes = {wnid: i for i, wnid in enumerate(sorted(plan.train))}
    jobs = []
    for wnid, names in plan.train.items():
        (root / "train" / wnid).mkdir(parents=True, exist_ok=True)
        jobs += [(str(root / "train" / wnid / name), classes[wnid], len(jobs)) for name in names]
    (root / "val").mkdir(parents=True, exist_ok=True)
    jobs += [(str(root / "val" / name), classes[wnid], len(jobs)) for name, wnid in plan.val_files]
    with ProcessPoolExecutor(workers) as pool:
        written = sum(pool.map(_write_files, [jobs[i::workers * 8] for i in range(workers * 8)]))
    made = {"generated_s": time.perf_counter() - start, "bytes_per_original": written / len(jobs), "train": n,
            "val": len(plan.val)}
    done.write_text(json.dumps(made) + "\n")
    return dict(made, reused=False)


def subset_tree(root: Path, out: Path, per_class: int) -> Path:
    """The first ``per_class`` train images of each synset, hard-linked (the val folder and the devkit too)."""
    if (out / ".complete").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    for folder in sorted((root / "train").iterdir()):
        (out / "train" / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir())[:per_class]:
            os.link(image, out / "train" / folder.name / image.name)
    shutil.copytree(root / "val", out / "val", copy_function=os.link)
    for item in root.glob("ILSVRC2012_devkit_t12*"):
        os.link(item, out / item.name)
    (out / ".complete").write_text("ok\n")
    return out


# ---- measuring ---------------------------------------------------------------------------------

def _pss(pid: int) -> int:
    """Proportional set size of ``pid`` in bytes: its resident pages, those shared with other processes (the
    forked decoders share the parent's libraries) divided among them, so a process tree's PSS adds up."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _tree_pss(pid: int) -> int:
    """PSS of ``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += _pss(p)
        stack += children.get(p, [])
    return total


def run_sampled(command: list[str]) -> dict:
    """Run ``command``; wall seconds, its exit status, the peak PSS of its process tree and of itself alone."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks = {"tree": 0, "main": 0}

    def sample():
        while proc.poll() is None:
            peaks["tree"] = max(peaks["tree"], _tree_pss(proc.pid))
            peaks["main"] = max(peaks["main"], _pss(proc.pid))
            time.sleep(0.2)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    sampler.join()
    return {"seconds": time.perf_counter() - start, "returncode": proc.returncode, "output": output[-3000:],
            "peak_pss_tree": peaks["tree"], "peak_pss_main": peaks["main"]}


def measure_listing(root: Path) -> dict:
    from alexnet.data.ilsvrc import detect, list_ilsvrc
    from alexnet.data.resolve import fingerprint

    start = time.perf_counter()
    layout = detect(str(root))
    listing = list_ilsvrc(str(root))
    listed = time.perf_counter() - start
    files = [p for items in listing.splits.values() for p, _ in items] + listing.extra_files
    start = time.perf_counter()
    fingerprint(files)
    return {"layout": layout, "listing_s": listed, "fingerprint_s": time.perf_counter() - start,
            "train": len(listing.splits["train"]), "val": len(listing.splits.get("val", [])),
            "classes": len(listing.classes)}


def measure_prepare(root: Path, cache: Path, store: str, workers: int) -> dict:
    shutil.rmtree(cache, ignore_errors=True)
    result = run_sampled([sys.executable, "-m", "alexnet", "prepare", str(root), "--out", str(cache), "--store", store,
                          "--workers", str(workers)])
    if result["returncode"] != 0:
        raise RuntimeError(f"prepare failed:\n{result['output']}")
    from alexnet.data import cache as cache_format
    meta = cache_format.read_metadata(str(cache))
    images = sum(meta["splits"].values())
    data = [cache / f"{s}_{'jpeg.bin' if store == 'jpeg' else 'images.npy'}" for s in meta["splits"]]
    stored = sum(p.stat().st_size for p in data)
    return {"store": store, "images": images, "splits": meta["splits"], "seconds": result["seconds"],
            "img_per_s": images / result["seconds"], "img_per_s_per_core": images / result["seconds"] / workers,
            "peak_pss_tree_mb": result["peak_pss_tree"] / 1e6, "peak_pss_main_mb": result["peak_pss_main"] / 1e6,
            "bytes_per_image": stored / images, "stored_gb": stored / 1e9, "skipped": len(meta["skipped"])}


def measure_loader(cache: Path, workers: int, batch_size: int, batches: int) -> dict:
    import torch

    from alexnet.data import open_dataset
    from alexnet.data.loader import BatchLoader
    from alexnet.data.transforms import TrainTransform

    start = time.perf_counter()
    train = open_dataset(str(cache), "train", progress=False)
    transform = TrainTransform(224, flip=True, pca_std=0.1, normalization="mean_image", stats=train.stats)
    loader = BatchLoader(train.images, train.labels, batch_size, transform=transform, seed=0, threads=workers,
                         prefetch=2 * workers, in_memory_bytes=0)
    it = loader.iterate(0)
    x, _ = next(it)
    first = time.perf_counter() - start
    batches = min(batches, len(loader) - 1 - 2 * workers)
    for _ in range(2 * workers):                     # drain what was prefetched during the first batch
        next(it)
    times = []
    for _ in range(batches):
        t = time.perf_counter()
        next(it)
        times.append(time.perf_counter() - t)
    it.close()
    rate = batch_size / statistics.median(times)
    assert x.shape == (batch_size, 3, 224, 224) and x.dtype == torch.float32
    return {"workers": workers, "batch_size": batch_size, "first_batch_s": first, "img_per_s": rate,
            "img_per_s_per_core": rate / workers, "batches_timed": batches}


def measure_training(cache: Path, out: Path, steps: int) -> dict:
    from alexnet.train.recipes import resolve_config
    from alexnet.train.loop import train

    shutil.rmtree(out, ignore_errors=True)
    stamps: list[float] = []
    cfg = resolve_config("paper", data=str(cache), out=str(out), max_steps=steps, quiet=True, device="cpu")
    start = time.perf_counter()
    train(cfg, after_step=lambda *_: stamps.append(time.perf_counter()))
    steady = np.diff(stamps[min(5, len(stamps) - 2):]) if len(stamps) > 2 else np.array([stamps[0] - start])
    step_s = float(np.median(steady))
    return {"recipe": "paper", "model": cfg.model, "batch_size": cfg.batch_size, "steps": len(stamps),
            "setup_and_first_step_s": stamps[0] - start, "median_step_s": step_s,
            "img_per_s": cfg.batch_size / step_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="train images (a multiple of 1,000; default 100,000)")
    parser.add_argument("--val", type=int, default=5_000, help="val images (default 5,000)")
    parser.add_argument("--workers", type=int, default=2, help="cores: prepare's processes, the loader's threads")
    parser.add_argument("--steps", type=int, default=200, help="SGD steps of --recipe paper (0: skip)")
    parser.add_argument("--subsets", default="1,8", help="per-class counts of the smaller trees (memory vs N)")
    parser.add_argument("--skip-raw", action="store_true", help="do not prepare the raw store at full N")
    parser.add_argument("--work", type=Path, default=HERE / "_data" / "imagenet-scale",
                        help="where the trees and caches live (reused; about 6 GB per 100k images + 20 GB raw)")
    parser.add_argument("--parts", default="listing,prepare,loader,train",
                        help="what to measure (comma-separated); with --json naming an existing file, the other "
                             "parts already in it are kept")
    parser.add_argument("--json", default=None, metavar="FILE")
    args = parser.parse_args(argv)
    check_json_path(parser, args.json)
    parts = set(args.parts.split(","))
    if parts - {"listing", "prepare", "loader", "train"}:
        parser.error(f"--parts: unknown {', '.join(sorted(parts - {'listing', 'prepare', 'loader', 'train'}))}")
    per_class = max(1, args.n // CLASSES)
    record = json.loads(Path(args.json).read_text()) if args.json and Path(args.json).is_file() else {}
    command = "python bench/imagenet_scale.py " + " ".join(argv or sys.argv[1:])
    record.update({"n": per_class * CLASSES, "val": args.val, "workers": args.workers})
    record.setdefault("runs", []).append({"command": command, "machine": machine(), "load_average_start": load_average()})
    print(f"machine: {machine()}, load average {load_average()}", flush=True)
    root = args.work / f"tree-{per_class * CLASSES}"
    tree = make_tree(root, per_class * CLASSES, args.val, args.workers)
    if not tree["reused"] or "tree" not in record:
        record["tree"] = tree
    print(f"tree: {root} {tree}", flush=True)
    if "listing" in parts:
        record["listing"] = measure_listing(root)
        print(f"listing: {record['listing']}", flush=True)
    cache = args.work / f"cache-jpeg-{per_class * CLASSES}"
    if "prepare" in parts:
        measure_all_prepares(record, root, cache, per_class, args)
    if "loader" in parts:
        record["loader"] = measure_loader(cache, args.workers, 128, 30)
        print(f"loader: {record['loader']}", flush=True)
    if "train" in parts and args.steps:
        record["train"] = measure_training(cache, args.work / "run", args.steps)
        print(f"train: {record['train']}", flush=True)
    record["runs"][-1]["load_average_end"] = load_average()
    if args.json:
        write_json(args.json, record)
        print(f"wrote {args.json}")
    return 0


def measure_all_prepares(record: dict, root: Path, cache: Path, per_class: int, args: argparse.Namespace) -> None:
    """The jpeg store at each subset size and at N, and the raw store at N (then removed: 20 GB per 100k)."""
    record["prepare"] = []
    for count in [int(c) for c in args.subsets.split(",") if c and int(c) < per_class]:
        small = subset_tree(root, args.work / f"tree-{count * CLASSES}", count)
        row = dict(measure_prepare(small, args.work / f"cache-jpeg-{count * CLASSES}", "jpeg", args.workers),
                   train_images=count * CLASSES)
        record["prepare"].append(row)
        print(f"prepare: {row}", flush=True)
    row = dict(measure_prepare(root, cache, "jpeg", args.workers), train_images=per_class * CLASSES)
    record["prepare"].append(row)
    print(f"prepare: {row}", flush=True)
    if not args.skip_raw:
        raw = args.work / f"cache-raw-{per_class * CLASSES}"
        row = dict(measure_prepare(root, raw, "raw", args.workers), train_images=per_class * CLASSES)
        record["prepare"].append(row)
        print(f"prepare: {row}", flush=True)
        shutil.rmtree(raw, ignore_errors=True)      # 20 GB per 100k images


if __name__ == "__main__":
    sys.exit(main())
