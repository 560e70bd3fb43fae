"""What `alexnet train` with no arguments does after training: eval on the test set, predict samples."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from alexnet.checkpoint import Checkpoint
from alexnet.inference.evaluate import evaluate_checkpoints, format_accuracy
from alexnet.inference.predict import format_predictions, predict


def write_samples(out: str, count: int = 6) -> list[str]:
    """Save the first ``count`` test images as PNG files (one per class where possible)."""
    test = Checkpoint.load(os.path.join(out, "best.pt")).open_split("test", progress=False)
    folder = os.path.join(out, "samples")
    os.makedirs(folder, exist_ok=True)
    paths, seen = [], set()
    for i, label in enumerate(np.asarray(test.labels)):
        if label in seen:
            continue
        seen.add(label)
        image = np.asarray(test.images[i])
        name = test.classes[label].replace("/", "-").replace(" ", "_")
        path = os.path.join(folder, f"test{i:05d}_{name}.png")
        Image.fromarray(image[:, :, 0] if image.shape[-1] == 1 else image).save(path)
        paths.append(path)
        if len(paths) == count:
            break
    return paths


def after_training(out: str) -> None:
    best = os.path.join(out, "best.pt")
    print(f"\n$ alexnet eval {best}")
    report = evaluate_checkpoints([best], confusion_png=os.path.join(out, "confusion_test.png"))
    print(format_accuracy(report))
    samples = write_samples(out)
    print(f"\n$ alexnet predict {best} {os.path.join(out, 'samples')} --topk 3")
    results, _ = predict(best, samples, topk=3)
    print(format_predictions(results))
    print(f"\ncurves: {os.path.join(out, 'curves.png')}   TensorBoard: tensorboard --logdir {out}")
