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
