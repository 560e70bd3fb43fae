"""[3.2] The two towers on two devices: the grouped alexnet_2012 cut into towers computes the same function,
with the same gradients, SGD steps and state dict; here both towers run on the CPU (the machine has no GPU)."""
import copy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import alexnet
from alexnet.checkpoint import Checkpoint, load_checkpoint
from alexnet.weights import load_checked as load_state_dict_checked
from alexnet.cli.main import main
from alexnet.errors import UsageError
from alexnet.models.towers import TwoTowerAlexNet, tower_devices
from alexnet.ops import lrn as lrn_ops
from alexnet.train.recipes import resolve_config
from alexnet.models.summary import summary_text

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from photos import write_photo_folder  # noqa: E402  (bench/photos.py)

CLASSES = 10
FP32 = dict(rtol=1e-5, atol=1e-6)


def _pair(towers=("cpu", "cpu"), **kw):
    """The grouped model and the towers model built from the same seed (so the same weights)."""
    torch.manual_seed(0)
    grouped = alexnet.create_model("alexnet_2012", num_classes=CLASSES, **kw)
    torch.manual_seed(0)
    split = alexnet.create_model("alexnet_2012", num_classes=CLASSES, towers=towers, **kw)
    return grouped, split


@pytest.fixture(scope="module")
def built():
    return _pair()


@pytest.fixture
def pair(built):
    """Fresh copies of the two models (building them takes longer than copying)."""
    return copy.deepcopy(built[0]), copy.deepcopy(built[1])


def _grouped_grads(model) -> dict[str, torch.Tensor]:
    """Parameter gradients under the grouped model's names: a towers model's halves joined (rows)."""
    grads = {name: p.grad for name, p in model.named_parameters()}
    if not isinstance(model, TwoTowerAlexNet):
        return grads
    joined = {name: grads[name] for name in grads if name.startswith("classifier.")}
    for name in [n for n in grads if n.startswith("towers.0.")]:
        rest = name[len("towers.0."):]
        joined[rest] = torch.cat([grads[name], grads["towers.1." + rest].to(grads[name].device)])
    return joined


def _assert_close(a: torch.Tensor, b: torch.Tensor, msg: str = "") -> None:
    """fp32 agreement relative to the tensor's scale (sums in another order, e.g. conv3 as two halves)."""
    a, b = a.detach().cpu(), b.detach().cpu()
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * max(1.0, b.abs().max().item()), msg=msg)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_outputs_and_gradients_equal_the_grouped_model(pair, layout):
    grouped, split = pair
    x = 3 * torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    outputs = []
    for model in (grouped, split):
        model.to(memory_format=layout).eval()   # eval: dropout off, the towers' masks are their own
        out = model(x.contiguous(memory_format=layout))
        out.logsumexp(1).sum().backward()
        outputs.append(out)
    _assert_close(outputs[1], outputs[0])
    assert outputs[1].device == torch.device("cpu") and outputs[1].shape == (2, CLASSES)
    ours, theirs = _grouped_grads(split), _grouped_grads(grouped)
    assert ours.keys() == theirs.keys() and len(ours) == 16
    for name in theirs:
        _assert_close(ours[name], theirs[name], name)


def test_train_mode_and_sgd_steps_give_the_same_weights(pair):
    """Train mode (dropout 0: the towers draw their own masks) and two fused SGD steps as train.py takes them."""
    grouped, split = pair
    for module in [*grouped.modules(), *split.modules()]:
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([1, 7])
    for model in (grouped, split):
        model.to(memory_format=torch.channels_last).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, fused=True)
        for _ in range(2):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)), y).backward()
            optimizer.step()
    after = split.state_dict()
    for name, value in grouped.state_dict().items():
        _assert_close(after[name], value, name)


def test_dropout_runs_in_each_tower(pair):
    _, split = pair
    split.train()
    out = split(torch.randn(2, 3, 224, 224))
    assert out.shape == (2, CLASSES) and torch.isfinite(out).all()
    assert [m.p for m in split.modules() if isinstance(m, torch.nn.Dropout)] == [0.5] * 4


def test_state_dict_is_the_grouped_models_and_moves_both_ways(pair):
    grouped, split = pair
    ours, theirs = split.state_dict(), grouped.state_dict()
    assert list(ours) == list(theirs)                       # the same keys, in the same order
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert ours["features.conv1.weight"].shape == (96, 3, 11, 11) and ours["features.conv2.weight"].shape[1] == 48
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)

    torch.manual_seed(5)
    other = alexnet.create_model("alexnet_2012", num_classes=CLASSES)   # different weights
    split.load_state_dict(other.state_dict())                          # strict: grouped -> towers
    assert all(torch.equal(split.state_dict()[k], v) for k, v in other.state_dict().items())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        _assert_close(split.eval()(x), other.eval()(x))
    grouped.load_state_dict(split.state_dict())                        # strict: towers -> grouped
    assert all(torch.equal(grouped.state_dict()[k], v) for k, v in other.state_dict().items())
    load_state_dict_checked(split, theirs)
    load_state_dict_checked(grouped, split.state_dict())
    wrong = alexnet.create_model("alexnet_2012", num_classes=CLASSES + 1).state_dict()
    with pytest.raises(UsageError, match="classifier.fc8.weight"):
        load_state_dict_checked(split, wrong)


def test_placement_memory_format_and_device_strings(built):
    split = TwoTowerAlexNet(built[0], "cpu, cpu")
    assert split.devices == (torch.device("cpu"), torch.device("cpu"))
    split.to(memory_format=torch.channels_last)
    conv = split.towers[1].features.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and conv.shape == (48, 3, 11, 11)
    assert split.classifier.fc8.weight.shape == (CLASSES, 4096)        # fc8 whole, on the first tower's device
    assert tower_devices(["cpu", torch.device("cpu")]) == (torch.device("cpu"), torch.device("cpu"))


def test_models_and_devices_that_cannot_be_split_are_refused():
    for name in ("alexnet_2012_one_gpu", "alexnet_caffe", "caffenet", "alexnet_small", "vgg11"):
        with pytest.raises(UsageError, match="alexnet_2012 models the paper's two-GPU split"):
            alexnet.create_model(name, towers=("cpu", "cpu"))
    for towers, message in [(("cpu",), "two devices"), ("cpu,cpu,cpu", "two devices"),
                            (("cpu", "gpu7"), "'gpu7' is not a device"), (("cpu", "meta"), "meta")]:
        with pytest.raises(UsageError, match=message):
            alexnet.create_model("alexnet_2012", towers=towers)
    missing = f"cuda:{max(torch.cuda.device_count(), 1)}"             # one past the last GPU (cuda:1 with one)
    with pytest.raises(UsageError, match=missing if torch.cuda.is_available() else "cuda:0 needs CUDA"):
        alexnet.create_model("alexnet_2012", towers=("cuda:0", missing))
    with pytest.raises(UsageError, match="norm1"):                      # BatchNorm: not modelled per tower
        alexnet.create_model("alexnet_2012", norm="bn", towers=("cpu", "cpu"))
    with pytest.raises(UsageError, match="norm1 normalises across the two towers"):
        alexnet.create_model("alexnet_2012", lrn={"groups": 1}, towers=("cpu", "cpu"))


@pytest.mark.skipif(lrn_ops._kernel() is None, reason="no compiled LRN kernel (no C++ compiler?)")
def test_each_tower_runs_relu_lrn_pool_fused(pair, monkeypatch):
    calls = []
    original = lrn_ops._ReLULRNMaxPoolFunction.forward
    monkeypatch.setattr(lrn_ops._ReLULRNMaxPoolFunction, "forward",
                        staticmethod(lambda ctx, z, *a: calls.append((tuple(z.shape), a[-1])) or original(ctx, z, *a)))
    _, split = pair
    split.to(memory_format=torch.channels_last)(torch.randn(2, 3, 224, 224).contiguous(memory_format=torch.channels_last))
    assert calls == [((2, 48, 55, 55), 1), ((2, 128, 27, 27), 1)] * 2    # tower 0's conv1 and conv2 blocks, then 1's


def test_summary_shows_what_crosses_between_the_towers():
    text = summary_text("alexnet_2012")
    for row in ("48 + 48", "128 + 128", "192 + 192 *", "2048 + 2048 *", "1000 (tower 0) *"):
        assert row in text, row
    assert "(conv3, fc6, fc7, fc8)" in text and "groups 2" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith(("features.", "classifier."))}
    assert [name for name, line in lines.items() if line.rstrip().split()[-3] == "*"] == [
        "features.conv3", "classifier.fc6", "classifier.fc7", "classifier.fc8"]
    assert "towers" not in summary_text("alexnet_2012_one_gpu")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("tower_photos")
    write_photo_folder(root / "train", 16, classes=2, seed=0, short_side=(256, 300))
    write_photo_folder(root / "val", 2, classes=2, seed=100, short_side=(256, 300))
    return root


def test_cli_train_with_towers_on_cpu_and_the_checkpoint_loads_into_the_plain_model(photos, tmp_path, monkeypatch):
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))
    flags = ["--recipe", "paper", "--data", str(photos), "--epochs", "1", "--batch-size", "8", "--quiet"]
    assert main(["train", *flags, "--towers", "cpu,cpu", "--out", str(tmp_path / "a")]) == 0
    ckpt = load_checkpoint(tmp_path / "a" / "last.pt")
    assert ckpt["config"]["towers"] == "cpu,cpu" and "towers" not in ckpt["model"]["kwargs"]
    assert ckpt["position"]["global_step"] == 2
    plain = Checkpoint.from_dict(ckpt).build_model()           # what eval and predict build: no towers
    assert type(plain).__name__ == "AlexNet"
    split = alexnet.create_model("alexnet_2012", num_classes=2, towers="cpu,cpu")
    split.load_state_dict(ckpt["state_dict"])
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        _assert_close(split.eval()(x), plain(x))

    # exact resume with towers: one step, stop, resume the second = both steps straight
    assert main(["train", *flags, "--towers", "cpu,cpu", "--max-steps", "1", "--out", str(tmp_path / "b")]) == 0
    assert main(["train", "--out", str(tmp_path / "b"), "--resume", "--max-steps", "0", "--quiet"]) == 0
    resumed = load_checkpoint(tmp_path / "b" / "last.pt")
    assert resumed["config"]["towers"] == "cpu,cpu"
    for key, value in ckpt["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    # the optimizer's momentum is per parameter (halves here): resuming without the towers is refused
    assert main(["train", "--out", str(tmp_path / "b"), "--resume", "--towers", "", "--quiet"]) == 2


def _cuda_pair(towers, **kw):
    if torch.cuda.device_count() < (2 if towers[1] == "cuda:1" else 1):
        pytest.skip(f"needs {'2 CUDA devices' if towers[1] == 'cuda:1' else 'CUDA'}")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    grouped, split = _pair(towers=towers, dropout=0.0, **kw)
    return grouped.to("cuda:0"), split


def _sgd_steps(model, x, y, steps):
    model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    outs = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        outs.append(model(x.contiguous(memory_format=torch.channels_last)))
        F.cross_entropy(outs[-1], y).backward()
        optimizer.step()
    torch.cuda.synchronize()
    return outs


@pytest.mark.gpu
@pytest.mark.parametrize("towers", [("cuda:0", "cuda:1"), ("cuda:0", "cuda:0")])
def test_cuda_towers_equal_the_grouped_model(towers):
    """One SGD step from the same weights: output, every gradient and the weights after it, at fp32 tolerance.
    (Not more steps: the paper's init makes the first steps blow up (docs/paper_recipe.md), which amplifies
    the last-bit differences of cuDNN's algorithms for 48 vs 96 maps far past any fixed tolerance.)"""
    grouped, split = _cuda_pair(towers)
    x = torch.randn(4, 3, 224, 224, device="cuda:0")
    y = torch.tensor([1, 2, 3, 4], device="cuda:0")
    (theirs_out,), (ours_out,) = _sgd_steps(grouped, x, y, 1), _sgd_steps(split, x, y, 1)
    assert ours_out.device == torch.device("cuda:0")
    _assert_close(ours_out, theirs_out)
    ours, theirs = _grouped_grads(split), _grouped_grads(grouped)
    for name in theirs:   # relative L2 error: summation order moves a few conv2 elements by 1e-3 of the largest
        error = float(torch.linalg.vector_norm(ours[name].to(theirs[name].device) - theirs[name]))
        assert error <= 1e-3 * float(torch.linalg.vector_norm(theirs[name])), (name, error)
    after = split.state_dict()
    for name, value in grouped.state_dict().items():
        torch.testing.assert_close(after[name].cpu(), value.cpu(), rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.gpu
@pytest.mark.parametrize("towers", [("cuda:0", "cuda:1"), ("cuda:0", "cuda:0")])
def test_cuda_streams_give_what_no_streams_give(towers):
    """A stream per tower (the default) against both towers on the ambient stream, five SGD steps each, with
    the Caffe init that trains: the same kernels in another order, so a missing wait between the streams (a
    race) would show as garbage, not as the last bits."""
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        _, overlapped = _cuda_pair(towers, init="caffe", init_bias=0.1)
        serial = copy.deepcopy(overlapped)
        serial.overlap = False
        x = torch.randn(16, 3, 224, 224, device="cuda:0")
        y = torch.arange(16, device="cuda:0") % CLASSES
        for ours, theirs in zip(_sgd_steps(overlapped, x, y, 5), _sgd_steps(serial, x, y, 5)):
            _assert_close(ours, theirs)
        after = serial.state_dict()
        for name, value in overlapped.state_dict().items():
            torch.testing.assert_close(value.cpu(), after[name].cpu(), rtol=1e-5, atol=1e-6, msg=name)
    finally:
        torch.backends.cudnn.deterministic = False


def test_towers_in_model_kwargs_is_refused_with_the_flag_to_use(photos, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))
    code = main(["train", "--recipe", "paper", "--data", str(photos), "--epochs", "1", "--batch-size", "8", "--quiet",
                 "--model-kwargs", '{"towers": ["cpu", "cpu"]}', "--towers", "cpu,cpu", "--out", str(tmp_path / "k")])
    assert code == 2 and "--towers DEV0,DEV1" in capsys.readouterr().err
