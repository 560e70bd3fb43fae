"""alexnet.data.jpeg_store, `alexnet prepare --store jpeg`, the compact cache: what is on disk, what reads back, the
loader over it."""
from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet.cli.main import main
from alexnet.data import cache, compute_stats, open_dataset, prepare, writing
from alexnet.data.jpeg_store import JpegImages, decode_pil, encode
from alexnet.data.loader import BatchLoader
from alexnet.data.transforms import TrainTransform
from alexnet.errors import UsageError
from data_fixtures import idx_folder, save, truncated_jpeg

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from photos import write_photo_folder  # noqa: E402  (bench/photos.py)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """36 real photographs (scikit-image/scikit-learn), ImageNet-like sizes, in 4 classes."""
    return write_photo_folder(tmp_path_factory.mktemp("photos") / "train", 36, classes=4, short_side=(90, 140))


@pytest.fixture(scope="module")
def both(photos, tmp_path_factory):
    """The same photos prepared into the raw and the jpeg store at 64 px."""
    root = tmp_path_factory.mktemp("caches")
    raw = prepare(str(photos), str(root / "raw"), size=64, store="raw", workers=0, progress=False)
    jpeg = prepare(str(photos), str(root / "jpeg"), size=64, store="jpeg", workers=2, progress=False)
    return raw, jpeg


def test_the_jpeg_store_on_disk_and_what_it_reads_back(both):
    raw, jpeg = both
    out = Path(jpeg.out)
    assert sorted(os.listdir(out)) == ["alexnet-cache.json", "train_index.npy", "train_jpeg.bin", "train_labels.npy"]
    meta = json.loads((out / cache.CACHE_METADATA).read_text())
    assert meta["store"] == "jpeg" and meta["options"]["quality"] == 90 and meta["shape"] == [64, 64, 3]
    assert jpeg.store == "jpeg" and "store: jpeg (quality 90)" in jpeg.summary() and raw.store == "raw"
    assert jpeg.stored_bytes == os.path.getsize(out / "train_jpeg.bin") < raw.stored_bytes / 4

    index = np.load(out / "train_index.npy")
    blob = (out / "train_jpeg.bin").read_bytes()
    assert index[0] == 0 and index[-1] == len(blob) and len(index) == 37
    assert all(blob[s:s + 2] == b"\xff\xd8" and blob[e - 2:e] == b"\xff\xd9" for s, e in zip(index[:-1], index[1:]))

    images, labels = cache.load_split(jpeg.out, meta, "train")
    raw_images, raw_labels = cache.load_split(raw.out, cache.read_metadata(raw.out), "train")
    assert isinstance(images, JpegImages) and images.shape == raw_images.shape and images.dtype == np.uint8
    assert np.array_equal(labels, raw_labels)                         # the same held-out order, row by row
    decoded = np.asarray(images)
    difference = np.abs(decoded.astype(int) - raw_images.astype(int))
    assert difference.mean() < 5 and np.array_equal(decoded[5], images[5])   # each row is its photo, at q90
    distances = np.abs(decoded[:, None].astype(np.int16) - raw_images[None].astype(np.int16)).mean(axis=(2, 3, 4))
    assert (distances.argmin(axis=1) == np.arange(len(decoded))).all()
    # the statistics are those of the decoded JPEGs (the pixels training sees), exactly
    stats = open_dataset(jpeg.out, progress=False).stats
    assert np.array_equal(stats.mean_image, compute_stats(decoded).mean_image)
    assert np.array_equal(stats.eigvecs, compute_stats(decoded).eigvecs)


def test_pillow_encodes_and_torchvision_decodes_the_same_pixels(photos):
    from alexnet.data.decode import decode_image
    from alexnet.data.jpeg_store import cpu_decoder
    for path in sorted(photos.rglob("*.jpg"))[:6]:
        for channels in (1, 3):
            pixels = decode_image(str(path), channels=channels, size=64)
            blob = encode(pixels, 90)
            decoded = cpu_decoder()(np.frombuffer(blob, np.uint8).copy(), channels)
            assert np.array_equal(decoded.numpy(), decode_pil(blob, channels))


def test_jpeg_images_views_decode_lazily_and_read_in_any_order(both):
    _, jpeg = both
    images = open_dataset(jpeg.out, val_fraction=0, progress=False).images
    everything = np.asarray(images)
    view = images[10:20]
    assert isinstance(view, JpegImages) and len(view) == 10 and np.array_equal(np.asarray(view), everything[10:20])
    picked = images[np.array([7, 3, 3, 30])]
    assert np.array_equal(np.asarray(picked), everything[[7, 3, 3, 30]])
    index = np.array([35, 0, 17, 4, 4])
    out = torch.empty((5, 64, 64, 3), dtype=torch.uint8)
    assert images.read(index, out=out) is out and np.array_equal(out.numpy(), everything[index])
    assert torch.equal(images.read(index, threads=2), out)
    assert images.nbytes == everything.nbytes and images.compressed_nbytes < everything.nbytes / 4


def test_the_loader_over_a_jpeg_store_gives_the_batches_of_its_decoded_array(both):
    _, jpeg = both
    train = open_dataset(jpeg.out, "train", progress=False)
    decoded = np.asarray(train.images)
    transform = TrainTransform(56, pca_std=0.1, stats=train.stats)

    def batches(images, **kw):
        kw = dict(transform=transform, seed=3, **kw)
        return [(x.clone(), y.clone()) for x, y in BatchLoader(images, train.labels, 8, **kw).iterate(1)]
    reference = batches(decoded, in_memory_bytes=0)
    per_batch = batches(train.images, in_memory_bytes=0, threads=2, prefetch=3)    # decoded per batch
    at_once = batches(train.images)                                               # small: decoded once
    assert len(reference) == len(per_batch) == len(at_once) == len(train) // 8
    for (xa, ya), (xb, yb), (xc, yc) in zip(reference, per_batch, at_once):
        assert torch.equal(xa, xb) and torch.equal(xa, xc) and torch.equal(ya, yb) and torch.equal(ya, yc)
    # exact resume: from step 2 the tail of the epoch; DDP: two ranks see disjoint halves
    tail = [x for x, _ in BatchLoader(train.images, train.labels, 8, transform=transform, seed=3,
                                      in_memory_bytes=0).iterate(1, 2)]
    assert all(torch.equal(a, b) for a, b in zip(tail, [x for x, _ in per_batch[2:]]))
    ranks = [BatchLoader(train.images, train.labels, 4, seed=3, rank=r, world_size=2, in_memory_bytes=0).indices(0)
             for r in (0, 1)]
    assert not set(ranks[0].tolist()) & set(ranks[1].tolist())
    assert set(ranks[0].tolist()) | set(ranks[1].tolist()) == set(range(len(train)))


def test_reuse_and_rebuild_follow_store_and_quality(photos, tmp_path):
    out = str(tmp_path / "c")
    first = prepare(str(photos), out, size=32, store="jpeg", workers=0, progress=False)
    assert prepare(str(photos), out, size=32, store="jpeg", workers=0, progress=False).reused
    lower = prepare(str(photos), out, size=32, store="jpeg", quality=50, workers=0, progress=False)
    assert not lower.reused and lower.quality == 50 and lower.stored_bytes < first.stored_bytes
    assert not prepare(str(photos), out, size=32, store="raw", workers=0, progress=False).reused
    assert cache.store_of(cache.read_metadata(out)) == "raw"
    # "auto" is raw for a small photo folder, jpeg once the raw store would pass the limit
    from alexnet.data import preparation
    assert preparation.resolve_store("auto", "folder", 36, 256, None) == "raw"
    assert preparation.resolve_store("auto", "folder", 50_000, 256, None) == "jpeg"
    assert preparation.resolve_store("auto", "ilsvrc", 10, 256, None) == "jpeg"
    assert preparation.resolve_store("auto", "idx", 10 ** 7, 28, None) == "raw"


def test_bad_files_are_skipped_and_reported_in_the_jpeg_store_too(tmp_path, capsys):
    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for i in range(6):
        save(root / ("cat", "dog")[i % 2] / f"{i}.png", rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8))
    (root / "cat" / "text.jpg").write_text("not an image")
    truncated_jpeg(root / "dog" / "truncated.jpg")
    assert main(["prepare", str(root), "--out", str(tmp_path / "c"), "--size", "16", "--store", "jpeg",
                 "--quality", "80", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "store: jpeg (quality 80)" in out and "skipped: 2" in out and "train 6 of 16x16x3" in out
    assert len(open_dataset(str(tmp_path / "c"), val_fraction=0, progress=False)) == 6
    assert main(["prepare", str(root), "--out", str(tmp_path / "d"), "--store", "jpeg", "--strict"]) == 2
    assert "2 bad item(s)" in capsys.readouterr().err and not (tmp_path / "d").exists()
    assert main(["prepare", str(root), "--out", str(tmp_path / "e"), "--quality", "0"]) == 2
    assert "--quality must be a JPEG quality from 1 to 100" in capsys.readouterr().err


def test_small_image_sources_go_into_the_jpeg_store_when_asked(tmp_path):
    root = idx_folder(tmp_path / "idx", n_train=20, n_test=6, size=12)
    report = prepare(str(root), str(tmp_path / "c"), store="jpeg", quality=95, progress=False)
    assert report.store == "jpeg" and report.counts == {"train": 20, "test": 6} and report.shape == (12, 12, 1)
    test = open_dataset(str(tmp_path / "c"), "test", progress=False)
    plain = open_dataset(str(root), "test", progress=False)
    assert isinstance(test.images, JpegImages) and np.abs(np.asarray(test.images).astype(int)
                                                         - plain.images.astype(int)).mean() < 8
    assert np.array_equal(test.labels, plain.labels)


def test_a_damaged_jpeg_store_is_a_usage_error_naming_the_cache(both, tmp_path):
    import shutil
    _, jpeg = both
    copy = tmp_path / "copy"
    shutil.copytree(jpeg.out, copy)
    data = copy / "train_jpeg.bin"
    blob = bytearray(data.read_bytes())
    index = np.load(copy / "train_index.npy")
    blob[index[3] + 2:index[4]] = b"\0" * int(index[4] - index[3] - 2)     # image 3's bytes wiped
    data.write_bytes(bytes(blob))
    images = open_dataset(str(copy), val_fraction=0, progress=False).images
    with pytest.raises(UsageError, match="damaged cache: image 3 does not decode"):
        images.read([3])
    data.write_bytes(bytes(blob[:-10]))                                     # cut short
    with pytest.raises(UsageError, match="train_index.npy: damaged cache"):
        open_dataset(str(copy), progress=False)


def test_a_full_disk_while_writing_the_jpeg_store_is_a_usage_error(photos, tmp_path, monkeypatch, capsys):
    from alexnet.data import jpeg_store

    def full(self, blob, label):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), jpeg_store.jpeg_path(self.folder, self.split))
    monkeypatch.setattr(writing.JpegSplitWriter, "append", full)
    out = tmp_path / "disk" / "c"
    out.parent.mkdir()
    assert main(["prepare", str(photos), "--out", str(out), "--size", "16", "--store", "jpeg", "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "no space left on device while writing" in err and "train_jpeg.bin" in err and "Traceback" not in err
    assert os.listdir(out.parent) == [n for n in os.listdir(out.parent) if n.endswith(".lock")]


def test_train_and_eval_from_a_jpeg_store(both, tmp_path, capsys):
    _, jpeg = both
    run = tmp_path / "run"
    assert main(["train", "--data", jpeg.out, "--model", "alexnet_small", "--epochs", "2", "--batch-size", "8",
                 "--crop-size", "56", "--out", str(run), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert err.count("estimated time:") == 1 and "for the whole run (2 epochs at" in err
    assert err.index("epoch 1/2") < err.index("estimated time:") < err.index("epoch 2/2")
    assert main(["eval", str(run / "best.pt"), "--data", jpeg.out, "--split", "val", "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 4 and 0 <= report["top1"] <= 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_decodes_the_jpeg_store_on_the_device_like_the_cpu(both):
    """nvJPEG on the device against libjpeg-turbo on the CPU: the same images to within a level or two (their
    IDCTs and chroma upsampling differ), and the loader's batches on cuda built from them."""
    _, jpeg = both
    train = open_dataset(jpeg.out, "train", progress=False)
    index = np.arange(len(train))
    on_device = train.images.read_on(index, torch.device("cuda")).permute(0, 2, 3, 1).cpu().numpy()
    on_cpu = train.images.read(index).numpy()
    assert on_device.shape == on_cpu.shape and np.abs(on_device.astype(int) - on_cpu.astype(int)).mean() < 1.5
    transform = TrainTransform(56, pca_std=0.1, stats=train.stats)
    loader = BatchLoader(train.images, train.labels, 8, transform=transform, seed=3, device="cuda", in_memory_bytes=0)
    assert loader.gpu_decode
    cpu = BatchLoader(train.images, train.labels, 8, transform=transform, seed=3, in_memory_bytes=0)
    for (xg, yg), (xc, yc) in zip(loader.iterate(0), cpu.iterate(0)):
        assert xg.is_cuda and torch.equal(yg.cpu(), yc) and (xg.cpu() - xc).abs().mean() < 0.02


def test_an_interrupted_jpeg_prepare_continues_where_it_stopped(photos, tmp_path, monkeypatch, capsys):
    """Progress is committed every COMMIT images; an interrupt keeps it, the same command continues, and the cache
    is byte for byte the one an uninterrupted prepare writes. Other options start afresh."""
    monkeypatch.setattr(writing, "ENCODE_CHUNK", 4)
    monkeypatch.setattr(writing, "COMMIT", 8)
    whole = prepare(str(photos), str(tmp_path / "whole"), size=24, store="jpeg", workers=2, progress=False)
    real, calls = writing.JpegSplitWriter.append, []

    def dies_at_the_19th(self, blob, label):
        calls.append(label)
        if len(calls) == 19:
            raise KeyboardInterrupt
        real(self, blob, label)
    monkeypatch.setattr(writing.JpegSplitWriter, "append", dies_at_the_19th)
    out = tmp_path / "c"
    with pytest.raises(KeyboardInterrupt):
        prepare(str(photos), str(out), size=24, store="jpeg", workers=2)
    partial = [p for p in tmp_path.iterdir() if p.name.startswith(".c.partial-")]
    assert not out.exists() and len(partial) == 1
    assert "the same command continues from there" in capsys.readouterr().err
    monkeypatch.setattr(writing.JpegSplitWriter, "append", real)
    resumed = prepare(str(photos), str(out), size=24, store="jpeg", workers=2)
    assert "train: continuing an interrupted prepare after 16 of 36 images" in capsys.readouterr().err
    assert not partial[0].exists() and resumed.counts == whole.counts == {"train": 36}
    assert sorted(os.listdir(out)) == sorted(os.listdir(whole.out))
    for name in ("train_jpeg.bin", "train_index.npy", "train_labels.npy"):
        assert (out / name).read_bytes() == (Path(whole.out) / name).read_bytes(), name
    assert json.loads((out / cache.CACHE_METADATA).read_text())["stats"] == \
        json.loads((Path(whole.out) / cache.CACHE_METADATA).read_text())["stats"]

    calls.clear()
    monkeypatch.setattr(writing.JpegSplitWriter, "append", dies_at_the_19th)
    with pytest.raises(KeyboardInterrupt):
        prepare(str(photos), str(tmp_path / "d"), size=24, store="jpeg", workers=0, progress=False)
    monkeypatch.setattr(writing.JpegSplitWriter, "append", real)
    prepare(str(photos), str(tmp_path / "d"), size=24, store="jpeg", quality=80, workers=0)   # other options
    assert "continuing" not in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir() if ".partial-" in p.name] == []


def test_a_split_finished_before_the_interrupt_keeps_its_statistics(tmp_path, monkeypatch):
    """Interrupted in val after train was closed (22 train images: the last commit was at 16): the resumed cache,
    statistics included, is the uninterrupted one's, so train's sums are saved when it closes, not only at commits."""
    root = tmp_path / "photos"
    write_photo_folder(root / "train", 22, classes=3, short_side=(60, 90))
    write_photo_folder(root / "val", 9, classes=3, short_side=(60, 90), seed=77)
    monkeypatch.setattr(writing, "ENCODE_CHUNK", 4)
    monkeypatch.setattr(writing, "COMMIT", 8)
    whole = prepare(str(root), str(tmp_path / "whole"), size=24, store="jpeg", workers=0, progress=False)
    real, calls = writing.JpegSplitWriter.append, []

    def dies_in_val(self, blob, label):
        calls.append(label)
        if len(calls) == 27:
            raise KeyboardInterrupt
        real(self, blob, label)
    monkeypatch.setattr(writing.JpegSplitWriter, "append", dies_in_val)
    with pytest.raises(KeyboardInterrupt):
        prepare(str(root), str(tmp_path / "c"), size=24, store="jpeg", workers=0, progress=False)
    monkeypatch.setattr(writing.JpegSplitWriter, "append", real)
    resumed = prepare(str(root), str(tmp_path / "c"), size=24, store="jpeg", workers=0, progress=False)
    assert resumed.counts == whole.counts == {"train": 22, "val": 9}
    for name in ("train_jpeg.bin", "val_jpeg.bin", "val_index.npy", "train_labels.npy"):
        assert (tmp_path / "c" / name).read_bytes() == (Path(whole.out) / name).read_bytes(), name
    assert json.loads((tmp_path / "c" / cache.CACHE_METADATA).read_text())["stats"] == \
        json.loads((Path(whole.out) / cache.CACHE_METADATA).read_text())["stats"]
