"""alexnet.data.augment and alexnet.data.transforms: batched augmentation checked against direct per-image numpy
computations and torchvision."""
import pickle

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from alexnet.data.augment import center_crop, crop_at, resize, ten_crop, to_float
from alexnet.data.stats import compute_stats
from alexnet.data.transforms import Draw, EvalTransform, TrainTransform
from alexnet.errors import UsageError
from augment_reference import from_config, normalize, pca_lighting, random_crop, random_flip

CL = torch.channels_last


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(n=6, size=20, channels=3, seed=0):
    """(uint8 NHWC numpy, the same as an NCHW channels_last tensor)."""
    nhwc = np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)
    return nhwc, torch.from_numpy(nhwc).permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def stats():
    return compute_stats(batch(32, 20, seed=1)[0])


def test_pca_lighting_matches_per_image_numpy(stats):
    nhwc, x = batch()
    out, alphas = pca_lighting(x, stats.eigvals, stats.eigvecs, gen(0), std=0.1, return_alphas=True)
    assert alphas.shape == (6, 3) and out.is_contiguous(memory_format=CL)
    for b in range(6):   # [4.1] add [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T to every pixel
        shift = stats.eigvecs.astype(np.float64) @ (alphas[b].numpy().astype(np.float64) * stats.eigvals)
        expected = nhwc[b] / 255.0 + shift
        np.testing.assert_allclose(out[b].permute(1, 2, 0).numpy(), expected, atol=1e-6)


def test_pca_alphas_are_three_independent_normals_per_image(stats):
    _, alphas = pca_lighting(torch.zeros(20000, 3, 1, 1), stats.eigvals, stats.eigvecs, gen(1), std=0.1,
                             return_alphas=True)
    assert abs(alphas.std().item() - 0.1) < 0.003 and abs(alphas.mean().item()) < 0.003
    corr = np.corrcoef(alphas.numpy().T)
    assert np.abs(corr - np.eye(3)).max() < 0.05      # not one alpha shared by the three components


def test_random_crop_equals_slicing_at_the_drawn_offsets():
    nhwc, x = batch()
    for padding in (0, 3):
        out, offsets = random_crop(x, 16, gen(2), padding=padding, return_offsets=True)
        padded = np.pad(nhwc, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
        assert out.shape == (6, 3, 16, 16) and out.is_contiguous(memory_format=CL)
        for b, (top, left) in enumerate(offsets.tolist()):
            np.testing.assert_array_equal(out[b].permute(1, 2, 0).numpy(), padded[b, top:top + 16, left:left + 16])


def test_crop_offsets_cover_every_position():
    offsets = random_crop(torch.zeros(4000, 1, 10, 12, dtype=torch.uint8), 8, gen(3), return_offsets=True)[1]
    assert set(offsets[:, 0].tolist()) == set(range(3)) and set(offsets[:, 1].tolist()) == set(range(5))


def test_flip_mirrors_the_drawn_images_and_twice_is_identity():
    _, x = batch()
    out, flips = random_flip(x, gen(4), return_flips=True)
    assert out.is_contiguous(memory_format=CL) and 0 < int(flips.sum()) < 6
    for b in range(6):
        assert torch.equal(out[b], torch.flip(x[b], [2]) if flips[b] else x[b])
    assert torch.equal(random_flip(out, gen(4)), x)


def test_crop_at_with_flips_on_one_image_equals_flipped_crops():
    _, x = batch(n=1)
    offsets, flips = torch.tensor([[0, 0], [2, 3], [4, 1]]), torch.tensor([True, False, True])
    out = crop_at(x, offsets, 12, flips)
    for b, ((top, left), flip) in enumerate(zip(offsets.tolist(), flips.tolist())):
        patch = x[0, :, top:top + 12, left:left + 12]
        assert torch.equal(out[b], patch.flip(2) if flip else patch)


def test_ten_crop_views_are_the_ten_patches_and_torchvisions_set():
    _, x = batch(size=21)
    views = ten_crop(x, 16)
    assert views.shape == (10, 6, 3, 16, 16) and all(v.is_contiguous(memory_format=CL) for v in views)
    corners = [(0, 0), (0, 5), (5, 0), (5, 5), (2, 2)]    # tl, tr, bl, br, centre (torchvision rounding)
    for i, (top, left) in enumerate(corners):
        patch = x[..., top:top + 16, left:left + 16]
        assert torch.equal(views[i], patch) and torch.equal(views[i + 5], torch.flip(patch, [3]))
    _, x = batch(size=20)   # even margins: the mirrored image's centre is the mirror of the centre
    views, theirs = ten_crop(x, 16), TF.ten_crop(x, [16, 16])   # theirs: crops of the mirrored image
    for ours, tv in zip(range(10), (0, 1, 2, 3, 4, 6, 5, 8, 7, 9)):     # its tl is the mirror of our tr
        assert torch.equal(views[ours], theirs[tv])


def test_center_crop_matches_torchvision():
    _, x = batch(size=21)
    for size in (16, 15, 21):
        out = center_crop(x, size)
        assert torch.equal(out, TF.center_crop(x, [size, size])) and out.is_contiguous(memory_format=CL)


def test_normalize_subtracts_the_mean_image_at_the_crop_offsets():
    nhwc, x = batch()
    mean = np.random.default_rng(5).random((20, 20, 3), dtype=np.float32)
    crops, offsets = random_crop(x, 16, gen(6), return_offsets=True)
    out = normalize(crops, mean, offsets=offsets)
    full = nhwc / 255.0 - mean
    for b, (top, left) in enumerate(offsets.tolist()):
        np.testing.assert_allclose(out[b].permute(1, 2, 0).numpy(), full[b, top:top + 16, left:left + 16], atol=1e-6)
    chw = normalize(x, mean.transpose(2, 0, 1), std=[0.5, 0.25, 2.0])     # (C, H, W) mean image, and a std
    np.testing.assert_allclose(chw.permute(0, 2, 3, 1).numpy(), full / [0.5, 0.25, 2.0], atol=1e-5)
    with pytest.raises(ValueError, match="offsets"):
        normalize(crops, mean)


def reference_train(nhwc, draw: Draw, stats, transform: TrainTransform) -> np.ndarray:
    """The training augmentation one image at a time, in float64 numpy: the paper's order [4]."""
    size, pad, out = transform.crop_size, transform.padding, []
    for b in range(len(nhwc)):
        image = nhwc[b] / 255.0
        if transform.normalization == "mean_image":
            image = image - stats.mean_image
        if draw.alphas is not None:
            image = image + stats.eigvecs.astype(np.float64) @ (draw.alphas[b].numpy() * stats.eigvals)
        if transform.normalization == "channel":
            image = (image - stats.channel_mean) / stats.channel_std
        image = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
        top, left = draw.offsets[b].tolist()
        patch = image[top:top + size, left:left + size]
        out.append(patch[:, ::-1] if draw.flips is not None and draw.flips[b] else patch)
    return np.stack(out)


@pytest.mark.parametrize("normalization,padding", [("mean_image", 0), ("channel", 0), ("none", 0),
                                                   ("mean_image", 2), ("channel", 3)])
def test_train_transform_matches_per_image_reference(stats, normalization, padding):
    nhwc, x = batch(n=8)
    transform = TrainTransform(16, padding=padding, flip=True, pca_std=0.1, normalization=normalization, stats=stats)
    draw = transform.draw(8, 20, 20, gen(7))
    out = transform.apply(x, draw)
    assert out.shape == (8, 3, 16, 16) and out.dtype == torch.float32 and out.is_contiguous(memory_format=CL)
    np.testing.assert_allclose(out.permute(0, 2, 3, 1).numpy(), reference_train(nhwc, draw, stats, transform),
                               atol=2e-5)


def test_fixed_seed_gives_identical_batches_and_another_seed_different(stats):
    _, x = batch()
    transform = TrainTransform(16, pca_std=0.1, stats=stats)
    assert torch.equal(transform(x, gen(8)), transform(x, gen(8)))
    assert not torch.equal(transform(x, gen(8)), transform(x, gen(9)))


def test_eval_matches_train_normalisation_at_the_centre(stats):
    _, x = batch()
    for normalization in ("mean_image", "channel"):
        train = TrainTransform(16, flip=False, normalization=normalization, stats=stats)
        centre = train.apply(x, Draw(offsets=torch.full((6, 2), 2)))
        single = EvalTransform(16, normalization=normalization, stats=stats)(x)
        views = EvalTransform(16, normalization=normalization, stats=stats, ten_crop=True)(x)
        torch.testing.assert_close(single, centre, atol=1e-6, rtol=0)
        torch.testing.assert_close(views[4], centre, atol=1e-6, rtol=0)
        assert views.shape == (10, 6, 3, 16, 16)


def test_resize_matches_pil_bilinear():
    nhwc, x = batch(n=2, size=28, channels=1)
    out = resize(x, 56)
    assert out.shape == (2, 1, 56, 56) and out.is_contiguous(memory_format=CL)
    for b in range(2):
        pil = np.asarray(Image.fromarray(nhwc[b, :, :, 0]).resize((56, 56), Image.BILINEAR)) / 255.0
        assert np.abs(out[b, 0].numpy() - pil).max() <= 1 / 255 + 1e-6
    assert resize(torch.zeros(1, 3, 300, 400), 256).shape[-2:] == (256, 341)    # shorter side, as Resize(256)


def test_train_resize_resizes_the_mean_image_too():
    nhwc, x = batch(n=4, size=28, channels=1)
    stats = compute_stats(nhwc)
    transform = TrainTransform(40, flip=False, resize_to=48, stats=stats)
    draw = transform.draw(4, 28, 28, gen(10))
    mean = resize(torch.from_numpy(stats.mean_image).permute(2, 0, 1)[None], 48)
    expected = crop_at(resize(x, 48) - mean, draw.offsets, 40)
    torch.testing.assert_close(transform.apply(x, draw), expected, atol=1e-6, rtol=0)


def test_transforms_pickle_and_build_from_config(stats):
    _, x = batch()
    config = {"crop_size": 16, "padding": 1, "pca_std": 0.1, "normalization": "channel", "lr": 0.01}
    transform = from_config(TrainTransform, config, stats)
    transform(x, gen(0))                                   # fills the per-device cache
    clone = pickle.loads(pickle.dumps(transform))
    assert torch.equal(clone(x, gen(11)), transform(x, gen(11)))
    assert from_config(EvalTransform, config, stats).crop_size == 16


def test_errors_say_what_to_do(stats):
    _, x = batch()
    with pytest.raises(UsageError, match="resize"):
        TrainTransform(32, stats=stats)(x, gen(0))
    with pytest.raises(ValueError, match="statistics"):
        TrainTransform(16)
    with pytest.raises(UsageError, match="normalization"):
        EvalTransform(16, normalization="imagenet", stats=stats)


def test_channels_last_and_float_scale():
    _, x = batch()
    assert to_float(x).is_contiguous(memory_format=CL) and float(to_float(x).max()) <= 1.0
    assert center_crop(to_float(x), 16).is_contiguous(memory_format=CL)


def test_runs_on_the_meta_device(stats):
    x = torch.empty(4, 3, 20, 20, dtype=torch.uint8, device="meta").contiguous(memory_format=CL)
    out = TrainTransform(16, pca_std=0.1, stats=stats)(x, gen(0))
    assert out.device.type == "meta" and out.shape == (4, 3, 16, 16) and out.is_contiguous(memory_format=CL)
    assert EvalTransform(16, stats=stats, ten_crop=True)(x).shape == (10, 4, 3, 16, 16)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gives_the_cpu_batch(stats):
    _, x = batch()
    transform = TrainTransform(16, pca_std=0.1, stats=stats)
    torch.testing.assert_close(transform(x.cuda(), gen(12)).cpu(), transform(x, gen(12)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("padding", [0, 2])
def test_cropping_from_the_dataset_by_index_equals_cropping_the_gathered_batch(stats, padding):
    _, x = batch(n=10)
    index = torch.tensor([7, 2, 2, 9, 0])
    transform = TrainTransform(16, padding=padding, pca_std=0.1, stats=stats)
    assert torch.equal(transform(x, gen(13), index=index), transform(x[index], gen(13)))


def test_misuse_is_a_value_error_and_bad_user_input_a_usage_error(stats):
    _, x = batch()
    for build in (lambda: TrainTransform(16), lambda: TrainTransform(16, normalization="none", pca_std=0.1),
                  lambda: crop_at(x[:2], torch.zeros(3, 2, dtype=torch.long), 8), lambda: center_crop(x, 32)):
        with pytest.raises(ValueError) as err:
            build()
        assert not isinstance(err.value, UsageError)
    with pytest.raises(UsageError, match="--crop-size 32 is larger than the 20x20 images"):
        EvalTransform(32, stats=stats)(x)                   # the recipe's crop does not fit the user's images
    grey = compute_stats(batch(4, 20, channels=1)[0])
    with pytest.raises(UsageError, match="mean image does not match"):
        EvalTransform(16, stats=grey)(x)                    # statistics of other data
