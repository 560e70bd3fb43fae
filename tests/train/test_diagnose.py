"""alexnet.train.diagnose: the stall watch, per-layer statistics (--diagnose), init schemes and LRN conventions as
their sources define them, and the paper recipe's departures from the paper's text."""
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import alexnet
from alexnet.cli.main import main
from alexnet.train.diagnose import LayerStats, StallWatch, activation_stats
from alexnet.train.recipes import resolve_config
from alexnet.train.schedule import param_groups as _param_groups
from alexnet.train.loop import train

SMALL = dict(train_subset=256, batch_size=64, epochs=1, val_subset=128, quiet=True)


# ---- the stall watch -----------------------------------------------------------------------------------------
def test_stall_watch_speaks_once_after_patience_windows_at_chance():
    watch = StallWatch(9, window=10, patience=5)
    chance = math.log(9)
    said = [watch.check(chance * 1.01, step=10 * (i + 1)) for i in range(8)]
    assert said[:4] == [None] * 4
    assert "ln 9 = 2.197" in said[4] and "50 steps" in said[4] and "--recipe paper" in said[4]
    assert said[5:] == [None] * 3           # once per kind of trouble


def test_stall_watch_resets_when_the_loss_moves_and_reports_blowups():
    watch = StallWatch(1000, window=10, patience=3)
    chance = math.log(1000)
    assert [watch.check(v, 10) for v in (chance, chance, 0.9 * chance, chance, chance)] == [None] * 5
    message = watch.check(3.5 * chance, 60)
    assert "blowing up" in message and "3.5x chance" in message and "--lr" in message and "--clip-grad-norm" in message
    assert watch.check(float("nan"), 70) is None
    assert StallWatch(1).check(0.0, 10) is None      # one class: nothing to learn, nothing to say


def test_stall_watch_reports_a_run_that_learnt_then_diverged():
    """The recorded grey-photo run of docs/paper_recipe.md (the paper recipe, seed 1): the loss falls to 0.97, then
    one step reaches 19.9 and the rest sit at 3-5 (accuracy back to chance). No window's mean is 3x chance, so the
    blow-up rule is silent; the watch says the loss is back above chance after falling below it. (48 steps were
    recorded: windows of 8.)"""
    record = json.loads((Path(__file__).resolve().parents[2] / "docs" / "paper_recipe" /
                         "steps-grey-seed1-paper.json").read_text())
    losses = [row["loss"] for row in record["runs"][0]["diagnosis"]]
    watch = StallWatch(8, window=8, patience=5)
    said = [(end, watch.check(sum(losses[end - 8:end]) / 8, end)) for end in range(8, len(losses) + 1, 8)]
    spoken = [(end, message) for end, message in said if message]
    assert len(spoken) == 1 and spoken[0][0] == 48, said           # steps 41-48, the first window back up
    assert "back above chance (ln 8 = 2.079) after falling to 1.7" in spoken[0][1] and "--clip-grad-norm" in spoken[0][1]
    steady = StallWatch(8, window=10)
    assert all(steady.check(v, 10) is None for v in (2.0, 1.5, 1.0, 0.6, 0.7, 0.65, 0.9))   # noise, not divergence


# ---- per-layer statistics --------------------------------------------------------------------------------
def test_activation_stats_of_known_tensors():
    constant = torch.ones(8, 4, 3, 3)                # the same for every image: no signal, nothing zeroed
    s = activation_stats(constant + 1e-6 * torch.randn(8, 4, 3, 3))
    assert s["act_mean"] == pytest.approx(1.0) and s["signal"] < 0.5 and s["relu_zero"] == 0.0 and s["dead"] == 0.0
    x = torch.randn(64, 6)
    x[:, :3] = -x[:, :3].abs()                       # three of six units never fire
    s = activation_stats(x)
    assert s["dead"] == 0.5 and s["relu_zero"] == pytest.approx((x <= 0).float().mean().item())
    per_image = torch.randn(64, 5, 1, 1) * 2.0       # units vary only across images: all signal
    assert activation_stats(per_image)["signal"] == pytest.approx(1.0, abs=0.1)


def test_layer_stats_update_ratio_and_no_effect_on_the_model():
    torch.manual_seed(0)
    model = alexnet.create_model("alexnet_small", num_classes=3, input_size=28)
    clone = alexnet.create_model("alexnet_small", num_classes=3, input_size=28)
    clone.load_state_dict(model.state_dict())
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 3, (16,))
    stats = LayerStats(model)
    assert [name for name, _ in stats.layers] == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, clone)]
    rows = []
    for m, opt in zip((model, clone), opts):
        if m is model:
            stats.arm()
        torch.manual_seed(1)                         # the same dropout masks for both
        logits = m(x)
        nn.functional.cross_entropy(logits, y).backward()
        if m is model:
            stats.before_step()
            fc8_before = m.classifier.fc8.weight.detach().clone()
            expected_grad_std = m.classifier.fc8.weight.grad.std().item()
        opt.step()
        if m is model:
            rows.append(stats.after_step(0))
            assert stats.after_step(1) is None       # one record per armed step
    row = rows[0]
    fc8 = row["layers"]["fc8"]
    assert fc8["update_ratio"] == pytest.approx(
        ((model.classifier.fc8.weight - fc8_before).norm() / fc8_before.norm()).item(), rel=1e-5)
    assert fc8["grad_std"] == pytest.approx(expected_grad_std)
    assert row["logit_std"] > 0 and set(row["layers"]["conv1"]) >= {"act_std", "signal", "dead", "relu_zero"}
    for a, b in zip(model.parameters(), clone.parameters()):   # recording changed nothing
        assert torch.equal(a, b)
    stats.remove()
    assert not any(m._forward_hooks for _, m in stats.layers)


def test_literal_paper_init_drowns_the_image_in_bias():
    """The measured cause of the stall (see docs/paper_recipe.md): with bias 1, fc7 hands fc8 a large vector
    that is nearly the same for every image, so fc8's first SGD step moves it by ~20% of its norm."""
    torch.manual_seed(0)
    x = torch.randn(16, 3, 224, 224) * 60.0          # 0-255 pixels minus the mean: std ~60, as the paper feeds
    rows = {}
    for bias in (1.0, 0.1):
        torch.manual_seed(0)
        model = alexnet.create_model("alexnet_2012", num_classes=9, init_bias=bias).eval()
        stats = LayerStats(model)
        stats.arm()
        nn.functional.cross_entropy(model(x), torch.arange(16) % 9).backward()
        stats.before_step()
        torch.optim.SGD(model.parameters(), lr=0.01).step()
        rows[bias] = stats.after_step(0)["layers"]
    for layer in ("conv4", "conv5", "fc6", "fc7"):           # bias 1: a constant the size of the signal or more
        assert rows[1.0][layer]["act_mean"] > 0.9 and rows[1.0][layer]["act_mean"] > rows[1.0][layer]["act_std"] / 2
    assert rows[1.0]["fc8"]["update_ratio"] > 0.1 > 10 * rows[0.1]["fc8"]["update_ratio"]


# ---- init schemes and LRN conventions -----------------------------------------------------------------------
def _d2l_r017(xavier: bool) -> nn.Sequential:
    """d2l r0.17's AlexNet, and its train_ch6 init (xavier_uniform_ on Linear/Conv2d weights only)."""
    net = nn.Sequential(
        nn.Conv2d(1, 96, 11, 4, 1), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Conv2d(96, 256, 5, padding=2), nn.ReLU(),
        nn.MaxPool2d(3, 2), nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 384, 3, padding=1),
        nn.ReLU(), nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Flatten(),
        nn.Linear(6400, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, 10))
    if xavier:
        net.apply(lambda m: nn.init.xavier_uniform_(m.weight) if type(m) in (nn.Linear, nn.Conv2d) else None)
    return net


@pytest.mark.parametrize("init, xavier", [(None, True), ("default", False)])
def test_d2l_init_matches_d2l_bit_for_bit(init, xavier):
    torch.manual_seed(3)
    reference = [p for p in _d2l_r017(xavier).parameters()]
    torch.manual_seed(3)
    model = alexnet.create_model("alexnet_d2l", num_classes=10, **({"init": init} if init else {}))
    ours = list(model.parameters())
    assert len(ours) == len(reference)
    for a, b in zip(ours, reference):
        assert torch.equal(a, b)
    assert model.features.conv1.bias.abs().max() > 0          # biases keep PyTorch's default, not zero


def test_cuda_convnet2_init_and_lrn_convention():
    torch.manual_seed(0)
    model = alexnet.create_model("alexnet_2012", init="cuda-convnet2", lrn="cuda-convnet2")
    f, c = model.features, model.classifier
    for name, std in (("conv1", 0.01), ("conv2", 0.01), ("conv3", 0.03), ("conv4", 0.03), ("conv5", 0.03)):
        assert getattr(f, name).weight.std().item() == pytest.approx(std, rel=0.05), name
    assert c.fc6.weight.std().item() == pytest.approx(0.01, rel=0.02)
    assert f.conv3.bias.abs().max() == 0 and f.conv4.bias.eq(1).all()
    assert f.norm1.k == 2 and f.norm1.alpha_sum == pytest.approx(2e-5)           # scale 1e-4 / size 5
    paper = alexnet.create_model("alexnet_2012")
    assert paper.features.norm1.alpha_sum == pytest.approx(1e-4)                   # [3.3] on the sum
    caffe = alexnet.create_model("alexnet_caffe")
    assert caffe.features.norm1.k == 1 and caffe.features.norm1.alpha_sum == pytest.approx(2e-5)
    with pytest.raises(alexnet.UsageError, match="unknown lrn preset"):
        alexnet.create_model("alexnet_2012", lrn="krizhevsky")
    with pytest.raises(alexnet.UsageError, match="unknown init"):
        alexnet.create_model("alexnet_2012", init="he")


def test_norm_before_relu_is_cuda_convnet2s_conv1_order():
    torch.manual_seed(0)
    model = alexnet.create_model("alexnet_2012", num_classes=5, norm_before_relu=[1]).eval()
    names = list(model.features._modules)
    assert names[:4] == ["conv1", "norm1", "relu1", "pool1"] and names[4:8] == ["conv2", "relu2", "norm2", "pool2"]
    x = torch.randn(2, 3, 224, 224) * 50
    f = model.features
    expected = f.pool1(torch.relu(f.norm1(f.conv1(x))))
    assert torch.allclose(f[:4](x), expected)
    model(x.contiguous(memory_format=torch.channels_last)).sum().backward()    # the unfused path trains


# ---- the recipes ------------------------------------------------------------------------------------------
def test_paper_recipe_departures_and_the_literal_text():
    literal, paper = resolve_config("paper-literal"), resolve_config("paper")
    assert literal.decay_norm_and_bias and literal.bias_lr_mult == 1.0 and literal.model_kwargs == {}
    assert not paper.decay_norm_and_bias and paper.bias_lr_mult == 2.0 and paper.clip_grad_norm == 5.0
    convnet2 = {"lrn": "cuda-convnet2", "norm_before_relu": [1], "init": "cuda-convnet2"}
    assert literal.clip_grad_norm == 0.0 and paper.model_kwargs == {"init_bias": 0.1, **convnet2}
    # the user's model arguments go on top of the recipe's, key by key
    text = resolve_config("paper", model_kwargs={"lrn": "paper", "norm_before_relu": [], "init": "paper"})
    assert text.model_kwargs == {"init_bias": 0.1, "lrn": "paper", "norm_before_relu": [], "init": "paper"}
    assert resolve_config("paper", model_kwargs={"init_bias": 1.0}).model_kwargs == {"init_bias": 1.0, **convnet2}
    torch.manual_seed(0)   # the paper recipe's net: N(0, 0.01), conv3-5 0.03 (cuda-convnet2), Caffe's bias 0.1
    net = alexnet.create_model("alexnet_2012", num_classes=9, **paper.model_kwargs)
    fc, f = dict(net.classifier.named_children()), net.features
    assert abs(fc["fc6"].weight.std().item() - 0.01) < 2e-4 and abs(fc["fc7"].weight.std().item() - 0.01) < 2e-4
    assert abs(fc["fc8"].weight.std().item() - 0.01) < 5e-4 and torch.all(fc["fc6"].bias == 0.1)
    assert abs(f.conv1.weight.std().item() - 0.01) < 5e-4 and abs(f.conv4.weight.std().item() - 0.03) < 5e-4
    names = [name for name, _ in f.named_children()]
    assert names[:4] == ["conv1", "norm1", "relu1", "pool1"] and names.index("relu2") < names.index("norm2")
    assert f.norm1.alpha_sum == pytest.approx(2e-5) and f.norm1.k == 2.0 and f.norm1.groups == 2   # 1e-4 / 5
    from alexnet.models.alexnet import PAPER_NOTES
    from alexnet.train.recipes import PAPER_DEPARTURES
    assert len(PAPER_DEPARTURES) == 7 and all("cuda-convnet2" in d.source or "Caffe" in d.source
                                              for d in PAPER_DEPARTURES[:3])
    assert "--clip-grad-norm 5" in str(PAPER_DEPARTURES[3]) and "docs/paper_recipe.md" in str(PAPER_DEPARTURES[3])
    for departure, kwarg in zip(PAPER_DEPARTURES[4:], ("lrn 'cuda-convnet2'", "norm_before_relu [1]",
                                                        "init 'cuda-convnet2'")):
        assert "cuda-convnet2" in departure.source and f"model_kwargs {kwarg}" in str(departure)
    assert any("paper-literal" in note for note in PAPER_NOTES)
    model = alexnet.create_model("alexnet_2012", num_classes=3)
    groups = _param_groups(model, paper)
    weights, biases = groups
    assert all(p.dim() == 4 or p.dim() == 2 for p in weights["params"]) and weights["lr_mult"] == 1.0
    assert all(p.dim() == 1 for p in biases["params"]) and len(biases["params"]) == 8
    assert biases["weight_decay"] == 0.0 and biases["lr_mult"] == 2.0 and weights["weight_decay"] == 5e-4
    [one] = _param_groups(model, literal)
    assert one["weight_decay"] == 5e-4 and len(one["params"]) == 16


def test_bias_lr_mult_reaches_the_optimizer(fashion, tmp_path):
    cfg = resolve_config("quick", data=fashion, out=str(tmp_path / "run"), bias_lr_mult=2.0, max_steps=2, **SMALL)
    train(cfg)
    from alexnet.checkpoint import load_checkpoint
    groups = load_checkpoint(tmp_path / "run" / "last.pt")["optimizer"]["param_groups"]
    assert [g["lr_mult"] for g in groups] == [1.0, 2.0]
    assert groups[1]["lr"] == pytest.approx(2 * groups[0]["lr"])


# ---- --diagnose end to end ---------------------------------------------------------------------------------
def test_diagnose_cli_writes_statistics_and_changes_nothing(fashion, tmp_path, capsys):
    common = ["train", "--data", fashion, "--train-subset", "256", "--val-subset", "128", "--batch-size", "64",
              "--epochs", "1", "--quiet"]
    assert main(common + ["--out", str(tmp_path / "plain")]) == 0
    assert main(common + ["--out", str(tmp_path / "diag"), "--diagnose", "2"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "diag" / "diagnose.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 2]                      # 4 steps: at init, then every 2
    assert set(rows[0]["layers"]) == {"conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"}
    assert all(math.isfinite(r["loss"]) and r["logit_std"] > 0 for r in rows)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "diag"), size_guidance={"histograms": 0}).Reload()
    assert "diagnose/fc8/update_ratio" in events.Tags()["scalars"]
    assert "weights/conv1" in events.Tags()["histograms"] and "grads/fc8" in events.Tags()["histograms"]
    from alexnet.checkpoint import load_checkpoint
    a, b = (load_checkpoint(tmp_path / run / "last.pt")["state_dict"] for run in ("plain", "diag"))
    assert all(torch.equal(a[k], b[k]) for k in a)                  # recording is read-only
    assert not (tmp_path / "plain" / "diagnose.jsonl").exists()


def test_train_warns_in_plain_words_when_the_loss_sits_at_chance(fashion, tmp_path, capsys):
    """lr 1e-6 cannot move the quick net off ln 10 in 50 steps: the warning names ln K and the fixes."""
    cfg = resolve_config("quick", data=fashion, out=str(tmp_path / "flat"), train_subset=3200, batch_size=64,
                         epochs=1, val_subset=64, lr=1e-6, schedule="constant", label_smoothing=0.0, quiet=True)
    train(cfg)
    err = capsys.readouterr().err
    assert "warning: the training loss has stayed at" in err and "ln 10 = 2.303" in err


def test_the_stall_advice_fits_the_network():
    from alexnet.train.diagnose import GENERIC_STALL_FIXES, STALL_FIXES, stall_fixes
    from alexnet.models import create_model
    assert stall_fixes(create_model("alexnet_small", num_classes=3)) == STALL_FIXES
    assert stall_fixes(create_model("lenet5", num_classes=3)) == GENERIC_STALL_FIXES
    watch = StallWatch(3, window=1, patience=1, fixes=GENERIC_STALL_FIXES)
    message = watch.check(math.log(3), 1)
    assert "init_bias" not in message and "sigmoid" in message
