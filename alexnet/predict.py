"""``alexnet predict``: top-k classes for image files, preprocessed like training's evaluation."""
from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np

from alexnet import backends
from alexnet.data.decode import MAX_PIXELS, BadImage, decode_image, is_image_file
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


class Predictor:
    """A network loaded once with its own evaluation preprocessing: what ``alexnet predict`` runs for files
    and ``alexnet serve`` for uploads, one code path. ``checkpoint``: a checkpoint or an export
    (``alexnet.backends.load``; ``backend`` None: the file's default)."""

    def __init__(self, checkpoint: str, *, ten_crop: bool | None = None, device: str = "auto",
                 batch_size: int = 64, backend: str | None = None) -> None:
        self.loaded = backends.load(checkpoint, backend, device)
        self.info = self.loaded.info
        self.data, self.classes = self.info["data"], self.info["classes"]
        if ten_crop is None:      # as `alexnet eval`: the recipe decides (paper: 10 views [4], quick: the centre)
            ten_crop = bool(self.info["config"].get("ten_crop", False))
        self.ten_crop, self.batch_size = ten_crop, batch_size
        self.transform = Preprocessing.from_dict(self.data).eval_transform(ten_crop)

    @property
    def side(self) -> int:
        return self.data["image_size"][0]

    def decode(self, path: str | io.BytesIO, max_pixels: int = MAX_PIXELS) -> np.ndarray:
        """uint8 (H, W, C) as the model's data was decoded [4]; raises BadImage with the reason."""
        return decode_image(path, channels=self.data["channels"], size=self.side,
                            rule=self.data.get("decode", "square"), max_pixels=max_pixels)

    def decode_bytes(self, data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
        """``decode`` for an image file's bytes (an upload): the same decoding, the same BadImage reasons."""
        return self.decode(io.BytesIO(data), max_pixels)

    def probabilities(self, images: list[np.ndarray] | np.ndarray):
        """Softmax (N, K) for decoded images, averaged over the views."""
        return predict_probs([self.loaded.model], np.stack(images) if isinstance(images, list) else images,
                             self.transform, batch_size=self.batch_size, device=self.loaded.device)

    def topk(self, images: list[np.ndarray] | np.ndarray, k: int = 5) -> list[list[dict]]:
        """For each decoded image, its ``k`` most probable classes: [{label, index, prob}], best first."""
        if len(images) == 0:
            return []
        values, indices = self.probabilities(images).topk(min(k, len(self.classes)), dim=1)
        return [[{"label": self.classes[i], "index": i, "prob": v} for v, i in zip(vals, idxs)]
                for vals, idxs in zip(values.tolist(), indices.tolist())]


def predict(checkpoint: str, inputs: list[str], *, topk: int = 5, ten_crop: bool | None = None, device: str = "auto",
            batch_size: int = 64, backend: str | None = None) -> tuple[list[dict], list[tuple[str, str]]]:
    """Returns ([{path, topk: [{label, index, prob}]}], [(path, reason) skipped])."""
    predictor = Predictor(checkpoint, ten_crop=ten_crop, device=device, batch_size=batch_size, backend=backend)
    images, kept, skipped = [], [], []
    for path in expand_paths(inputs):
        try:
            images.append(predictor.decode(path))
            kept.append(path)
        except BadImage as err:
            skipped.append((path, str(err)))
            print(f"skipped {path}: {err}", file=sys.stderr)
    return [{"path": path, "topk": top} for path, top in zip(kept, predictor.topk(images, topk))], skipped


def format_predictions(results: list[dict]) -> str:
    lines = []
    for r in results:
        best = ", ".join(f"{t['label']} {t['prob']:.3f}" for t in r["topk"])
        lines.append(f"{r['path']}: {best}")
    return "\n".join(lines)
