"""Issue 11: symbolic links and link loops in a data folder, GIF files, duplicate CSV rows."""
from __future__ import annotations

import contextlib
import os
import signal

import numpy as np
import pytest

from alexnet.cli import main
from alexnet.data.listing import list_csv, list_image_folder
from alexnet.errors import UsageError
from data_fixtures import photo_folder, save


@contextlib.contextmanager
def time_limit(seconds: int):
    """A regression (an endless walk) fails the test instead of hanging the suite."""
    def expire(*_):
        raise TimeoutError(f"did not finish in {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_two_link_cycle_between_class_folders_ends_and_lists_each_image_once(tmp_path):
    root = photo_folder(tmp_path / "photos", per_class=3, classes=("cat", "dog"))
    os.symlink("../dog", root / "cat" / "todog")
    os.symlink("../cat", root / "dog" / "tocat")
    with time_limit(20):
        listing = list_image_folder(str(root))
    paths = [p for p, _ in listing.splits["train"]]
    assert len(paths) == 6 and len({os.path.realpath(p) for p in paths}) == 6
    labels = {os.path.basename(os.path.dirname(p)): lab for p, lab in listing.splits["train"]}
    assert labels == {"cat": 0, "dog": 1}                     # each image keeps its own class
    reasons = [r for _, r in listing.skipped]
    assert sum("followed links: 1 duplicate paths skipped" in r for r in reasons) == 2


def test_link_to_the_folder_itself_counts_each_image_once(tmp_path, capsys):
    root = photo_folder(tmp_path / "photos", per_class=4, classes=("cat", "dog"))
    os.symlink(".", root / "cat" / "again")
    os.symlink(str(root / "dog" / "0.png"), root / "dog" / "copy.png")   # a file linked twice
    (root / "dog" / "sub").mkdir()
    os.symlink("..", root / "dog" / "sub" / "up")
    with time_limit(20):
        listing = list_image_folder(str(root))
    assert len(listing.splits["train"]) == 8
    assert any("followed links" in r for _, r in listing.skipped)
    with time_limit(60):
        assert main(["prepare", str(root), "--out", str(tmp_path / "c"), "--size", "16", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "train 8" in out and "duplicate paths skipped" in out


def test_a_link_to_another_folder_outside_is_followed(tmp_path):
    root = photo_folder(tmp_path / "photos", per_class=2, classes=("cat", "dog"))
    save(tmp_path / "more" / "x.png", np.zeros((8, 8, 3), np.uint8))
    os.symlink(str(tmp_path / "more"), root / "cat" / "more")
    listing = list_image_folder(str(root))
    assert len(listing.splits["train"]) == 5 and listing.skipped == []
