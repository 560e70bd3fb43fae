"""Figures written by training and evaluation (matplotlib, no screen needed).

Figures are built with matplotlib's object-oriented API and drawn by its Agg canvas, never through pyplot:
no backend is chosen for the process (an application's own matplotlib backend stays as it was), and no
figure is kept in pyplot's registry, so none needs closing.
"""
from __future__ import annotations

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from alexnet.util.atomic import atomic_path


def new_figure(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)   # draws PNGs itself, whatever the process's backend
    return fig


def save_figure(fig: Figure, path: str | os.PathLike) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")


def plot_curves(history: list[dict], path: str | os.PathLike) -> None:
    """Loss, top-1 accuracy and learning rate per epoch (train and validation)."""
    epochs = [h["epoch"] for h in history]
    fig = new_figure((14, 4))
    axes = fig.subplots(1, 3)
    axes[0].plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    axes[0].plot(epochs, [h["val_loss"] for h in history], "o-", label="val")
    axes[0].set_title("loss")
    axes[1].plot(epochs, [h["train_top1"] for h in history], "o-", label="train")
    axes[1].plot(epochs, [h["val_top1"] for h in history], "o-", label="val")
    axes[1].set_title("top-1 accuracy")
    axes[2].plot(epochs, [h["lr"] for h in history], "o-")
    axes[2].set_yscale("log")
    axes[2].set_title("learning rate (end of epoch)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    save_figure(fig, path)


def plot_confusion(confusion: np.ndarray, classes: list[str], path: str | os.PathLike, title: str = "") -> None:
    """Row-normalised confusion matrix (rows: true class, columns: predicted)."""
    counts = confusion.astype(np.float64)
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = max(5, 0.45 * len(classes) + 2)
    fig = new_figure((size + 1, size))
    ax = fig.subplots()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    if len(classes) <= 30:
        ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(classes)), classes, fontsize=8)
        for i in range(len(classes)):
            for j in range(len(classes)):
                if counts[i, j]:
                    ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    fig.colorbar(image, ax=ax, fraction=0.046)
    save_figure(fig, path)
