"""What a network learned, as the paper shows it: conv1's kernels (Fig. 3) and nearest neighbours in feature space (Fig. 4).

``show_kernels`` draws the first ``nn.Conv2d`` of any model, each kernel min-max scaled on its own; for a model
of the paper's two towers [3.2] the two halves of conv1 (the maps each GPU's conv2 reads) are two blocks, as in
Fig. 3. ``show_neighbors`` puts query images beside the training images whose last-hidden-layer activations are
nearest in Euclidean distance [6.1], computed by ``alexnet.inspection.features``.
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from alexnet.checkpoint import load_model
from alexnet.errors import UsageError
from alexnet.inspection.features import extract_features, layer_label, resolve_layer
from alexnet.models import model_info
from alexnet.util.atomic import atomic_path
from alexnet.util.plots import new_figure
from alexnet.train.parts import resolve_device

DPI = 110   # plots.save_figure's
MAX_QUERIES, MAX_K = 100, 50   # rows and columns of Fig. 4's grid: beyond them a figure is no use, and huge


def save_image(fig: Figure, path: str | os.PathLike) -> None:
    """``fig`` written whole to ``path`` in the format its suffix names (.png, .jpg, .pdf, .svg, ...; none: PNG)."""
    suffix = os.path.splitext(str(path))[1].lower() or ".png"
    with atomic_path(path, suffix=suffix) as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format=suffix[1:])


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The name and module of the model's first ``nn.Conv2d`` (conv1)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise UsageError(f"{getattr(model, 'model_name', type(model).__name__)} has no convolution to show")


def scaled_kernels(weight: torch.Tensor) -> np.ndarray:
    """(out, in, h, w) weights -> (out, h, w, 3 or 1) in [0, 1], each kernel min-max scaled on its own.

    RGB kernels keep their colours (one scale for the three channels); inputs other than 1 or 3 channels
    are shown as their mean over the input channels, in grey."""
    w = weight.detach().float().cpu()
    if w.shape[1] != 3:
        w = w.mean(1, keepdim=True)
    low = w.amin(dim=(1, 2, 3), keepdim=True)
    span = w.amax(dim=(1, 2, 3), keepdim=True) - low
    scaled = torch.where(span > 0, (w - low) / span.clamp_min(1e-12), torch.full_like(w, 0.5))
    return scaled.permute(0, 2, 3, 1).numpy()


def kernel_blocks(model: nn.Module, towers: bool) -> list[tuple[str, np.ndarray]]:
    """(label, kernels) per block: one block, or the two towers' halves (48 + 48 for alexnet_2012) [3.2]."""
    name, conv = first_conv(model)
    kernels = scaled_kernels(conv.weight)
    size = "x".join(map(str, conv.kernel_size))
    channels = {3: "RGB", 1: "grey"}.get(conv.in_channels, f"mean of {conv.in_channels} channels")
    if towers and len(kernels) % 2 == 0:
        half = len(kernels) // 2
        return [(f"GPU {t + 1} (tower {t}): {name} kernels {t * half + 1}-{(t + 1) * half} of {len(kernels)}, "
                 f"{size} {channels}", kernels[t * half:(t + 1) * half]) for t in (0, 1)]
    return [(f"{name}: {len(kernels)} kernels, {size} {channels}", kernels)]


def mosaic(kernels: np.ndarray, columns: int, gap: int = 1) -> np.ndarray:
    """(n, h, w, c) tiles -> one (rows (h + gap) + gap, columns (w + gap) + gap, c) image on a white ground."""
    n, h, w, c = kernels.shape
    rows = math.ceil(n / columns)
    image = np.ones((rows * (h + gap) + gap, columns * (w + gap) + gap, c), np.float32)
    for i, tile in enumerate(kernels):
        top, left = gap + (i // columns) * (h + gap), gap + (i % columns) * (w + gap)
        image[top:top + h, left:left + w] = tile
    return image


def kernel_columns(n: int) -> int:
    return 16 if n >= 48 else min(n, 8)


def plot_kernels(blocks: list[tuple[str, np.ndarray]], path: str | os.PathLike, title: str) -> Figure:
    """One row of axes per block, each a mosaic of its kernels drawn with square, unsmoothed pixels."""
    images = [mosaic(kernels, kernel_columns(len(kernels))) for _, kernels in blocks]
    zoom = max(5, 48 // (blocks[0][1].shape[1] + 1))           # screen pixels per kernel pixel
    width = max(image.shape[1] for image in images) * zoom / DPI
    heights = [image.shape[0] * zoom / DPI for image in images]
    fig = new_figure((max(width, 4.0), sum(heights) + 0.35 * len(images) + 0.3))
    axes = fig.subplots(len(images), 1, gridspec_kw={"height_ratios": heights, "hspace": 0.25}, squeeze=False)[:, 0]
    for ax, (label, _), image in zip(axes, blocks, images):
        ax.imshow(image[..., 0] if image.shape[2] == 1 else image, cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    save_image(fig, path)
    return fig


def show_kernels(checkpoint: str, out: str | None = None) -> dict:
    """Fig. 3: conv1's kernels of ``checkpoint`` as ``out`` (default: kernels.png next to it)."""
    model, ckpt = load_model(checkpoint)
    name = ckpt.model.name
    out = out or os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "kernels.png")
    blocks = kernel_blocks(model, model_info(name).towers)
    plot_kernels(blocks, out, f"{name}: first-layer kernels of {os.path.basename(checkpoint)}")
    return {"png": out, "model": name, "blocks": [(label, len(kernels)) for label, kernels in blocks]}


def nearest_neighbors(queries: np.ndarray, pool: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, distances), each (Q, k): the ``k`` rows of ``pool`` nearest to each query (Euclidean,
    ascending; ties keep the pool's order)."""
    if k > len(pool):
        raise UsageError(f"--k {k} is more than the {len(pool)} training images")
    q, p = torch.from_numpy(np.asarray(queries, np.float32)), torch.from_numpy(np.asarray(pool, np.float32))
    distances = torch.cat([torch.cdist(q[i:i + 64], p, compute_mode="donot_use_mm_for_euclid_dist")
                           for i in range(0, len(q), 64)]) if len(q) else torch.empty(0, len(p))
    nearest = distances.sort(dim=1, stable=True)
    return nearest.indices[:, :k].numpy(), nearest.values[:, :k].numpy()


def _tile(ax, image: np.ndarray, title: str, color: str = "black", query: bool = False) -> None:
    ax.imshow(image[..., 0] if image.shape[2] == 1 else image, cmap="gray", vmin=0, vmax=255)
    ax.set_title(title, fontsize=7, color=color, fontweight="bold" if query else "normal")
    ax.set_xticks([])
    ax.set_yticks([])
    if query:                      # a frame sets the query apart from its neighbours
        for spine in ax.spines.values():
            spine.set(color="tab:blue", linewidth=2.5)


def plot_neighbors(query_images: np.ndarray, query_labels: np.ndarray, neighbor_images: np.ndarray,
                   neighbor_labels: np.ndarray, distances: np.ndarray, classes: list[str],
                   path: str | os.PathLike, title: str) -> Figure:
    """Fig. 4's grid: one row per query, the query first, then its neighbours nearest first (label in green:
    the query's class, red: another)."""
    rows, k = neighbor_labels.shape
    height = 1.35 * rows + 0.8
    fig = new_figure((1.25 * (k + 1) + 0.3, height))
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.75 / height)   # room for two title lines
    axes = fig.subplots(rows, k + 1, squeeze=False, gridspec_kw={"wspace": 0.15, "hspace": 0.45})
    for r in range(rows):
        _tile(axes[r, 0], query_images[r], f"query: {classes[query_labels[r]]}", query=True)
        for j in range(k):
            label = neighbor_labels[r, j]
            _tile(axes[r, j + 1], neighbor_images[r, j], f"{j + 1}: {classes[label]}\nd={distances[r, j]:.3g}",
                  "green" if label == query_labels[r] else "red")
    fig.suptitle(title, fontsize=9, y=1 - 0.05 / height, va="top")
    save_image(fig, path)
    return fig


def show_neighbors(checkpoint: str, data: str | None = None, split: str = "test", *, queries: int = 5, k: int = 6,
                   layer: str | None = None, out: str | None = None, seed: int = 0, batch_size: int = 256,
                   device: str = "auto", data_root: str | None = None, progress: bool = True) -> dict:
    """Fig. 4: ``queries`` seeded images of ``split`` and the ``k`` training images nearest in feature space."""
    model, ckpt = load_model(checkpoint)
    resolve_layer(model, layer)
    out = out or os.path.join(os.path.dirname(os.path.abspath(checkpoint)), f"neighbors_{split}.png")
    train_set = ckpt.open_split("train", data=data, data_root=data_root, progress=progress)
    query_set = ckpt.open_split(split, data=data, data_root=data_root, progress=progress)
    if not 1 <= queries <= min(len(query_set), MAX_QUERIES):   # before any feature is computed
        raise UsageError(f"--queries {queries}: choose 1 to {min(len(query_set), MAX_QUERIES)} (the {split} split "
                         f"has {len(query_set)} images; the figure shows at most {MAX_QUERIES} rows)")
    if not 1 <= k <= min(len(train_set), MAX_K):
        raise UsageError(f"--k {k} is more than the {len(train_set)} training images" if k > len(train_set) else
                         f"--k {k}: choose 1 to {MAX_K} neighbours (one column of the figure each)")
    if seed < 0:
        raise UsageError(f"--seed must be >= 0, got {seed}")
    picks = np.sort(np.random.default_rng(seed).choice(len(query_set), size=queries, replace=False))
    device = resolve_device(device)
    model = model.to(device)
    transform = ckpt.preprocessing.eval_transform()
    run = dict(layer=layer, batch_size=batch_size, device=device, progress=progress)
    pool = extract_features(model, train_set.images, transform, desc="features train", **run)
    query_images = np.asarray(query_set.images[picks])
    found, distances = nearest_neighbors(extract_features(model, query_images, transform, desc=f"features {split}",
                                                          **run), pool, k)
    labels = np.asarray(train_set.labels)
    query_labels = np.asarray(query_set.labels)[picks]
    name = layer_label(model, layer)
    plot_neighbors(query_images, query_labels, np.asarray(train_set.images[found.ravel()]).reshape(
        found.shape + train_set.images.shape[1:]), labels[found], distances, list(query_set.classes), out,
        f"{os.path.basename(checkpoint)}: {split} images (left) and the {k} training images nearest\n"
        f"by {name}: {pool.shape[1]} features, Euclidean distance d")
    return {"png": out, "queries": picks.tolist(), "neighbors": found.tolist(), "distances": distances.tolist(),
            "layer": name, "same_class": float((labels[found] == query_labels[:, None]).mean())}
