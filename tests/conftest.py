import pytest


@pytest.fixture(scope="session")
def fashion():
    """Fashion-MNIST, found (make test installs the Debian package) or downloaded; a clear failure otherwise."""
    from alexnet.data.builtin import find_builtin
    find_builtin("fashion-mnist", progress=False)
    return "fashion-mnist"


def build_checkpoint(name: str = "alexnet_small", kwargs: dict | None = None, *, classes=5, channels: int = 1,
                     size: int = 28, stored: int | None = None, normalization: str = "channel",
                     pixel_scale: float = 1.0, config: dict | None = None, images=None):
    """An untrained checkpoint (``alexnet.checkpoint.Checkpoint``) as ``alexnet train`` would write it, without
    training: ``name`` built fresh (seed it first for reproducible weights) for ``classes`` (a count, named
    class0..., or the names), ``channels``-channel images stored at ``stored`` px (default ``size``), fed at
    ``size`` px; its statistics computed from ``images`` (default: 4 random ones)."""
    import numpy as np
    from alexnet.checkpoint import Checkpoint, ModelSpec
    from alexnet.data.preprocessing import Preprocessing
    from alexnet.data.stats import compute_stats
    stored = stored or size
    if images is None:
        images = np.random.default_rng(0).integers(0, 256, (4, stored, stored, channels), dtype=np.uint8)
    names = [f"class{i}" for i in range(classes)] if isinstance(classes, int) else list(classes)
    prep = Preprocessing(compute_stats(np.asarray(images)), [stored, stored], channels, size,
                         normalization=normalization, pixel_scale=pixel_scale)
    spec = ModelSpec(name, len(names), channels, size, dict(kwargs or {}))
    return Checkpoint(spec, names, config or {"ten_crop": False}, prep, spec.build().state_dict())


@pytest.fixture
def make_checkpoint():
    """The one way tests build a checkpoint without training (``build_checkpoint``)."""
    return build_checkpoint


def write_tiny_checkpoint(path, classes=("a", "b", "c")) -> str:
    """An alexnet_small checkpoint of 28x28 grey images, written without training (``build_checkpoint``)."""
    import numpy as np
    images = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
    build_checkpoint(classes=classes, images=images).save(path)
    return str(path)


@pytest.fixture
def tiny_checkpoint():
    """``write_tiny_checkpoint(path, classes=("a", "b", "c"))``: an alexnet_small checkpoint at ``path``, its path."""
    return write_tiny_checkpoint


def write_tiny_run(root, n_train=60, n_test=20):
    """An untrained alexnet_small checkpoint (``build_checkpoint``) whose training data is an idx folder of 28x28
    grey images: (``root``/best.pt, the data folder)."""
    import torch
    from alexnet.data import open_dataset
    from data_fixtures import idx_folder
    data = str(idx_folder(root / "data", n_train, n_test, size=28, classes=4))
    train = open_dataset(data, "train", progress=False)
    torch.manual_seed(0)
    config = {"data": data, "val_fraction": 0.1, "seed": 0, "ten_crop": False}
    build_checkpoint(classes=train.classes, config=config, images=train.images).save(root / "best.pt")
    return root / "best.pt", data


@pytest.fixture
def tiny_run():
    """``write_tiny_run(root)``: an untrained checkpoint and its idx data folder under ``root``."""
    return write_tiny_run
