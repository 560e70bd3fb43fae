"""`alexnet prepare`: the cache on disk, reopening it, reuse, statistics, atomicity, the shape rule."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from alexnet.cli.main import main
from alexnet.data import DatasetStats, compute_stats, open_dataset, prepare
from alexnet.data import cache, preparation, stats, writing
from alexnet.data.decode import decode_image
from alexnet.errors import UsageError
from data_fixtures import idx_folder, photo_folder, save


def test_prepare_writes_a_packed_cache_that_reopens_identically(tmp_path, capsys):
    root = photo_folder(tmp_path / "photos", per_class=12)          # 36 photos: more than one chunk of 32
    out = tmp_path / "cache"
    assert main(["prepare", str(root), "--out", str(out), "--size", "16", "--workers", "2"]) == 0
    assert "prepared: " in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["alexnet-cache.json", "train_images.npy", "train_labels.npy"]
    meta = json.loads((out / "alexnet-cache.json").read_text())
    assert meta["format_version"] == cache.FORMAT_VERSION and meta["classes"] == ["cat", "dog", "fox"]
    assert meta["splits"] == {"train": 36} and meta["shape"] == [16, 16, 3] and meta["skipped"] == []
    assert meta["holdout"] == {"seed": 0} and len(meta["fingerprint"]) == 64
    images = np.load(out / "train_images.npy", mmap_mode="r")
    labels = np.load(out / "train_labels.npy")
    assert isinstance(images, np.memmap) and images.shape == (36, 16, 16, 3) and labels.dtype == np.int64

    # every stored row is its file decoded on its own (order: the seeded held-out order)
    files = {decode_image(str(p), channels=3, size=16).tobytes(): (p.parent.name, p.name)
             for p in sorted(root.rglob("*.*"))}
    stored = [files[row.tobytes()] for row in images]
    assert sorted(stored) == sorted(files.values())
    assert [["cat", "dog", "fox"].index(c) for c, _ in stored] == labels.tolist()

    train = open_dataset(str(out), "train", progress=False)
    val = open_dataset(str(out), "val", progress=False)
    assert isinstance(train.images, np.memmap) and (len(train), len(val)) == (32, 4)
    assert (np.concatenate([train.images, val.images]) == images).all()
    assert (np.concatenate([train.labels, val.labels]) == labels).all()
    implicit = open_dataset(str(root), "val", size=16, cache_dir=str(tmp_path / "c"), progress=False)
    assert (implicit.images == val.images).all() and (implicit.labels == val.labels).all()
    assert np.allclose(train.stats.mean_image, compute_stats(np.asarray(images)).mean_image)


def test_second_prepare_reuses_and_changes_rebuild(tmp_path):
    root = photo_folder(tmp_path / "photos", per_class=2)
    out = str(tmp_path / "cache")
    first = prepare(str(root), out, size=16, workers=0, progress=False)
    written = os.stat(os.path.join(out, "train_images.npy")).st_mtime_ns
    again = prepare(str(root), out, size=16, workers=0, progress=False)
    assert not first.reused and again.reused and "reused the existing cache" in again.summary()
    assert os.stat(os.path.join(out, "train_images.npy")).st_mtime_ns == written
    assert again.counts == first.counts == {"train": 6}
    save(root / "cat" / "new.png", np.zeros((20, 20, 3), np.uint8))
    assert prepare(str(root), out, size=16, workers=0, progress=False).counts == {"train": 7}
    resized = prepare(str(root), out, size=8, workers=0, progress=False)
    assert not resized.reused and resized.shape == (8, 8, 3)
    assert [p for p in os.listdir(tmp_path) if ".tmp-" in p or ".old-" in p] == []


def test_stats_match_numpy_on_all_pixels(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (23, 5, 7, 3), dtype=np.uint8)
    images[..., 1] = images[..., 0] // 2 + 60                       # correlated channels
    monkeypatch.setattr(stats, "CHUNK_ELEMENTS", 200)               # many chunks, one image each
    got = compute_stats(images)
    x = images.astype(np.float64) / 255
    pixels = x.reshape(-1, 3)
    assert np.allclose(got.mean_image, x.mean(axis=0), atol=1e-6)
    assert np.allclose(got.channel_mean, pixels.mean(axis=0), atol=1e-6)
    assert np.allclose(got.channel_std, pixels.std(axis=0), atol=1e-6)
    eigvals, eigvecs = np.linalg.eigh(np.cov(pixels, rowvar=False, bias=True))
    assert np.allclose(got.eigvals, eigvals[::-1], atol=1e-6) and (np.diff(got.eigvals) <= 0).all()
    assert np.allclose(np.abs(got.eigvecs), np.abs(eigvecs[:, ::-1]), atol=1e-5)
    assert got.eigvals.dtype == got.eigvecs.dtype == got.mean_image.dtype == np.float32
    back = DatasetStats.from_dict(json.loads(json.dumps(got.to_dict())))
    assert all((getattr(back, k) == getattr(got, k)).all() for k in ("mean_image", "eigvals", "eigvecs"))
    grey = compute_stats(images[..., :1])
    assert grey.eigvecs.tolist() == [[1.0]] and np.isclose(grey.eigvals[0], pixels[:, 0].var(), atol=1e-6)


def test_prepared_stats_are_of_the_train_split(tmp_path):
    root = photo_folder(tmp_path / "photos", per_class=4)
    report = prepare(str(root), str(tmp_path / "cache"), size=8, workers=0, progress=False)
    meta = json.loads((tmp_path / "cache" / "alexnet-cache.json").read_text())
    saved = DatasetStats.from_dict(meta["stats"])
    direct = compute_stats(np.load(report.paths["train"]))
    assert saved.count == 12 and np.array_equal(saved.mean_image, direct.mean_image)
    assert np.array_equal(saved.eigvecs, direct.eigvecs)


def test_an_interrupted_prepare_leaves_nothing(tmp_path, monkeypatch):
    root = photo_folder(tmp_path / "photos", per_class=3)
    real = writing.write_split

    def write_then_die(*args, **kw):
        real(*args, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(writing, "write_split", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        prepare(str(root), str(tmp_path / "cache"), size=8, workers=0, progress=False)
    assert not (tmp_path / "cache").exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".cache.tmp")] == []
    monkeypatch.setattr(writing, "write_split", real)                # an old cache survives a failed rebuild
    prepare(str(root), str(tmp_path / "cache"), size=8, workers=0, progress=False)
    monkeypatch.setattr(writing, "write_split", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        prepare(str(root), str(tmp_path / "cache"), size=12, workers=0, progress=False)
    assert open_dataset(str(tmp_path / "cache"), val_fraction=0, progress=False).images.shape == (9, 8, 8, 3)


def test_refuses_to_overwrite_other_folders(tmp_path):
    root = photo_folder(tmp_path / "photos", per_class=1)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(UsageError, match="exists and is not an alexnet cache; refusing to overwrite"):
        prepare(str(root), str(tmp_path / "mine"), workers=0, progress=False)
    prepare(str(root), str(tmp_path / "made"), size=8, workers=0, progress=False)
    with pytest.raises(UsageError, match="already a cache made by `alexnet prepare`"):
        prepare(str(tmp_path / "made"), str(tmp_path / "again"), progress=False)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_shape_rule_small_images_kept_others_short_side_and_centre_crop(tmp_path):
    for i in range(3):
        save(tmp_path / "digits" / str(i) / f"{i}.png", np.full((28, 28), 50 * i, np.uint8))
    assert prepare(str(tmp_path / "digits"), str(tmp_path / "d"), workers=0, progress=False).shape == (28, 28, 1)
    assert prepare(str(tmp_path / "digits"), str(tmp_path / "d2"), size=14, workers=0,
                   progress=False).shape == (14, 14, 1)

    wide = np.zeros((20, 60, 3), np.uint8)                           # left, centre and right thirds
    wide[:, :20], wide[:, 20:40], wide[:, 40:] = [255, 0, 0], [0, 255, 0], [0, 0, 255]
    save(tmp_path / "wide" / "a" / "wide.png", wide)
    save(tmp_path / "wide" / "a" / "small.png", np.full((5, 3, 3), 7, np.uint8))
    report = prepare(str(tmp_path / "wide"), str(tmp_path / "w"), size=10, workers=0, progress=False)
    rows = np.load(report.paths["train"])
    assert report.shape == (10, 10, 3)
    centre = next(r for r in rows if r[0, 0, 1] > 0)
    assert (centre[:, 2:8] == [0, 255, 0]).all()                     # the central square: the green third
    assert any((r == 7).all() for r in rows)                         # the 3x5 image, upscaled to 10x10
    # [4] rescale so the short side is 10 (60x20 -> 30x10), then the central 10x10: edges see their neighbours
    expected = np.asarray(Image.fromarray(wide).resize((30, 10), Image.Resampling.BILINEAR))[:, 10:20]
    assert np.abs(centre.astype(int) - expected).max() <= 2


def test_small_image_sources_prepare_as_they_are(tmp_path):
    root = idx_folder(tmp_path / "idx", n_train=30, n_test=10)
    report = prepare(str(root), str(tmp_path / "c"), progress=False)
    assert report.counts == {"train": 30, "test": 10} and report.shape == (8, 8, 1)

    def ident(s):                                                    # image i stores i in pixels [0, 0] and [0, 1]
        return sorted((s.images[:, 0, 0, 0].astype(int) + 256 * s.images[:, 0, 1, 0].astype(int)).tolist())

    for split in ("train", "val", "test"):                           # same held-out part from memory or cache
        direct = open_dataset(str(root), split, val_fraction=0.2, progress=False)
        cached = open_dataset(str(tmp_path / "c"), split, val_fraction=0.2, progress=False)
        assert ident(direct) == ident(cached)
        assert np.array_equal(direct.stats.eigvals, cached.stats.eigvals)
    with pytest.raises(UsageError, match="holds 1-channel images, 3 were asked for"):
        open_dataset(str(tmp_path / "c"), channels=3, progress=False)
    small = open_dataset(str(root), "test", size=4, progress=False)   # larger than size: the shape rule applies
    assert small.images.shape == (10, 4, 4, 1)
    assert prepare(str(root), str(tmp_path / "c4"), size=4, progress=False).shape == (4, 4, 1)


def test_out_inside_the_data_and_empty_splits_are_refused(tmp_path):
    root = photo_folder(tmp_path / "photos" / "train", per_class=2)
    with pytest.raises(UsageError, match="is inside the data folder"):
        prepare(str(root), str(root / "cache"), workers=0, progress=False)
    (tmp_path / "photos" / "val" / "cat").mkdir(parents=True)
    with pytest.raises(UsageError, match="the val split of .* has no images"):
        open_dataset(str(tmp_path / "photos"), "val", cache_dir=str(tmp_path / "c"), progress=False)


def test_the_cache_reader_is_strict_when_opening_and_lenient_when_prepare_looks_for_reuse(tmp_path):
    root = photo_folder(tmp_path / "photos", per_class=2)
    out = tmp_path / "cache"
    prepare(str(root), str(out), size=8, workers=0, progress=False)
    assert cache.read_metadata(str(out))["format_version"] == cache.FORMAT_VERSION
    metadata = out / cache.CACHE_METADATA
    for text, problem in (("{not json", "damaged cache metadata"), ("[1, 2]", "damaged cache metadata"),
                          ('{"format_version": 0}', "cache format 0, this alexnet reads 1")):
        metadata.write_text(text)
        assert cache.read_metadata(str(out), required=False) is None
        with pytest.raises(UsageError, match=problem):
            cache.read_metadata(str(out))
        with pytest.raises(UsageError, match=problem):
            open_dataset(str(out), progress=False)
    assert not prepare(str(root), str(out), size=8, workers=0, progress=False).reused   # rebuilt in place
    assert open_dataset(str(out), val_fraction=0, progress=False).images.shape == (6, 8, 8, 3)
