"""alexnet.data.listing: symbolic links and link loops in a data folder, GIF files, duplicate CSV rows."""
from __future__ import annotations

import contextlib
import os
import signal

import numpy as np
import pytest

from alexnet.cli.main import main
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


def test_gif_in_a_class_folder_is_a_reported_skip_and_refused_by_strict(tmp_path, capsys):
    root = photo_folder(tmp_path / "photos", per_class=3, classes=("cat", "dog"))
    from PIL import Image
    frames = [Image.new("RGB", (10, 10), c) for c in ("red", "blue")]
    frames[0].save(root / "cat" / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    listing = list_image_folder(str(root))
    assert len(listing.splits["train"]) == 6
    assert [(os.path.basename(p), "GIF" in r) for p, r in listing.skipped] == [("anim.gif", True)]
    args = ["prepare", str(root), "--out", str(tmp_path / "c"), "--size", "16", "--workers", "0"]
    assert main(args + ["--strict"]) == 2
    assert "anim.gif" in capsys.readouterr().err and not (tmp_path / "c").exists()
    assert main(args) == 0 and "anim.gif: GIF" in capsys.readouterr().out


def _csv_folder(tmp_path, rows: str):
    for i in range(3):
        save(tmp_path / "images" / f"{i}.png", np.full((8, 8, 3), i * 40, np.uint8))
    (tmp_path / "labels.csv").write_text("image,label\n" + rows)
    return tmp_path / "labels.csv"


def test_csv_exact_duplicate_rows_are_dropped_and_counted(tmp_path):
    path = _csv_folder(tmp_path, "0,cat\n1,dog\n0,cat\nimages/0.png,cat\n2,dog\n")
    listing = list_csv(str(path))
    assert sorted(os.path.basename(p) for p, _ in listing.splits["train"]) == ["0.png", "1.png", "2.png"]
    assert listing.skipped == [(str(path), "2 duplicate row(s) dropped (same image and label as an earlier row): "
                                           "lines 4, 5")]


def test_csv_same_image_with_two_labels_is_refused_naming_the_lines(tmp_path, capsys):
    path = _csv_folder(tmp_path, "0,cat\n1,dog\n2,dog\n0,dog\n")
    with pytest.raises(UsageError, match=r"labels.csv: 1 image\(s\) listed with two different labels"):
        list_csv(str(path))
    assert main(["prepare", str(path), "--out", str(tmp_path / "c"), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "0.png has label 'cat' on line 2 and 'dog' on line 5" in err and "Traceback" not in err
