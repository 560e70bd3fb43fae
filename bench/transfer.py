"""Transfer from Fashion-MNIST to real handwritten digits (issue 13): `alexnet train --init` against training
from scratch on the same budget, and a linear probe on frozen features against a full fine-tune.

Source: `alexnet_small` trained by the quick recipe on Fashion-MNIST for 2 epochs (or `--pretrained CKPT`).
Target: scikit-learn's `load_digits` (1,797 real 8x8 scans of handwritten digits, 16 grey levels, shipped inside
scikit-learn: MNIST cannot be downloaded here). Each scan becomes a 28x28 uint8 image: levels 0-16 scaled to
0-255, then resized 8 -> 28 bilinearly (torch `interpolate`, align_corners=False, no antialias), rounded. A
fixed stratified split (seed 0): 400 test, 100 val (10 a class), 1,297 for training; the 100-label set is
10 images a class of those 1,297 (seed 0). Each set is written as a class-folder tree and prepared once
(`alexnet prepare --image-size 28`: stored as is, 1 channel).

Arms, each with 100 labels and with all 1,297; every arm takes the same SGD steps of batch 32 (whole epochs
nearest `--steps`: 120 x 3 with 100 labels, 9 x 40 with all), onecycle without warm-up, no flips (digits are
not mirror-symmetric); scored on the 400 test images with the final weights (`last.pt`: no choice by
validation):
  scratch      the model's own init, --lr 0.05
  finetune     --init CKPT --reset-head --lr 0.005 --head-lr-mult 10 (Caffe's practice: the new head at 0.05)
  freeze-conv  the same with --freeze features (fc6, fc7 and the head train)
  probe        the same with --freeze fc7: only the head trains, a linear probe (0.05, like scratch)
  finetune-lr0.05  --init CKPT --reset-head --lr 0.05: every layer at scratch's rate (init vs. rate, separated)

A run whose folder already holds the same finished configuration and its test score is reused, not trained
again (so another arm or seed can be added to a finished measurement).

    python bench/transfer.py [--pretrained CKPT] [--seeds 3] [--steps 360] [--threads N] [--json FILE]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
from pathlib import Path

from alexnet.util import memory

memory.configure()   # before torch's first allocation (see alexnet.util.memory)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from alexnet.cli.main import main as alexnet  # noqa: E402
from machine import load_average, machine  # noqa: E402  (bench/machine.py)

ROOT = Path(__file__).resolve().parent
WORK = ROOT / "_data" / "transfer"     # --work: the digits, the source checkpoint and every run folder
BATCH = 32
FINETUNE = ["--reset-head", "--lr", "0.005", "--head-lr-mult", "10"]
ARMS = {"scratch": ["--lr", "0.05"], "finetune": FINETUNE, "freeze-conv": FINETUNE + ["--freeze", "features"],
        "probe": FINETUNE + ["--freeze", "fc7"], "finetune-lr0.05": ["--reset-head", "--lr", "0.05"]}


def digits_28px() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digit scans as (N, 28, 28) uint8 and their labels."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    levels = torch.from_numpy(digits.images).float()[:, None] * (255.0 / 16.0)          # 0-16 -> 0-255
    big = F.interpolate(levels, size=(28, 28), mode="bilinear", align_corners=False)
    return big[:, 0].round().clamp(0, 255).to(torch.uint8).numpy(), digits.target.astype(np.int64)


def splits(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Indices: 400 test, 100 val, the other 1,297 as train-all, 10 a class of those as train-100."""
    from sklearn.model_selection import train_test_split
    index = np.arange(len(labels))
    rest, test = train_test_split(index, test_size=400, stratify=labels, random_state=0)
    pool, val = train_test_split(rest, test_size=100, stratify=labels[rest], random_state=0)
    rng = np.random.default_rng(0)
    few = np.concatenate([rng.choice(pool[labels[pool] == c], 10, replace=False) for c in range(10)])
    return {"test": np.sort(test), "val": np.sort(val), "train-all": np.sort(pool), "train-100": np.sort(few)}


def write_data(images: np.ndarray, labels: np.ndarray, parts: dict[str, np.ndarray]) -> dict[str, str]:
    """A class-folder tree per label count (train/, val/, test/), prepared once into a cache."""
    caches = {}
    for name in ("100", "all"):
        tree, cache = WORK / f"digits-{name}", WORK / f"digits-{name}.cache"
        if not cache.exists():
            for split, part in (("train", parts[f"train-{name}"]), ("val", parts["val"]), ("test", parts["test"])):
                for i in part:
                    path = tree / split / str(labels[i]) / f"{i:04d}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(images[i]).save(path)
            run(["prepare", str(tree), "--out", str(cache), "--image-size", "28"])
        caches[name] = str(cache)
    return caches


def run(argv: list[str], quiet: bool = False) -> None:
    print("$ alexnet " + " ".join(argv), flush=True)
    with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
        code = alexnet(argv)
    if code != 0:
        sys.exit(f"alexnet {argv[0]} exited {code}")


def test_top1(checkpoint: Path) -> float:
    report = checkpoint.parent / "test.json"
    if not report.exists() or report.stat().st_mtime < checkpoint.stat().st_mtime:
        run(["eval", str(checkpoint), "--split", "test", "--json", str(report)], quiet=True)
    return json.loads(report.read_text())["top1"]


def finished(out: Path, flags: list[str]) -> bool:
    """``out`` holds a complete run of exactly the config these flags give (the folder's name aside)."""
    from alexnet.cli.main import build_parser
    from alexnet.train.recipes import TrainConfig, resolve_config
    if not (out / "last.pt").exists():
        return False
    args = vars(build_parser().parse_args(["train", *flags]))
    names = TrainConfig.__dataclass_fields__
    wanted = resolve_config("quick", **{k: v for k, v in args.items() if k in names and k != "recipe"}).to_dict()
    ckpt = torch.load(out / "last.pt", weights_only=True)
    ignore = {"out", "quiet", "max_steps", "data_root"}
    same = {k: v for k, v in ckpt["config"].items() if k not in ignore} == \
        {k: v for k, v in wanted.items() if k not in ignore}
    return same and ckpt["position"]["epoch"] == wanted["epochs"]


def pretrained(path: str | None) -> tuple[str, list[str]]:
    if path:
        return path, []
    out = WORK / "pretrain-fashion"
    argv = ["train", "--recipe", "quick", "--epochs", "2", "--out", str(out), "--quiet"]
    if not (out / "last.pt").exists():
        run(argv)
    elif torch.load(out / "last.pt", weights_only=True)["position"]["epoch"] < 2:
        run(argv + ["--resume"])
    return str(out / "last.pt"), argv


def main() -> None:
    global WORK
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", help="the source checkpoint (default: train it, quick recipe, 2 epochs)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=360, help="SGD steps of every run (whole epochs: the nearest)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default; 1 is much faster "
                        "than 2 on a machine other jobs keep busy)")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--json", default=str(ROOT.parent / "docs" / "transfer" / "transfer.json"))
    parser.add_argument("--work", default=str(WORK), help="scratch folder (default: bench/_data/transfer)")
    args = parser.parse_args()
    WORK = Path(args.work)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {machine()}, load average {load_average()}", flush=True)
    source, pretrain_argv = pretrained(args.pretrained)
    source_top1 = test_top1(Path(source))
    images, labels = digits_28px()
    parts = splits(labels)
    caches = write_data(images, labels, parts)
    results = []
    for labelled in ("100", "all"):
        per_epoch = len(parts[f"train-{labelled}"]) // BATCH
        epochs = max(1, round(args.steps / per_epoch))
        for arm in args.arms.split(","):
            for seed in range(args.seeds):
                out = WORK / "runs" / f"steps{args.steps}" / f"{arm}-{labelled}-seed{seed}"
                flags = ["--data", caches[labelled], "--model", "alexnet_small", "--batch-size", str(BATCH),
                         "--epochs", str(epochs), "--warmup-epochs", "0", "--no-flip", "--seed", str(seed)]
                flags += ARMS[arm] + (["--init", source] if arm != "scratch" else [])
                if not finished(out, flags):
                    run(["train", *flags, "--out", str(out), "--force", "--quiet"])
                    (out / "test.json").unlink(missing_ok=True)
                rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
                seconds = sum(row["seconds"] for row in rows)       # the epochs' time, validation included
                top1 = test_top1(out / "last.pt")
                results.append({"arm": arm, "labels": labelled, "seed": seed, "epochs": epochs,
                                "steps": epochs * per_epoch, "test_top1": top1, "epochs_s": round(seconds, 1),
                                "command": "alexnet train " + " ".join(_portable(flags))})
                print(f"{arm:12s} {labelled:>4s} labels seed {seed}: test top-1 {top1:.4f} ({seconds:.0f}s)",
                      flush=True)
    summary = summarise(results, args.arms.split(","))
    report = {"source": {"checkpoint": _portable([source])[0],
                         "command": "alexnet " + " ".join(_portable(pretrain_argv)) if pretrain_argv else None,
                         "test_top1": source_top1, "test_top1_on": "the checkpoint's own data (Fashion-MNIST)"},
              "target": {"data": "sklearn.datasets.load_digits, 8x8 -> 28x28 bilinear, 0-16 -> 0-255",
                         "sizes": {k: int(len(v)) for k, v in parts.items()},
                         "split": "stratified, seed 0: test 400, val 100, train-all the rest; train-100 = 10 a "
                                  "class of train-all (the same 100 images for every seed)",
                         "prepare": "alexnet prepare bench/_data/transfer/digits-{100,all} --out "
                                    "bench/_data/transfer/digits-{100,all}.cache --image-size 28"},
              "command": "python bench/transfer.py " + " ".join(sys.argv[1:]), "batch_size": BATCH,
              "machine": machine(), "load_average_end": load_average(),
              "summary": summary, "runs": results}
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nsource: test top-1 {source_top1:.4f} on its own data\n" + table(summary) + f"\nwrote {args.json}")


def _portable(argv: list[str]) -> list[str]:
    """Paths under the repository written relative to it, so the JSON holds no scratch paths."""
    root = str(ROOT.parent) + os.sep
    return [a.replace(root, "") for a in argv]


def summarise(results: list[dict], arms: list[str]) -> list[dict]:
    rows = []
    for labelled in ("100", "all"):
        for arm in arms:
            scores = [r["test_top1"] for r in results if r["arm"] == arm and r["labels"] == labelled]
            rows.append({"arm": arm, "labels": labelled, "mean": statistics.mean(scores),
                         "std": statistics.stdev(scores) if len(scores) > 1 else 0.0, "scores": scores,
                         "steps": next(r["steps"] for r in results if r["arm"] == arm and r["labels"] == labelled)})
    return rows


def table(summary: list[dict]) -> str:
    lines = ["| arm | labels | steps | test top-1 (mean ± std) | per seed |", "|---|---:|---:|---:|---|"]
    for row in summary:
        lines.append(f"| {row['arm']} | {row['labels']} | {row['steps']} | {row['mean']:.4f} ± {row['std']:.4f} | "
                     + ", ".join(f"{s:.4f}" for s in row["scores"]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
