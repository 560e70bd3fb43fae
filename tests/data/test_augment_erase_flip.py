"""Random erasing (``--erase``) and the test-time mirror (``--flip-view``): boxes within the crop and the
torchvision ranges, exactly the box zeroed, the other draws untouched, and the mirror view's softmax averaged."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from alexnet.data.augment import draw_erasures, erase_
from alexnet.data.stats import compute_stats
from alexnet.data.transforms import EvalTransform, TrainTransform
from alexnet.inference.evaluate import predict_probs


def _images(n=64, size=20, seed=0):
    nhwc = np.random.default_rng(seed).integers(0, 256, (n, size, size, 1), dtype=np.uint8)
    return nhwc, torch.from_numpy(nhwc).permute(0, 3, 1, 2)


def test_erasure_boxes_fit_the_crop_with_torchvisions_area_and_aspect():
    boxes = draw_erasures(20_000, 24, 0.5, torch.Generator().manual_seed(0))
    top, left, height, width = boxes.unbind(1)
    erased = height > 0
    assert 0.48 < erased.float().mean().item() < 0.52                  # with probability p
    assert (top >= 0).all() and (left >= 0).all() and (width >= 1).all()
    assert (top + height <= 24).all() and (left + width <= 24).all()
    area = (height * width)[erased].float() / 24 ** 2
    assert area.min() >= 0.01 and area.max() <= 0.5 and 0.15 < area.mean() < 0.25    # U(0.02, 0.4), rounded
    aspect = (height.float() / width.float())[erased]
    assert 0.2 < aspect.min() and aspect.max() < 5 and abs(aspect.log().mean().item()) < 0.05   # log-uniform
    assert (draw_erasures(100, 24, 0.0, torch.Generator().manual_seed(0))[:, 2] == 0).all()


def test_erase_zeroes_exactly_the_box_of_each_image():
    x = torch.ones(3, 2, 6, 6).contiguous(memory_format=torch.channels_last)
    boxes = torch.tensor([[1, 2, 3, 2], [0, 0, 0, 4], [5, 5, 1, 1]])
    out = erase_(x, boxes)
    assert out is x and out.is_contiguous(memory_format=torch.channels_last)
    expected = torch.ones(3, 2, 6, 6)
    expected[0, :, 1:4, 2:4] = 0
    expected[2, :, 5, 5] = 0                                            # image 1: height 0, nothing erased
    assert torch.equal(out, expected)


@pytest.mark.parametrize("padding", [0, 2])
def test_the_train_transform_erases_after_normalising_and_draws_the_rest_as_before(padding):
    nhwc, x = _images()
    stats = compute_stats(nhwc)
    plain = TrainTransform(16, padding=padding, normalization="channel", stats=stats)
    erasing = TrainTransform(16, padding=padding, normalization="channel", stats=stats, erase=1.0)
    draw = erasing.draw(64, 20, 20, torch.Generator().manual_seed(3))
    before = plain.draw(64, 20, 20, torch.Generator().manual_seed(3))
    assert torch.equal(draw.offsets, before.offsets) and torch.equal(draw.flips, before.flips)   # drawn last
    assert before.erasures is None and draw.erasures.shape == (64, 4)
    out, reference = erasing.apply(x, draw), plain.apply(x, before)
    for i, (top, left, height, width) in enumerate(draw.erasures.tolist()):
        box = out[i, :, top:top + height, left:left + width]
        assert (box == 0).all()
        mask = torch.ones(16, 16, dtype=torch.bool)
        mask[top:top + height, left:left + width] = False
        assert torch.equal(out[i, 0][mask], reference[i, 0][mask])      # every other pixel as without erasing


def test_the_flip_view_is_the_centre_and_its_mirror_and_probabilities_average_them():
    nhwc, x = _images(n=10)
    stats = compute_stats(nhwc)
    centre = EvalTransform(16, normalization="channel", stats=stats)(x)
    views = EvalTransform(16, normalization="channel", stats=stats, flip_view=True)(x)
    assert views.shape == (2, 10, 1, 16, 16)
    assert torch.equal(views[0], centre) and torch.equal(views[1], centre.flip(3))
    tens = EvalTransform(16, normalization="channel", stats=stats, ten_crop=True, flip_view=True)(x)
    assert tens.shape[0] == 10                                          # 10 views hold the mirrors already
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(256, 5)).eval()
    probs = predict_probs([model], nhwc, EvalTransform(16, normalization="channel", stats=stats, flip_view=True),
                          batch_size=4, device=torch.device("cpu"))
    with torch.no_grad():
        expected = (model(centre).softmax(1) + model(centre.flip(3)).softmax(1)) / 2
    torch.testing.assert_close(probs, expected, atol=1e-6, rtol=0)
    assert math.isclose(probs.sum(1).mean().item(), 1.0, rel_tol=1e-6)
