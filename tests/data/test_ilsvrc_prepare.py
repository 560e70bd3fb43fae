"""alexnet.data.ilsvrc through alexnet.data.preparation: ILSVRC-2012 as users hold it, through `alexnet prepare`,
`train --data ROOT` and `eval`.

The listing of each layout is tests/data/test_ilsvrc.py's; here the whole path: the cache of every layout holds every
image with its label (matched by its decoded pixels), the archives are read in place into the same cache as the
extracted tree, the metadata keeps the wnids and names, and a bad devkit is exit 2 naming the file.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from alexnet.cli.main import main
from alexnet.data import cache, open_dataset, prepare
from alexnet.data.decode import decode_image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from ilsvrc_tree import (make_plan, small_jpeg, synsets, write_archives, write_devkit_layout,  # noqa: E402
                         write_kaggle, write_sorted)

WRITERS = {"devkit": write_devkit_layout, "archives": write_archives, "kaggle": write_kaggle, "sorted": write_sorted}
SIZE = 16


@pytest.fixture(scope="module")
def plan():
    return make_plan(synsets(6, seed=3), train_per_class=3, val_per_class=2, seed=3)


@pytest.fixture(scope="module")
def trees(plan, tmp_path_factory):
    root = tmp_path_factory.mktemp("ilsvrc")
    for layout, write in WRITERS.items():
        write(root / layout, plan)
    return root


@pytest.fixture(scope="module")
def by_pixels(plan):
    """The decoded SIZE x SIZE square of every image the builder wrote -> its wnid (the images are all distinct)."""
    found = {}
    for name, wnid in plan.truth.items():
        import io
        pixels = decode_image(io.BytesIO(small_jpeg(wnid, name)), channels=3, size=SIZE)
        found[pixels.tobytes()] = wnid
    assert len(found) == len(plan.truth)
    return found


@pytest.mark.parametrize("layout", list(WRITERS))
def test_every_image_of_every_layout_is_cached_with_its_label_and_names(layout, trees, by_pixels, plan, tmp_path):
    out = tmp_path / "cache"
    report = prepare(str(trees / layout), str(out), size=SIZE, store="raw", workers=2, progress=False)
    meta = cache.read_metadata(str(out))
    wnids = sorted(plan.train)
    assert meta["kind"] == "ilsvrc" and meta["layout"] == layout and meta["wnids"] == wnids
    words = {s.wnid: s.words.split(",")[0] for s in plan.leaves}
    crane = [w for w in wnids if words[w] == "crane"]
    assert meta["classes"] == [f"crane ({w})" if w in crane else words[w] for w in wnids]
    assert report.counts == {"train": 18, "val": 12} and report.shape == (SIZE, SIZE, 3)
    for split in ("train", "val"):
        images, labels = cache.load_split(str(out), meta, split)
        got = [wnids[label] for label in labels]
        assert got == [by_pixels[image.tobytes()] for image in images], split   # each image has its own label
        assert sorted(by_pixels[image.tobytes()] for image in images) == sorted(
            w for n, w in plan.truth.items() if ("val" in n) == (split == "val"))


def test_the_archives_read_in_place_give_the_extracted_trees_cache(trees, tmp_path):
    listing_before = sorted(os.listdir(trees / "archives"))
    archives = prepare(str(trees / "archives"), str(tmp_path / "a"), size=SIZE, workers=2, progress=False)
    extracted = prepare(str(trees / "devkit"), str(tmp_path / "b"), size=SIZE, workers=0, progress=False)
    assert sorted(os.listdir(trees / "archives")) == listing_before             # nothing extracted
    assert archives.store == extracted.store == "jpeg"                          # auto: ILSVRC goes to jpeg
    for split in ("train", "val"):
        a = open_dataset(str(tmp_path / "a"), split, progress=False)
        b = open_dataset(str(tmp_path / "b"), split, progress=False)
        assert np.array_equal(np.asarray(a.images), np.asarray(b.images)) and np.array_equal(a.labels, b.labels)
        assert a.classes == b.classes
    meta = json.loads((tmp_path / "a" / cache.CACHE_METADATA).read_text())
    assert meta["options"]["quality"] == 90 and meta["store"] == "jpeg"
    # a changed archive is new input: the cache is rebuilt, not reused
    assert prepare(str(trees / "archives"), str(tmp_path / "a"), size=SIZE, progress=False).reused
    os.utime(trees / "archives" / "ILSVRC2012_img_val.tar")
    assert not prepare(str(trees / "archives"), str(tmp_path / "a"), size=SIZE, progress=False).reused


def test_a_bad_member_of_an_archive_is_skipped_and_reported(plan, tmp_path, capsys):
    def image(wnid, name):
        return b"not a jpeg" if name == plan.val_files[1][0] else small_jpeg(wnid, name)
    write_archives(tmp_path / "a", plan, image)
    assert main(["prepare", str(tmp_path / "a"), "--out", str(tmp_path / "c"), "--size", str(SIZE)]) == 0
    out = capsys.readouterr().out
    assert "skipped: 1" in out and f"ILSVRC2012_img_val.tar:{plan.val_files[1][0]}" in out
    assert "val 11" in out and "store: jpeg (quality 90)" in out


def test_train_and_eval_straight_from_an_ilsvrc_tree(trees, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "caches"))      # where the implicit cache goes
    run = tmp_path / "run"
    assert main(["train", "--data", str(trees / "kaggle"), "--model", "alexnet_small", "--image-size", "32",
                 "--crop-size", "28", "--epochs", "1", "--batch-size", "6", "--out", str(run), "--quiet"]) == 0
    caches = [p for p in (tmp_path / "caches" / "prepared").iterdir() if not p.name.endswith(".lock")]
    assert len(caches) == 1 and cache.store_of(cache.read_metadata(str(caches[0]))) == "jpeg"
    config = json.loads((run / "config.json").read_text())
    assert config["data"] == str(trees / "kaggle")
    capsys.readouterr()
    assert main(["eval", str(run / "best.pt"), "--split", "val", "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 12 and len(report["per_class"]) == 6 and "tench" in " ".join(report["per_class"])


def test_a_broken_devkit_is_exit_2_naming_the_file(plan, tmp_path, capsys):
    root = tmp_path / "a"
    write_devkit_layout(root, plan, devkit_tar_gz=False)
    truth = root / "ILSVRC2012_devkit_t12" / "data" / "ILSVRC2012_validation_ground_truth.txt"
    truth.write_text("\n".join(truth.read_text().split()[:-1]) + "\n")             # one line short
    assert main(["prepare", str(root), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "ILSVRC2012_validation_ground_truth.txt" in err and "Traceback" not in err
    assert not (tmp_path / "c").exists()
