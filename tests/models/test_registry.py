"""The model zoo (alexnet.models, alexnet.models.registry): every model builds, trains a step, and matches the
numbers its source publishes."""
import pytest
import torch
import torchvision
from torch import nn

import alexnet
from alexnet.errors import UsageError
from alexnet.models.alexnet import AlexNet
from alexnet.ops.lrn import LocalResponseNorm


@pytest.mark.parametrize("name", alexnet.list_models())
def test_every_model_forward_backward(name):
    info = alexnet.model_info(name)
    torch.manual_seed(0)
    model = alexnet.create_model(name, num_classes=7)
    x = torch.randn(2, info.in_channels, info.input_size, info.input_size)
    out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name, expected", [
    ("alexnet_2012", 60_965_224),
    ("alexnet_2012_one_gpu", 59_798_312),
    ("alexnet_owt", 61_100_840),
    ("vgg16", 138_357_544),
    ("resnet18", 11_689_512),
])
def test_parameter_counts(name, expected):
    model = alexnet.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert alexnet.model_info(name).num_params == expected


def test_one_tower_at_paper_widths_count():
    # PAPER.md: a one-tower net at the same widths has 62,378,344 parameters.
    model = AlexNet(groups=(1, 1, 1, 1, 1))
    assert sum(p.numel() for p in model.parameters()) == 62_378_344


def test_torchvision_counts_match_torchvision_itself():
    for name, builder in [("alexnet_owt", torchvision.models.alexnet), ("vgg11_bn", torchvision.models.vgg11_bn),
                          ("resnet34", torchvision.models.resnet34)]:
        ours = sum(p.numel() for p in alexnet.create_model(name).parameters())
        assert ours == sum(p.numel() for p in builder().parameters())


def test_owt_loads_torchvision_state_dict_and_gives_identical_logits():
    torch.manual_seed(1)
    reference = torchvision.models.alexnet().eval()
    ours = alexnet.create_model("alexnet_owt")
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in reference.state_dict().items()}
    ours.load_state_dict(reference.state_dict())
    ours.eval()
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(ours(x), reference(x))


def test_paper_network_structure():
    model = alexnet.create_model("alexnet_2012")
    f = model.features
    assert [f.conv1.out_channels, f.conv2.out_channels, f.conv3.out_channels, f.conv4.out_channels,
            f.conv5.out_channels] == [96, 256, 384, 384, 256]
    assert [f.conv1.groups, f.conv2.groups, f.conv3.groups, f.conv4.groups, f.conv5.groups] == [1, 2, 1, 2, 2]
    names = list(dict(f.named_children()))
    # [3.3] LRN after the ReLU of conv1/conv2 and before pooling; [3.4] overlapping 3/2 pooling.
    assert names[:8] == ["conv1", "relu1", "norm1", "pool1", "conv2", "relu2", "norm2", "pool2"]
    assert isinstance(f.norm1, LocalResponseNorm) and (f.norm1.k, f.norm1.size, f.norm1.alpha_sum,
                                                        f.norm1.beta) == (2.0, 5, 1e-4, 0.75)
    assert f.pool1.kernel_size == 3 and f.pool1.stride == 2
    c = model.classifier
    assert list(dict(c.named_children())) == ["fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8"]
    assert c.drop6.p == 0.5 and c.drop7.p == 0.5


def test_caffe_variants_follow_caffe():
    caffe = alexnet.create_model("alexnet_caffe")
    assert caffe.features.norm1.k == 1.0 and caffe.features.norm1.alpha_sum == pytest.approx(1e-4 / 5)
    assert list(dict(caffe.features.named_children()))[:4] == ["conv1", "relu1", "norm1", "pool1"]
    assert float(caffe.features.conv2.bias[0].detach()) == pytest.approx(0.1)
    caffenet = alexnet.create_model("caffenet")
    assert list(dict(caffenet.features.named_children()))[:4] == ["conv1", "relu1", "pool1", "norm1"]
    x = torch.randn(1, 3, 227, 227)
    assert caffenet(x).shape == (1, 1000)


@pytest.mark.parametrize("size", [224, 227])
def test_both_paper_input_sizes_give_55(size):
    model = alexnet.create_model("alexnet_2012", input_size=size)
    assert model.features.conv1(torch.zeros(1, 3, size, size)).shape[-1] == 55


def test_bad_input_size_names_the_valid_ones():
    with pytest.raises(UsageError, match="224 or 227"):
        alexnet.create_model("alexnet_2012", input_size=200)
    model = alexnet.create_model("alexnet_2012")
    with pytest.raises(UsageError, match="224x224"):
        model(torch.zeros(1, 3, 227, 227))


def test_unknown_model_and_duplicate_registration_refused():
    with pytest.raises(UsageError, match="alexnet_2012"):
        alexnet.create_model("alexnet_2013")
    with pytest.raises(ValueError, match="already registered"):
        alexnet.register_model("alexnet_2012", input_size=224, source="x", description="x")(lambda **kw: None)


def test_paper_init_statistics():
    torch.manual_seed(0)
    model = alexnet.create_model("alexnet_2012")
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            short = name.rsplit(".", 1)[-1]
            w = module.weight.detach()
            assert abs(float(w.mean())) < 1e-3, name
            # [5] weights from N(0, 0.01): the sample std of >=30k draws is within a few percent
            assert float(w.std()) == pytest.approx(0.01, rel=0.05), name
            expected_bias = 1.0 if short in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
            assert torch.all(module.bias == expected_bias), name


@pytest.mark.parametrize("name", ["alexnet_2012", "resnet18", "vgg11", "lenet5", "alexnet_small", "alexnet_owt"])
def test_in_channels_and_num_classes(name):
    info = alexnet.model_info(name)
    model = alexnet.create_model(name, num_classes=5, in_channels=1 if info.in_channels == 3 else 3)
    x = torch.randn(1, 1 if info.in_channels == 3 else 3, info.input_size, info.input_size)
    assert model(x).shape == (1, 5)


def test_d2l_network_matches_paper_md():
    model = alexnet.create_model("alexnet_d2l", num_classes=10)
    assert model.classifier.fc6.in_features == 6400
    assert model.features.conv1.in_channels == 1 and model.features.conv1.padding == (1, 1)
    assert not any(isinstance(m, LocalResponseNorm) for m in model.modules())


def test_vgg_variants_on_torchvision_class():
    c = alexnet.create_model("vgg16_c")
    assert isinstance(c, torchvision.models.VGG)
    assert sum(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in c.modules()) == 3
    a_lrn = alexnet.create_model("vgg11_lrn")
    assert isinstance(a_lrn.features[2], LocalResponseNorm)
    # A-LRN adds no parameters to A.
    assert sum(p.numel() for p in a_lrn.parameters()) == sum(p.numel() for p in torchvision.models.vgg11().parameters())
