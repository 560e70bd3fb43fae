"""Data sources: builtin lookup and download, idx, CIFAR, class folders, CSV, splits and the held-out part."""
from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from alexnet.cli.main import main
from alexnet.data import FASHION_MNIST_CLASSES, ImageSet, open_dataset
from alexnet.data import builtin
from alexnet.data.holdout import holdout_count, holdout_order
from alexnet.errors import UsageError
from data_fixtures import cifar10_folder, idx_folder, photo_folder, save, write_idx

SYSTEM_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def no_builtin_files(tmp_path, monkeypatch):
    """Every builtin lookup folder empty, downloads go to tmp_path/cache."""
    monkeypatch.setattr(builtin, "SYSTEM_DATASETS", str(tmp_path / "system"))
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ALEXNET_DATA", raising=False)
    return tmp_path


@pytest.mark.skipif(not SYSTEM_FASHION.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist_from_the_system_folder(monkeypatch):
    monkeypatch.delenv("ALEXNET_DATA", raising=False)
    train = open_dataset("fashion-mnist", "train", progress=False)
    val = open_dataset("fashion-mnist", "val", progress=False)
    test = open_dataset("fashion-mnist", "test", progress=False)
    assert str(SYSTEM_FASHION) in train.source
    assert (len(train), len(val), len(test)) == (54_000, 6_000, 10_000)
    assert train.images.shape == (54_000, 28, 28, 1) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int64 and set(np.unique(test.labels)) == set(range(10))
    assert train.classes == FASHION_MNIST_CLASSES == test.classes
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot"
    assert np.bincount(val.labels).tolist() == [600] * 10            # stratified: 10% of each class
    # the same statistics (of all 60,000 training images) on every split; Fashion-MNIST's known mean/std
    assert train.stats is test.stats and train.stats.count == 60_000
    assert train.stats.channel_mean[0] == pytest.approx(0.2860, abs=1e-3)
    assert train.stats.channel_std[0] == pytest.approx(0.3530, abs=1e-3)


def test_offline_builtin_gives_one_message_naming_every_way(no_builtin_files, monkeypatch, capsys):
    unreachable = builtin.Builtin("mnist", "http://127.0.0.1:9/", builtin.BUILTINS["mnist"].md5, ("0",))
    monkeypatch.setitem(builtin.BUILTINS, "mnist", unreachable)
    with pytest.raises(UsageError) as err:
        open_dataset("mnist", data_root=str(no_builtin_files / "root"), progress=False)
    message = str(err.value)
    for part in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "--data-root",
                 "$ALEXNET_DATA/mnist", "/mnist", str(no_builtin_files / "cache" / "mnist"), "127.0.0.1"):
        assert part in message
    assert not (no_builtin_files / "cache" / "mnist").exists()       # no empty leftovers
    assert main(["prepare", "mnist", "--out", str(no_builtin_files / "out")]) == 2
    assert "could not be downloaded" in capsys.readouterr().err


def test_download_checks_md5_and_lands_in_the_cache(no_builtin_files, monkeypatch):
    server = idx_folder(no_builtin_files / "server")
    md5 = {f: hashlib.md5((server / f).read_bytes()).hexdigest() for f in builtin.BUILTINS["mnist"].md5}
    good = builtin.Builtin("mnist", server.as_uri() + "/", md5, tuple("01234"))
    monkeypatch.setitem(builtin.BUILTINS, "mnist", good)
    data = open_dataset("mnist", "test", progress=False)
    assert len(data) == 20 and data.classes == list("01234")
    assert sorted(os.listdir(no_builtin_files / "cache" / "mnist")) == sorted(md5)

    bad = builtin.Builtin("mnist", server.as_uri() + "/", dict(md5, **{"t10k-images-idx3-ubyte.gz": "0" * 32}),
                          tuple("01234"))
    with pytest.raises(UsageError, match="MD5 .* does not match"):
        builtin.download(bad, str(no_builtin_files / "elsewhere"), progress=False)
    assert "t10k-images-idx3-ubyte.gz" not in os.listdir(no_builtin_files / "elsewhere")


def test_builtin_lookup_order(no_builtin_files, monkeypatch):
    idx_folder(no_builtin_files / "env" / "fashion-mnist", n_train=30, gz=False)
    idx_folder(no_builtin_files / "root" / "fashion-mnist", n_train=40)
    monkeypatch.setenv("ALEXNET_DATA", str(no_builtin_files / "env"))
    assert len(open_dataset("fashion-mnist", val_fraction=0, progress=False)) == 30
    got = open_dataset("fashion-mnist", data_root=str(no_builtin_files / "root"), val_fraction=0, progress=False)
    assert len(got) == 40 and got.classes == FASHION_MNIST_CLASSES


def test_idx_folder(tmp_path):
    root = idx_folder(tmp_path / "digits", n_train=50, n_test=20, gz=False)
    train = open_dataset(str(root), "train", val_fraction=0.2, progress=False)
    val = open_dataset(str(root), "val", val_fraction=0.2, progress=False)
    test = open_dataset(str(root), "test", progress=False)
    assert (len(train), len(val), len(test)) == (40, 10, 20)
    assert train.images.shape == (40, 8, 8, 1) and train.classes == ["0", "1", "2", "3", "4"]
    ids = lambda s: set((s.images[:, 0, 0, 0].astype(int) + 256 * s.images[:, 0, 1, 0].astype(int)).tolist())  # noqa
    assert ids(train) | ids(val) == set(range(50)) and not ids(train) & ids(val)
    assert np.bincount(val.labels).tolist() == [2] * 5
    assert not train.images.flags.writeable
    rgb = open_dataset(str(root), "test", channels=3, progress=False)
    assert rgb.images.shape == (20, 8, 8, 3) and (rgb.images == test.images).all()
    assert test.stats.mean_image.shape == (8, 8, 1) and rgb.stats.mean_image.shape == (8, 8, 3)


def test_cifar10_batches_pixel_layout_and_names(tmp_path):
    root = cifar10_folder(tmp_path / "cifar-10-batches-py")
    train = open_dataset(str(tmp_path), "train", val_fraction=0, progress=False)   # finds the sub-folder
    assert train.images.shape == (12, 32, 32, 3) and train.classes == ["airplane", "automobile", "bird"]
    assert train.images[5, 7, 9].tolist() == [5, 100, 200]                           # (N, H, W, C), RGB
    assert train.labels.tolist() == [i % 3 for i in range(12)]
    test = open_dataset(str(root), "test", progress=False)
    assert len(test) == 4 and test.images[0, 0, 0].tolist() == [200, 100, 200]


def test_cifar_pickles_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    root = cifar10_folder(tmp_path / "c")
    (root / "data_batch_1").write_bytes(pickle.dumps({"data": Evil(), "labels": []}))
    with pytest.raises(UsageError, match="data_batch_1: not a readable CIFAR python batch"):
        open_dataset(str(root), progress=False)
    assert not (tmp_path / "pwned").exists()


def test_cifar100_fine_labels(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    data = np.zeros((3, 3072), np.uint8)
    for name in ("train", "test"):
        (root / name).write_bytes(pickle.dumps({"data": data, "fine_labels": [0, 2, 1], "coarse_labels": [0, 0, 0]}))
    (root / "meta").write_bytes(pickle.dumps({"fine_label_names": ["apple", "bee", "cup"]}))
    train = open_dataset(str(root), val_fraction=0, progress=False)
    assert train.classes == ["apple", "bee", "cup"] and sorted(train.labels.tolist()) == [0, 1, 2]


def test_class_folders_with_train_val_test(tmp_path):
    root = tmp_path / "data"
    for split, per_class in (("train", 4), ("val", 2), ("test", 1)):
        photo_folder(root / split, per_class=per_class, classes=("b", "a"))
    (root / "train" / "a" / "notes.txt").write_text("ignored: not an image extension")
    sets = {s: open_dataset(str(root), s, size=16, cache_dir=str(tmp_path / "c"), progress=False)
            for s in ("train", "val", "test")}
    assert {s: len(v) for s, v in sets.items()} == {"train": 8, "val": 4, "test": 2}   # val is the folder's
    assert sets["train"].classes == ["a", "b"] and sets["train"].images.shape[1:] == (16, 16, 3)
    assert sets["test"].skipped == []
    (root / "test" / "zebra").mkdir()
    save(root / "test" / "zebra" / "z.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(UsageError, match="class 'zebra' has no folder in"):
        open_dataset(str(root), "test", cache_dir=str(tmp_path / "c"), progress=False)


def test_missing_test_split_is_a_clear_error(tmp_path):
    root = photo_folder(tmp_path / "data", per_class=3)
    with pytest.raises(UsageError, match="has no test split"):
        open_dataset(str(root), "test", size=16, cache_dir=str(tmp_path / "c"), progress=False)
    with pytest.raises(UsageError, match="has no validation split"):
        open_dataset(str(idx_folder(tmp_path / "i")), "val", val_fraction=0, progress=False)


def test_csv_with_ids_like_the_leaf_dataset(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["id,margin1,species,shape1"]
    for i, species in enumerate(["Acer", "Quercus", "Acer", "Betula", "Quercus", "Acer"]):
        save(tmp_path / "images" / f"{i + 1}.jpg", rng.integers(0, 256, (20, 30), dtype=np.uint8))
        rows.append(f"{i + 1},0.0{i},{species},0.5")
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    data = open_dataset(str(tmp_path / "train.csv"), size=16, val_fraction=0, cache_dir=str(tmp_path / "c"),
                        progress=False)
    assert data.classes == ["Acer", "Betula", "Quercus"]
    assert sorted(data.labels.tolist()) == [0, 0, 0, 1, 2, 2]
    assert data.images.shape == (6, 16, 16, 1)                       # all greyscale: one channel
    assert "'id'" in data.source and "'species'" in data.source


def test_csv_with_paths_and_int_labels_and_explicit_columns(tmp_path):
    for i in range(4):
        save(tmp_path / "pics" / f"p{i}.png", np.full((8, 8, 3), 40 * i, np.uint8))
    (tmp_path / "list.csv").write_text("file,y,note\n" + "".join(f"pics/p{i}.png,{i % 2 * 3},x\n" for i in range(4)))
    data = open_dataset(str(tmp_path / "list.csv"), image_column="file", label_column="y", val_fraction=0,
                        cache_dir=str(tmp_path / "c"), progress=False)
    assert data.classes == ["0", "1", "2", "3"] and sorted(data.labels.tolist()) == [0, 0, 3, 3]
    assert data.images.shape == (4, 8, 8, 3)                          # one size, <= 256: kept as is
    with pytest.raises(UsageError, match="cannot tell which column holds the labels; give --label-column"):
        open_dataset(str(tmp_path / "list.csv"), cache_dir=str(tmp_path / "c"), progress=False)


def test_csv_label_values_that_look_like_ids_stay_labels(tmp_path):
    for i in range(3):
        save(tmp_path / "images" / f"{i}.png", np.full((4, 4, 3), 60 * i, np.uint8))
    (tmp_path / "data.csv").write_text("label,photo\n1,images/0.png\n0,images/1.png\n1,images/2.png\n")
    data = open_dataset(str(tmp_path / "data.csv"), val_fraction=0, cache_dir=str(tmp_path / "c"), progress=False)
    assert "images from column 'photo', labels from 'label'" in data.source
    assert sorted(zip(data.images[:, 0, 0, 0].tolist(), data.labels.tolist())) == [(0, 1), (60, 0), (120, 1)]


def test_holdout_order_prefixes_are_stratified_and_seeded():
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    order = holdout_order(labels, seed=3)
    assert sorted(order.tolist()) == list(range(200))
    for fraction in (0.1, 0.2, 0.5):
        k = holdout_count(200, fraction)
        counts = np.bincount(labels[order[:k]], minlength=4)
        assert np.abs(counts - fraction * np.array([100, 50, 30, 20])).max() <= 1
    assert (holdout_order(labels, seed=3) == order).all() and not (holdout_order(labels, seed=4) == order).all()
    assert holdout_count(10, 0.1) == 1 and holdout_count(5, 0.1) == 1 and holdout_count(1, 0.5) == 0


def test_bad_specs_are_usage_errors(tmp_path, capsys):
    assert main(["prepare", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no such file or folder" in err and "a folder of class sub-folders" in err
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(UsageError, match="is a file but not a .csv"):
        open_dataset(str(tmp_path / "x.txt"))
    with pytest.raises(UsageError, match="--split must be one of train, val, test"):
        open_dataset("fashion-mnist", "dev")
    write_idx(tmp_path / "i" / "train-images-idx3-ubyte", np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(UsageError, match="has train-images-idx3-ubyte but no train-labels-idx1-ubyte"):
        open_dataset(str(tmp_path / "i"))
    assert isinstance(open_dataset(str(idx_folder(tmp_path / "ok")), progress=False), ImageSet)
