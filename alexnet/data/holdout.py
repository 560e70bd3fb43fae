"""The held-out split: a seeded, class-stratified fraction of train used as val when a source has no val split.

``holdout_order(labels, seed)`` is a permutation whose first ``holdout_count(N, fraction)`` items are the
held-out set, for any fraction. In-memory sources select by that order (``select(..., order)``); caches
store train in ``stored_order`` (the reverse), so the held-out set is their LAST rows and both parts are
slices of one memory map (``select(..., None)``).
"""
from __future__ import annotations

import numpy as np

from alexnet.errors import UsageError

HOLDOUT_SEED = 0      # held-out order of implicitly prepared caches: independent of the training seed


def holdout_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """A seeded permutation of range(N) whose every prefix is a class-stratified random sample.

    The first ``holdout_count(N, fraction)`` items are the held-out validation set, for any fraction;
    within each class the items are shuffled and spread evenly along the order.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if n == 0:
        return np.zeros(0, np.int64)
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(n)
    grouped = shuffled[np.argsort(labels[shuffled], kind="stable")]   # classes in turn, each shuffled
    counts = np.bincount(labels)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(n) - starts[labels[grouped]]                      # position within its class
    key = np.empty(n)
    key[grouped] = (rank + rng.random(n)) / counts[labels[grouped]]
    return np.argsort(key, kind="stable")


def holdout_count(n: int, fraction: float) -> int:
    """How many of ``n`` training items are held out for validation (at least one when fraction > 0)."""
    if fraction <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, int(round(fraction * n))))


def stored_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """The order a cache stores train in when the source has no val split: held-out items last."""
    return holdout_order(labels, seed)[::-1]


def select(images: np.ndarray, labels: np.ndarray, split: str, spec: str, val_fraction: float,
           order: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, str]:
    """The "train" or "val" part of a train split: (images, labels, a note saying what was taken).

    ``order``: ``holdout_order`` of the labels (in-memory sources), or None for a cache, stored in
    ``stored_order``: the held-out part is then the last rows.
    """
    n = len(labels)
    k = holdout_count(n, val_fraction)
    if split == "val" and k == 0:
        raise UsageError(f"{spec} has no validation split and --val-fraction is {val_fraction}; "
                         f"hold some of train out with --val-fraction > 0")
    if order is None:
        part = slice(n - k, n) if split == "val" else slice(0, n - k)
    else:
        part = np.sort(order[:k] if split == "val" else order[k:])
    note = f"{split}: {n - k if split == 'train' else k:,} of {n:,} train images ({val_fraction:g} held out for val)"
    return images[part], labels[part], note
