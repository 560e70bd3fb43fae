"""The fused crop-mirror-normalise kernel (alexnet.ops.augment) against TrainTransform's PyTorch path:
bit-identical outputs, and the PyTorch path wherever the kernel is unavailable or does not apply."""
import importlib.resources
import re

import numpy as np
import pytest
import torch

import alexnet.data.transforms as transforms
from alexnet.data.augment import crop_mirror_pair, gather_crops, mirror, scale_shift_
from alexnet.data.stats import compute_stats
from alexnet.data.transforms import Draw, TrainTransform
from alexnet.ops import augment as augment_ops

needs_kernel = pytest.mark.skipif(augment_ops.load() is None, reason="no compiled augmentation kernel (no compiler?)")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int, size: int, channels: int, seed: int = 0) -> torch.Tensor:
    """uint8 (n, C, size, size) channels_last, a view of NHWC memory."""
    nhwc = np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)
    return torch.from_numpy(nhwc).permute(0, 3, 1, 2)


_stats: dict = {}


def stats_for(channels: int, size: int):
    if (channels, size) not in _stats:
        _stats[channels, size] = compute_stats(images(24, size, channels, seed=100 + channels).permute(0, 2, 3, 1)
                                               .numpy())
    return _stats[channels, size]


def torch_path(monkeypatch, transform, x, draw, index=None):
    with monkeypatch.context() as m:
        m.setenv(augment_ops.ENV_VAR, "torch")
        return transform.apply(x, draw, index)


def kernel_path(monkeypatch, transform, x, draw, index=None):
    """transform.apply(x, draw, index), checking that it took the kernel."""
    calls = []

    def spy(*args):
        calls.append(augment_ops.crop_mirror_normalize(*args))
        return calls[-1]

    with monkeypatch.context() as m:
        m.setattr(transforms, "crop_mirror_normalize", spy)
        out = transform.apply(x, draw, index)
    assert len(calls) == 1 and calls[0] is not None, "the kernel did not run"
    return out


def assert_bitwise(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == torch.float32
    assert ours.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(ours.contiguous().view(torch.int32), theirs.contiguous().view(torch.int32)), \
        f"max abs difference {(ours - theirs).abs().max().item()}"


@needs_kernel
@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("normalization", ["mean_image", "channel", "none"])
@pytest.mark.parametrize("flip", [True, False])
@pytest.mark.parametrize("pca_std", [0.0, 0.1])
@pytest.mark.parametrize("pixel_scale", [1.0, 255.0])
@pytest.mark.parametrize("indexed", [False, True])
def test_kernel_is_bit_identical_to_the_torch_path(monkeypatch, channels, normalization, flip, pca_std,
                                                   pixel_scale, indexed):
    height, size = 37, 31
    stats = stats_for(channels, height) if normalization != "none" or pca_std else None
    transform = TrainTransform(crop_size=size, normalization=normalization, stats=stats, flip=flip,
                               pca_std=pca_std, pixel_scale=pixel_scale)
    x = images(20, height, channels, seed=channels)
    index = torch.tensor([3, 17, 0, 3, 9, 19, 4, 11, 2]) if indexed else None
    batch = len(index) if indexed else len(x)
    draw = transform.draw(batch, height, height, gen(5))
    ours = kernel_path(monkeypatch, transform, x, draw, index)
    assert_bitwise(ours, torch_path(monkeypatch, transform, x, draw, index))


@needs_kernel
@pytest.mark.parametrize("height, size", [(40, 32), (20, 16), (19, 5), (33, 1), (256, 224)])
def test_crop_sizes_whole_and_partial_blocks_of_sixteen_pixels(monkeypatch, height, size):
    x = images(5, height, 3)
    transform = TrainTransform(crop_size=size, stats=stats_for(3, height), pca_std=0.1)
    draw = transform.draw(5, height, height, gen(6))
    assert_bitwise(kernel_path(monkeypatch, transform, x, draw), torch_path(monkeypatch, transform, x, draw))


@needs_kernel
@pytest.mark.parametrize("channels", [2, 4, 5])
def test_other_channel_counts_against_the_torch_ops(channels):
    """The kernel called directly, against the torch path's ops (TrainTransform's statistics are RGB)."""
    x = images(6, 23, channels)
    g = gen(channels)
    offsets = torch.randint(0, 23 - 17 + 1, (4, 2), generator=g)
    flips, source = torch.tensor([True, False, True, True]), torch.tensor([5, 0, 5, 2])
    pair = torch.rand(1, channels, 23, 23, generator=g) * 255
    pair = torch.cat([pair, pair.flip(3)]).contiguous(memory_format=torch.channels_last)
    scale, shift = torch.rand(channels, generator=g), torch.randn(4, channels, generator=g)
    expected = mirror(gather_crops(x, source, offsets, 17), flips).to(torch.float32)
    expected.sub_(crop_mirror_pair(pair, offsets, 17, flips))
    scale_shift_(expected, scale, shift)
    ours = augment_ops.crop_mirror_normalize(x.permute(0, 2, 3, 1), source, offsets, 17, flips,
                                             pair.permute(0, 2, 3, 1), scale, shift)
    assert_bitwise(ours, expected)


@needs_kernel
@pytest.mark.parametrize("flips", ["all", "none"])
def test_every_image_flipped_or_none(monkeypatch, flips):
    x = images(8, 40, 3)
    transform = TrainTransform(crop_size=33, stats=stats_for(3, 40), pca_std=0.1)
    draw = transform.draw(8, 40, 40, gen(1))
    draw.flips = torch.full((8,), flips == "all")
    assert_bitwise(kernel_path(monkeypatch, transform, x, draw), torch_path(monkeypatch, transform, x, draw))


@needs_kernel
def test_full_size_crops_and_the_corners(monkeypatch):
    """Crops at the extreme offsets (and crops as large as the image) read exactly the image's edges."""
    x = images(4, 24, 3)
    transform = TrainTransform(crop_size=20, stats=stats_for(3, 24))
    draw = Draw(torch.tensor([[0, 0], [4, 4], [0, 4], [4, 0]]), torch.tensor([True, False, True, False]))
    assert_bitwise(kernel_path(monkeypatch, transform, x, draw), torch_path(monkeypatch, transform, x, draw))
    whole = TrainTransform(crop_size=24, stats=stats_for(3, 24))
    draw = Draw(torch.zeros(4, 2, dtype=torch.long), torch.tensor([True, False, True, False]))
    assert_bitwise(kernel_path(monkeypatch, whole, x, draw), torch_path(monkeypatch, whole, x, draw))


@needs_kernel
def test_more_threads_give_the_same_batch(monkeypatch):
    x = images(16, 40, 3)
    transform = TrainTransform(crop_size=31, stats=stats_for(3, 40), pca_std=0.1)
    draw = transform.draw(16, 40, 40, gen(2))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kernel_path(monkeypatch, transform, x, draw)
        torch.set_num_threads(max(2, threads))
        assert_bitwise(kernel_path(monkeypatch, transform, x, draw), one)
    finally:
        torch.set_num_threads(threads)


def test_same_seed_same_batch():
    x = images(12, 37, 3)
    transform = TrainTransform(crop_size=31, stats=stats_for(3, 37), pca_std=0.1)
    first, second = (transform(x, gen(7)) for _ in range(2))
    assert_bitwise(first, second)
    assert not torch.equal(first, transform(x, gen(8)))


def test_no_compiler_means_the_torch_path_quietly(monkeypatch, tmp_path, capfd, recwarn):
    x = images(6, 37, 3)
    transform = TrainTransform(crop_size=31, stats=stats_for(3, 37), pca_std=0.1)
    draw = transform.draw(6, 37, 37, gen(3))
    expected = torch_path(monkeypatch, transform, x, draw)
    monkeypatch.setattr(augment_ops.KERNEL, "_tried", False)
    monkeypatch.setattr(augment_ops.KERNEL, "_library", None)
    monkeypatch.setenv("ALEXNET_KERNEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    assert augment_ops.load() is None
    assert augment_ops.crop_mirror_normalize(x.permute(0, 2, 3, 1), None, draw.offsets, 31, None, None,
                                             torch.ones(3), None) is None
    assert_bitwise(transform.apply(x, draw), expected)
    assert capfd.readouterr() == ("", "") and len(recwarn) == 0


def test_opting_out_means_the_torch_path(monkeypatch):
    x = images(6, 37, 3)
    monkeypatch.setenv(augment_ops.ENV_VAR, "torch")
    assert augment_ops.load() is None
    assert augment_ops.crop_mirror_normalize(x.permute(0, 2, 3, 1), None, torch.zeros(6, 2, dtype=torch.long), 31,
                                             None, None, torch.ones(3), None) is None


def test_padding_takes_the_torch_path(monkeypatch):
    x = images(6, 37, 3)
    transform = TrainTransform(crop_size=31, stats=stats_for(3, 37), padding=4, pca_std=0.1)
    draw = transform.draw(6, 37, 37, gen(4))
    calls = []
    monkeypatch.setattr("alexnet.data.transforms.crop_mirror_normalize", lambda *a: calls.append(a))
    out = transform.apply(x, draw)
    assert calls == []
    assert_bitwise(out, torch_path(monkeypatch, transform, x, draw))


@needs_kernel
def test_what_the_kernel_cannot_do_returns_none():
    x = images(4, 20, 3).permute(0, 2, 3, 1)
    offsets, one = torch.zeros(4, 2, dtype=torch.long), torch.ones(3)
    cmn = augment_ops.crop_mirror_normalize
    assert cmn(x, None, offsets, 16, None, None, one, None) is not None
    assert cmn(x.float(), None, offsets, 16, None, None, one, None) is None               # not uint8
    assert cmn(x[:, :, ::2], None, offsets, 8, None, None, one, None) is None             # not contiguous
    assert cmn(x, None, offsets + 5, 16, None, None, one, None) is None                   # crop out of the image
    assert cmn(x, torch.tensor([0, 1, 2, 4]), offsets, 16, None, None, one, None) is None  # image out of range
    assert cmn(x, None, offsets, 21, None, None, one, None) is None                       # crop larger than images


def test_kernel_source_ships_as_package_data():
    text = importlib.resources.files("alexnet.ops").joinpath(augment_ops.SOURCE_NAME).read_text(encoding="utf-8")
    assert augment_ops.KERNEL.source() == text
    for name in augment_ops._SIGNATURES:   # every function load() binds is defined there
        assert re.search(rf"\bvoid {name}\(", text), name
