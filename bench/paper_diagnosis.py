"""Why the paper's literal recipe stalls, measured: one change at a time from the paper's text (issue 9).

    .venv/bin/python bench/paper_diagnosis.py steps                 # every variant, 20 steps, statistics each step
    .venv/bin/python bench/paper_diagnosis.py steps --steps 48 --epochs 3 --photos grey --variants paper   # across epochs
    .venv/bin/python bench/paper_diagnosis.py epochs --seeds 0 1 2  # chosen variants, 3 epochs, held-out top-1
    .venv/bin/python bench/paper_diagnosis.py epochs --variants paper --data other-folder
    .venv/bin/python bench/paper_diagnosis.py epochs --photos grey --variants "paper, clip grad norm 5" --seeds 0 1 2

Data: the 3000-photo, 9-class folder of bench/photos.py (real JPEGs; 2700 train / 300 held out), unless
--data names another folder. Every run is ``alexnet.train.loop.train`` with ``--recipe paper-literal`` (the
paper's text: bias 1, N(0, 0.01), alpha 1e-4 on the LRN sum, one lr, decay on everything, 0-255 inputs)
plus the variant's overrides; ``paper`` is the shipped recipe. ``steps`` records per-layer statistics
(alexnet.train.diagnose) at every step: the table printed is the state at initialisation, the loss of each
step, and the logit scale after the first updates. ``epochs`` trains 3 epochs (batch 128) and reports
epoch-1 train loss and the held-out top-1 after each epoch. Every run also records the global norm of the
gradient each step applied (``grad_norms``) and, where the run clips, the norm before clipping
(``grad_norms_before_clip``). Results go to --json as well.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

from alexnet.util import memory

memory.configure()   # the memory settings, explicitly, before torch is imported (see alexnet.util.memory)

import torch  # noqa: E402

from alexnet.train.recipes import resolve_config  # noqa: E402
from alexnet.train.loop import train  # noqa: E402

from jsonout import write_json  # noqa: E402  (bench/jsonout.py)
from machine import machine  # noqa: E402  (bench/machine.py)
from photos import make_photo_folder  # noqa: E402  (bench/photos.py)

HERE = Path(__file__).resolve().parent
CONVNET2 = {"lrn": "cuda-convnet2", "init": "cuda-convnet2", "norm_before_relu": [1]}
BEFORE_CLIP = {"clip_grad_norm": 0.0, "model_kwargs": {"init": "caffe"}}   # `paper` before clipping joined it
BEFORE_FC = {"clip_grad_norm": 0.0, "model_kwargs": {"init": "paper"}}     # ... and before Caffe's fc6/fc7 std
# Each variant: overrides on top of --recipe paper-literal (its "recipe" key switches the recipe).
VARIANTS = {
    "literal": {},
    "lrn alpha/n": {"model_kwargs": {"lrn": "cuda-convnet2"}},
    "norm1 before relu": {"model_kwargs": {"norm_before_relu": [1]}},
    "conv3-5 std 0.03": {"model_kwargs": {"init": "cuda-convnet2"}},
    "bias 2x lr, no decay": {"bias_lr_mult": 2.0, "decay_norm_and_bias": False},
    "cuda-convnet2 all": {"model_kwargs": CONVNET2, "bias_lr_mult": 2.0, "decay_norm_and_bias": False},
    "bias 0.1": {"model_kwargs": {"init_bias": 0.1}},
    "fc6/fc7 bias 0.1": {"model_kwargs": {"init_bias": {"fc6": 0.1, "fc7": 0.1}}},
    "conv bias 0.1": {"model_kwargs": {"init_bias": {"conv2": 0.1, "conv4": 0.1, "conv5": 0.1}}},
    "caffe init, bias 0.1": {"model_kwargs": {"init": "caffe", "init_bias": 0.1}},
    "paper": {"recipe": "paper"},
    # variants of `paper` as it was when each ran (docs/paper_recipe.md): no clipping, and fc6/fc7 std 0.01 until
    # Caffe's 0.005 joined it ("paper, caffe init": the recipe as shipped from then until clipping replaced it)
    "paper, fc6/fc7 bias 0.1": {"recipe": "paper", **BEFORE_FC, "model_kwargs": {"init": "paper",
                                                                                "init_bias": {"fc6": 0.1, "fc7": 0.1}}},
    "paper, lrn alpha/n": {"recipe": "paper", **BEFORE_FC, "model_kwargs": {"init": "paper", "lrn": "cuda-convnet2"}},
    "paper, caffe init": {"recipe": "paper", **BEFORE_CLIP},
    "paper, cuda-convnet2 all": {"recipe": "paper", "clip_grad_norm": 0.0, "model_kwargs": CONVNET2},
    "paper, fc6/fc7 std 0.01": {"recipe": "paper", **BEFORE_FC},
    # the grey set's blow-up (docs/paper_recipe.md): candidates on top of `paper` as then shipped (std 0.005, no clip)
    "paper, lr 0.005": {"recipe": "paper", **BEFORE_CLIP, "lr": 0.005},
    "paper, warm-up 1 epoch": {"recipe": "paper", **BEFORE_CLIP, "warmup_epochs": 1.0},
    "paper, label smoothing 0.1": {"recipe": "paper", **BEFORE_CLIP, "label_smoothing": 0.1},
    "paper, clip grad norm 5": {"recipe": "paper", "clip_grad_norm": 5.0, "model_kwargs": {"init": "caffe"}},
    # ~4x the norm of the first steps, with the text's fc6/fc7 std 0.01: `paper` from then until it took CONVNET2
    "paper, fc6/fc7 std 0.01, clip grad norm 5": {"recipe": "paper", "clip_grad_norm": 5.0,
                                                   "model_kwargs": {"init": "paper"}},
    # `paper` as shipped (clip 5) with what Krizhevsky's cfg ran instead of the text: LRN alpha/n, conv1's LRN before
    # its ReLU, conv3-5 std 0.03 (docs/paper_recipe.md, "What Krizhevsky's code ran, with clipping")
    "paper, cuda-convnet2 conventions, clip 5": {"recipe": "paper", "model_kwargs": CONVNET2},
    # the text's bias 1 (and fc6/fc7 std 0.01), whose failure is a blow-up at the first steps, with the clipping
    "paper, text's init, clip grad norm 5": {"recipe": "paper", "clip_grad_norm": 5.0,
                                              "model_kwargs": {"init": "paper", "init_bias": 1.0}},
}

# Every variant above of `paper` as it once was keeps the text's LRN, conv1 order and init, which `paper` had until it
# took cuda-convnet2's (CONVNET2), so that the commands in docs/paper_recipe.md give the numbers printed there.
TEXT_CONVENTIONS = {"lrn": "paper", "init": "paper", "norm_before_relu": []}
for _name, _variant in VARIANTS.items():
    if _variant.get("recipe") == "paper" and _name != "paper":
        _variant["model_kwargs"] = {**TEXT_CONVENTIONS, **_variant.get("model_kwargs", {})}


def run(variant: str, data: str, out: Path, *, seed: int, epochs: int, max_steps: int = 0, diagnose: int = 0) -> dict:
    overrides = dict(VARIANTS[variant])
    recipe = overrides.pop("recipe", "paper-literal")
    cfg = resolve_config(recipe, data=data, out=str(out), epochs=epochs, seed=seed, max_steps=max_steps,
                         diagnose=diagnose, quiet=True, **overrides)
    t0 = time.perf_counter()
    with recording(torch.optim.SGD, "step", before=_applied_norm) as norms, \
            recording(torch.nn.utils, "clip_grad_norm_", after=float) as before_clip:   # the norm before clipping
        result = train(cfg, force=True)
    rows = [json.loads(line) for line in (out / "diagnose.jsonl").read_text().splitlines()] if diagnose else []
    return {"variant": variant, "seed": seed, "seconds": time.perf_counter() - t0, "history": result["history"],
            "diagnosis": rows, "grad_norms": norms, "grad_norms_before_clip": before_clip}


@contextlib.contextmanager
def recording(owner, name: str, before=None, after=None):
    """While open, each call of ``owner.name`` appends ``before(*args)`` (taken before the call) or
    ``after(result)`` to the list it yields."""
    values: list[float] = []
    original = getattr(owner, name)

    def recorded(*args, **kwargs):
        if before is not None:
            values.append(before(*args))
        result = original(*args, **kwargs)
        if after is not None:
            values.append(after(result))
        return result
    setattr(owner, name, recorded)
    try:
        yield values
    finally:
        setattr(owner, name, original)


def _applied_norm(optimizer: torch.optim.Optimizer) -> float:
    """The global L2 norm of the gradients an SGD step is about to apply (after --clip-grad-norm, if set)."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads))


def steps_table(results: list[dict], classes: int) -> str:
    chance = math.log(classes)
    lines = [f"ln K = ln {classes} = {chance:.3f}",
             "| variant | conv5 signal | fc6 signal | fc7 mean/std | logits std, step 0 -> 1 -> 2 | fc8 update, step 0 "
             "| loss steps 1-5 | loss, last 5 steps |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        d = r["diagnosis"]
        init = d[0]["layers"]
        losses = [row["loss"] for row in d]
        logits = " -> ".join(f"{row['logit_std']:.3g}" for row in d[:3])
        lines.append(f"| {r['variant']} | {init['conv5']['signal']:.3f} | {init['fc6']['signal']:.3f} | "
                     f"{init['fc7']['act_mean']:.2f}/{init['fc7']['act_std']:.2f} | {logits} | "
                     f"{init['fc8']['update_ratio']:.3g} | {statistics.mean(losses[:5]):.3f} | "
                     f"{statistics.mean(losses[-5:]):.3f} |")
    return "\n".join(lines)


def epochs_table(results: list[dict], classes: int) -> str:
    lines = [f"ln K = ln {classes} = {math.log(classes):.3f}",
             "| variant | seed | epoch-1 train loss | held-out top-1 after epochs 1, 2, 3 | seconds |", "|---|---|---|---|---|"]
    for r in results:
        h = r["history"]
        top1 = ", ".join(f"{row['val_top1']:.3f}" for row in h)
        lines.append(f"| {r['variant']} | {r['seed']} | {h[0]['train_loss']:.3f} | {top1} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["steps", "epochs"])
    parser.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", default=None, help="an image folder (default: bench/_data/photos-3000)")
    parser.add_argument("--photos", choices=["colour", "grey", "grey-rgb"], default="colour",
                        help="without --data: the 9 colour photos (photos-3000), the 8 grey ones (photos-grey-2400), "
                             "or the grey ones read as RGB (a cache made with alexnet prepare --channels 3)")
    parser.add_argument("--json", default=None, help="write every run's history and statistics here")
    args = parser.parse_args()
    data = args.data or str(make_photo_folder(HERE / "_data", 3000 if args.photos == "colour" else 2400, workers=2,
                                              source=args.photos.removesuffix("-rgb")))
    if args.photos == "grey-rgb" and not args.data:     # each grey pixel copied to R, G and B, as for ImageNet's
        from alexnet.data import prepare
        data = str(HERE / "_data" / "photos-grey-2400-rgb")
        prepare(str(HERE / "_data" / "photos-grey-2400"), data, size=256, workers=2, channels=3)
    variants = args.variants or (list(VARIANTS) if args.mode == "steps" else ["literal", "paper"])
    print(machine(), file=sys.stderr)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in variants:
            for seed in args.seeds:
                out = Path(tmp) / f"{len(results)}"
                if args.mode == "steps":
                    r = run(variant, data, out, seed=seed, epochs=args.epochs, max_steps=args.steps, diagnose=1)
                else:
                    r = run(variant, data, out, seed=seed, epochs=args.epochs)
                results.append(r)
                print(f"{variant} seed {seed}: {r['seconds']:.0f}s", file=sys.stderr, flush=True)
        classes = len(_classes(Path(tmp) / "0"))
    print(steps_table(results, classes) if args.mode == "steps" else epochs_table(results, classes))
    if args.json:
        write_json(args.json, {"command": sys.argv, "machine": machine(), "runs": results})
    return 0


def _classes(run_folder: Path) -> list[str]:
    from alexnet.checkpoint import Checkpoint
    return Checkpoint.load(run_folder / "last.pt").classes


if __name__ == "__main__":
    sys.exit(main())
