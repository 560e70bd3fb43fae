"""alexnet.train.finetune, fine-tuning: --init copies weights (never optimizer state), --reset-head, --freeze,
--head-lr-mult, clear refusals, and exact resume of a fine-tuned run. Tiny generated idx data, a few steps."""
from __future__ import annotations

import json

import pytest
import torch

from alexnet.checkpoint import load_checkpoint
from alexnet.cli.main import main
from alexnet.train.recipes import resolve_config
from alexnet.train.run_folder import releasing, resume_config
from alexnet.train.loop import _sgd_step, setup, train
from data_fixtures import cifar10_folder, idx_folder

TINY = dict(batch_size=16, epochs=2, crop_size=28, padding=0, flip=False, quiet=True, seed=3)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A trained alexnet_small checkpoint (5 classes of 28x28 grey images) with momentum buffers in it."""
    root = tmp_path_factory.mktemp("finetune")
    data = idx_folder(root / "five", n_train=64, n_test=8, size=28, classes=5)
    train(resolve_config("quick", data=str(data), out=str(root / "src"), **dict(TINY, epochs=1)))
    ckpt = root / "src" / "last.pt"
    assert load_checkpoint(ckpt)["optimizer"]["state"], "the source must carry momentum for the test to mean much"
    return {"ckpt": str(ckpt), "five": str(data), "root": root,
            "three": str(idx_folder(root / "three", n_train=64, n_test=8, size=28, classes=3))}


def _setup(**overrides):
    cfg = resolve_config("quick", **dict(TINY, **overrides))
    with releasing(cfg.out):
        run = setup(cfg, resume=False, force=False)
        run.observers.close()
    return run


def _state(run_or_path):
    if isinstance(run_or_path, str):
        return load_checkpoint(run_or_path)["state_dict"]
    return {k: v.detach().cpu() for k, v in run_or_path.parts.raw_model.state_dict().items()}


def test_init_copies_every_weight_exactly_and_no_optimizer_state(source, tmp_path):
    run = _setup(data=source["five"], out=str(tmp_path / "ft"), init=source["ckpt"])
    theirs, ours = _state(source["ckpt"]), _state(run)
    assert theirs.keys() == ours.keys()
    for key in theirs:
        assert torch.equal(theirs[key], ours[key]), key
    assert run.parts.optimizer.state_dict()["state"] == {}          # momentum buffers start empty
    assert run.position.epoch == run.position.global_step == 0 and run.position.history == []
    assert json.loads((tmp_path / "ft" / "config.json").read_text())["init"] == source["ckpt"]   # the record


def test_plain_state_dicts_and_safetensors_load_too(source, tmp_path):
    from safetensors.torch import save_file
    theirs = _state(source["ckpt"])
    torch.save(theirs, tmp_path / "plain.pt")
    torch.save({"state_dict": {"module." + k: v for k, v in theirs.items()}}, tmp_path / "ddp.pt")
    save_file({k: v.contiguous() for k, v in theirs.items()}, str(tmp_path / "w.safetensors"))
    for name in ("plain.pt", "ddp.pt", "w.safetensors"):
        ours = _state(_setup(data=source["five"], out=str(tmp_path / name.split(".")[0]), init=str(tmp_path / name)))
        assert all(torch.equal(theirs[k], ours[k]) for k in theirs), name


def test_class_count_mismatch_names_the_layer_and_both_shapes(source, tmp_path, capsys):
    code = main(["train", "--data", source["three"], "--out", str(tmp_path / "r"), "--init", source["ckpt"],
                 "--batch-size", "16", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "classifier.fc8" in err and "(5, 512)" in err and "(3, 512)" in err   # the quick recipe's fc 512
    assert "--reset-head" in err and "Traceback" not in err


def test_reset_head_reinitialises_the_head_and_copies_the_rest(source, tmp_path):
    run = _setup(data=source["three"], out=str(tmp_path / "ft"), init=source["ckpt"], reset_head=True)
    fresh = _state(_setup(data=source["three"], out=str(tmp_path / "fresh")))      # same seed, no --init
    theirs, ours = _state(source["ckpt"]), _state(run)
    for key in ours:
        expected = fresh[key] if key.startswith("classifier.fc8.") else theirs[key]
        assert torch.equal(ours[key], expected), key
    # the same class count: --reset-head still starts the head afresh
    same = _state(_setup(data=source["five"], out=str(tmp_path / "same"), init=source["ckpt"], reset_head=True))
    assert not torch.equal(same["classifier.fc8.weight"], theirs["classifier.fc8.weight"])
    assert torch.equal(same["classifier.fc7.weight"], theirs["classifier.fc7.weight"])


@pytest.mark.parametrize("freeze,frozen_prefixes", [
    ("features", ("features.",)),
    ("fc6", ("features.", "classifier.fc6.")),
    ("classifier.fc7", ("features.", "classifier.fc6.", "classifier.fc7.")),
])
def test_freeze_keeps_frozen_weights_and_statistics_and_trains_the_rest(source, tmp_path, freeze, frozen_prefixes):
    out = tmp_path / "ft"
    train(resolve_config("quick", **dict(TINY, data=source["three"], out=str(out), init=source["ckpt"],
                                         reset_head=True, freeze=freeze, max_steps=3)))
    start, end = _state(source["ckpt"]), _state(str(out / "last.pt"))
    for key in end:
        if key.startswith("classifier.fc8."):
            continue
        if key.startswith(frozen_prefixes):    # BatchNorm's running statistics too: eval mode
            assert torch.equal(start[key], end[key]), key
        elif key.endswith("weight"):
            assert not torch.equal(start[key], end[key]), key
    opt = load_checkpoint(out / "last.pt")["optimizer"]
    n_params = sum(len(g["params"]) for g in opt["param_groups"])
    assert n_params == len([k for k in end if not k.startswith(frozen_prefixes) and "running" not in k
                            and "num_batches" not in k])


def test_frozen_layers_stay_in_eval_mode(source, tmp_path):
    run = _setup(data=source["five"], out=str(tmp_path / "ft"), init=source["ckpt"], freeze="fc6")
    run.parts.model.train()
    features, classifier = run.parts.raw_model.features, run.parts.raw_model.classifier
    assert not any(m.training for m in features.modules() if not list(m.children())) and not classifier.fc6.training
    assert classifier.drop6.training and classifier.fc8.weight.requires_grad     # after fc6: it trains
    assert not classifier.fc6.weight.requires_grad


@pytest.mark.parametrize("argv,named", [
    (["--freeze", "conv9"], "conv9"),
    (["--freeze", "fc8"], "nothing would learn"),
    (["--reset-head"], "--init"),
    (["--init", "{p}/missing.pt"], "missing.pt"),
    (["--head-lr-mult", "0"], "--head-lr-mult"),
])
def test_bad_finetune_flags_exit_2_before_loading_data(tmp_path, capsys, monkeypatch, argv, named):
    import alexnet.data
    monkeypatch.setattr(alexnet.data, "open_dataset", lambda *a, **k: pytest.fail("data was loaded"))
    code = main(["train", "--out", str(tmp_path / "r"), "--quiet"] + [a.replace("{p}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and named in err and "Traceback" not in err, err
    if argv[-1] == "conv9":
        assert "features" in err and "conv5" in err and "fc7" in err        # the names it could have been


def test_head_lr_mult_is_the_lr_of_the_heads_step(source, tmp_path):
    run = _setup(data=source["five"], out=str(tmp_path / "ft"), init=source["ckpt"], head_lr_mult=10.0,
                 bias_lr_mult=2.0, lr=0.01, momentum=0.0, weight_decay=0.0, nesterov=False, schedule="constant",
                 warmup_epochs=0.0, label_smoothing=0.0)
    model = run.parts.raw_model
    mult = {id(p): g["lr_mult"] for g in run.parts.optimizer.param_groups for p in g["params"]}
    fc7, fc8 = model.classifier.fc7, model.classifier.fc8
    assert (mult[id(fc7.weight)], mult[id(fc7.bias)], mult[id(fc8.weight)], mult[id(fc8.bias)]) == (1, 2, 10, 20)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    x, y = next(iter(run.parts.loader.iterate(0, 0)))
    _sgd_step(run, x, y, 0)
    for name, p in model.named_parameters():      # plain SGD: the step is exactly lr x mult x grad
        lr = 0.01 * mult[id(p)]
        torch.testing.assert_close(before[name] - p.detach(), lr * p.grad, rtol=1e-4, atol=1e-7, msg=name)


@pytest.mark.parametrize("case", ["model", "channels", "input_size"])
def test_another_model_channels_or_size_is_refused_with_a_sentence(source, tmp_path, capsys, case):
    argv = {"model": ["--data", source["five"], "--model", "lenet5"],
            "channels": ["--data", str(cifar10_folder(tmp_path / "cifar")), "--crop-size", "28"],
            "input_size": ["--data", source["five"], "--crop-size", "24"]}[case]
    code = main(["train", "--out", str(tmp_path / "r"), "--init", source["ckpt"], "--batch-size", "4", "--quiet"]
                + argv)
    err = capsys.readouterr().err
    expected = {"model": "--model alexnet_small", "channels": "1-channel", "input_size": "--crop-size 28"}[case]
    assert code == 2 and expected in err and "Traceback" not in err, err


def test_a_fine_tuned_run_resumes_exactly_without_reading_init_again(source, tmp_path, capsys):
    init = tmp_path / "init.pt"
    init.write_bytes(open(source["ckpt"], "rb").read())
    common = dict(TINY, data=source["three"], init=str(init), reset_head=True, freeze="features", head_lr_mult=10.0)
    train(resolve_config("quick", out=str(tmp_path / "a"), **common))
    train(resolve_config("quick", out=str(tmp_path / "b"), max_steps=5, **common))
    init.unlink()                                                # a resume reads last.pt, not --init
    assert main(["train", "--out", str(tmp_path / "b"), "--resume", "--init", str(tmp_path / "other.pt")]) == 2
    assert "--init" in capsys.readouterr().err                   # the run's own, not to be changed
    assert main(["train", "--out", str(tmp_path / "b"), "--resume", "--quiet"]) == 0
    a, b = _state(str(tmp_path / "a" / "last.pt")), _state(str(tmp_path / "b" / "last.pt"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resume_config(tmp_path / "b").init == str(init)


@pytest.mark.parametrize("damage, named", [
    ("nan", "features.conv1.weight (1 NaN)"), ("int32", "floating point"),
], ids=["non-finite", "int32"])
def test_init_refuses_non_finite_or_integer_weights_naming_each(tmp_path, capsys, damage, named):
    """Issue 23: a NaN (or an int32 state dict, truncated on loading) is refused before training starts."""
    from alexnet.models import create_model
    torch.manual_seed(0)
    state = create_model("alexnet_small", num_classes=3, in_channels=1).state_dict()
    if damage == "nan":
        state["features.conv1.weight"][0, 0, 0, 0] = float("nan")
    else:
        state = {key: value.to(torch.int32) for key, value in state.items()}
    torch.save(state, tmp_path / "init.pth")
    from alexnet.train.finetune import read_init
    with pytest.raises(Exception) as refused:
        read_init(str(tmp_path / "init.pth"))
    assert type(refused.value).__name__ == "UsageError" and named in str(refused.value)
    data = idx_folder(tmp_path / "three", n_train=16, n_test=4, size=28, classes=3)
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--init", str(tmp_path / "init.pth"),
                 "--epochs", "1", "--batch-size", "8", "--crop-size", "28", "--model", "alexnet_small"])
    err = capsys.readouterr().err
    assert code == 2 and named in err and "Traceback" not in err, err
