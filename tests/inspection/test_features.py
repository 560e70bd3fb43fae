"""`alexnet features` and alexnet.inspection.features: any layer's activations, for every model family, as an npz."""
import numpy as np
import pytest
import torch

from alexnet.cli.main import main
from alexnet.data import open_dataset
from alexnet.errors import UsageError
from alexnet.inspection.features import extract_features, layer_names, resolve_layer
from alexnet.models import create_model


def to_unit(batch: torch.Tensor) -> torch.Tensor:
    return batch.float() / 255


@pytest.fixture
def run(tmp_path, monkeypatch, tiny_run):
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))
    return tiny_run(tmp_path)


# (model, input size, channels): every family at a small input (alexnet_2012: the test below)
FAMILIES = [("alexnet_small", 28, 1), ("alexnet_owt", 63, 3), ("lenet5", 28, 1), ("vgg11_bn", 32, 3),
            ("resnet18", 32, 3), pytest.param("alexnet_d2l", 224, 1, marks=pytest.mark.slow)]


@pytest.mark.parametrize("name,size,channels", FAMILIES)
def test_features_of_every_family_have_the_layers_shape(name, size, channels):
    model = create_model(name, num_classes=7, in_channels=channels, input_size=size).eval()
    images = np.random.default_rng(0).integers(0, 256, (2, size, size, channels), dtype=np.uint8)
    last_linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    hidden = extract_features(model, images, to_unit, batch_size=1)
    assert hidden.shape == (2, last_linear.in_features) and hidden.dtype == np.float32
    assert np.isfinite(hidden).all() and hidden.std() > 0
    conv_name = next(n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():     # conv1 of the two images, computed directly
        expected = model.get_submodule(conv_name)(to_unit(torch.tensor(images).permute(0, 3, 1, 2))).flatten(1)
    conv = extract_features(model, images, to_unit, conv_name)
    np.testing.assert_allclose(conv, expected.numpy(), rtol=1e-4, atol=1e-5)


def test_alexnet_features_match_the_layers_computed_by_hand():
    """fc7 after its ReLU is the default [6.1]; a hook on an in-place ReLU's input, on a fused relu-LRN-pool
    block and on the `features` container (skipped by the fused forward) all give the module-by-module values."""
    model = create_model("alexnet_2012", num_classes=10).eval()
    images = np.random.default_rng(1).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    x = to_unit(torch.tensor(images).permute(0, 3, 1, 2))
    with torch.no_grad():
        model.fuse = False
        pool5 = model.features(x).flatten(1)
        conv1 = model.features.conv1(x)
        pool1 = model.features[:4](x)
        fc7 = model.classifier[:5](pool5)        # fc6, relu6, drop6, fc7, relu7
        model.fuse = True
    assert model.classifier[4].__class__ is torch.nn.ReLU
    close = dict(rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(extract_features(model, images, to_unit), fc7.numpy(), **close)
    np.testing.assert_allclose(extract_features(model, images, to_unit, "relu7"), fc7.numpy(), **close)
    np.testing.assert_allclose(extract_features(model, images, to_unit, "conv1"), conv1.flatten(1).numpy(), **close)
    np.testing.assert_allclose(extract_features(model, images, to_unit, "pool1"), pool1.flatten(1).numpy(), **close)
    np.testing.assert_allclose(extract_features(model, images, to_unit, "features"), pool5.numpy(), **close)
    assert extract_features(model, images, to_unit, "pool5").shape == (2, 256 * 6 * 6) and model.fuse
    assert extract_features(model, images, to_unit, "fc8").shape == (2, 10)


def test_layer_names_resolve_full_short_and_default():
    small = create_model("alexnet_small", num_classes=10)
    assert resolve_layer(small, "features.conv5") == ("features.conv5", "output")
    assert resolve_layer(small, "fc7") == ("classifier.fc7", "output")
    assert resolve_layer(small, "pool5") == ("features.pool5", "output")
    assert resolve_layer(small) == resolve_layer(small, "last-hidden") == ("classifier.fc8", "input")
    assert "features.relu7" not in layer_names(small) and "classifier.relu7" in layer_names(small)
    assert resolve_layer(create_model("lenet5", num_classes=10)) == ("classifier.fc3", "input")
    resnet = create_model("resnet18", num_classes=10)
    assert resolve_layer(resnet, "conv1") == ("conv1", "output")      # a full name wins over equal last parts
    assert resolve_layer(resnet) == ("fc", "input")
    with pytest.raises(UsageError, match="ambiguous: layer1.0.bn2, layer1.1.bn2"):
        resolve_layer(resnet, "bn2")
    with pytest.raises(UsageError, match="--layer fc9: no such layer.*features.conv1, .*classifier.fc8"):
        resolve_layer(small, "fc9")


def test_cli_features_writes_the_splits_features_labels_and_classes(run, capsys):
    ckpt, data = run
    assert main(["features", str(ckpt), data]) == 0
    out = ckpt.parent / "features_last-hidden_test.npz"
    assert str(out) in capsys.readouterr().out
    test = open_dataset(data, "test", progress=False)
    with np.load(out) as saved:
        assert saved["features"].shape == (20, 256) and saved["features"].dtype == np.float32
        np.testing.assert_array_equal(saved["labels"], test.labels)
        assert saved["classes"].tolist() == test.classes
        np.testing.assert_array_equal(saved["indices"], np.arange(20))
        assert str(saved["layer"]) == "last hidden layer (input of classifier.fc8)" and str(saved["split"]) == "test"
        hidden = saved["features"]
    assert not list(ckpt.parent.glob(".*tmp*")), "no temporary file is left"

    target = ckpt.parent / "sub" / "conv5.npz"
    (ckpt.parent / "sub").mkdir()
    assert main(["features", str(ckpt), "--layer", "conv5", "--split", "train", "--out", str(target),
                 "--batch-size", "7"]) == 0                        # DATA: the checkpoint's own
    with np.load(target) as saved:
        assert saved["features"].shape == (54, 64 * 7 * 7)         # 60 train images, 0.1 held out for val
        np.testing.assert_array_equal(saved["labels"], open_dataset(data, "train", progress=False).labels)
    assert main(["features", str(ckpt), "--layer", "classifier.relu7", "--out", str(target)]) == 0
    with np.load(target) as saved:
        np.testing.assert_allclose(saved["features"], hidden, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("argv,message", [
    (["features", "{ckpt}", "--layer", "fc9"], "--layer fc9: no such layer"),
    (["features", "{dir}/missing.pt", "fashion-mnist"], "missing.pt does not exist"),
    (["features", "{ckpt}", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["features", "{ckpt}", "--out", "{dir}"], "is a folder"),
])
def test_cli_features_refusals_exit_2_with_a_sentence(run, capsys, argv, message):
    ckpt, _ = run
    argv = [a.format(ckpt=ckpt, dir=ckpt.parent) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("alexnet features: error:") and message in err
    assert not list(ckpt.parent.glob("*.npz"))
