"""``alexnet predict``: top-k classes for image files, preprocessed like training's evaluation."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from alexnet import backends
from alexnet.data.decode import BadImage, decode_image, is_image_file
from alexnet.errors import UsageError
from alexnet.evaluate import predict_probs
from alexnet.run import Preprocessing


def expand_paths(inputs: list[str]) -> list[str]:
    """Files as given; folders expanded to the image files below them (sorted)."""
    paths: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            paths += sorted(str(p) for p in Path(item).rglob("*") if p.is_file() and is_image_file(p.name))
        elif os.path.exists(item):
            paths.append(item)
        else:
            raise UsageError(f"{item} does not exist")
    return paths


def predict(checkpoint: str, inputs: list[str], *, topk: int = 5, ten_crop: bool | None = None, device: str = "auto",
            batch_size: int = 64, backend: str | None = None) -> tuple[list[dict], list[tuple[str, str]]]:
    """Returns ([{path, topk: [{label, index, prob}]}], [(path, reason) skipped]). ``checkpoint``: a checkpoint
    or an export (``alexnet.backends.load``; ``backend`` None: the file's default)."""
    loaded = backends.load(checkpoint, backend, device)
    ckpt = loaded.info
    data, classes = ckpt["data"], ckpt["classes"]
    if ten_crop is None:          # as `alexnet eval`: the recipe decides (paper: 10 views [4], quick: the centre)
        ten_crop = bool(ckpt["config"].get("ten_crop", False))
    side = data["image_size"][0]
    images, kept, skipped = [], [], []
    for path in expand_paths(inputs):
        try:
            images.append(decode_image(path, channels=data["channels"], size=side, rule=data.get("decode", "square")))
            kept.append(path)
        except BadImage as err:
            skipped.append((path, str(err)))
            print(f"skipped {path}: {err}", file=sys.stderr)
    results = []
    if images:
        probs = predict_probs([loaded.model], np.stack(images), Preprocessing.from_dict(data).eval_transform(ten_crop),
                              batch_size=batch_size, device=loaded.device)
        values, indices = probs.topk(min(topk, len(classes)), dim=1)
        for path, vals, idxs in zip(kept, values.tolist(), indices.tolist()):
            results.append({"path": path, "topk": [{"label": classes[i], "index": i, "prob": v}
                                                   for v, i in zip(vals, idxs)]})
    return results, skipped


def format_predictions(results: list[dict]) -> str:
    lines = []
    for r in results:
        best = ", ".join(f"{t['label']} {t['prob']:.3f}" for t in r["topk"])
        lines.append(f"{r['path']}: {best}")
    return "\n".join(lines)
