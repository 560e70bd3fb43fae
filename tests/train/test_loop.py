"""alexnet.train.loop, the main job end to end: train -> eval -> predict, exact resume, signals, NaN, refusals,
recipes."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet.checkpoint import load_checkpoint
from alexnet.cli.main import main
from alexnet.train.recipes import resolve_config
from alexnet.train.run_folder import resume_config
from alexnet.train.loop import train

SMALL = dict(train_subset=1024, batch_size=64, epochs=2, val_subset=1000, quiet=True)


def _weights(path):
    return load_checkpoint(path)["state_dict"]


def _assert_identical(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_end_to_end_cli_train_eval_predict(fashion, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--data", fashion, "--train-subset", "4096", "--val-subset", "2000", "--epochs", "2",
                 "--out", str(out), "--quiet"])
    assert code == 0
    for name in ("config.json", "metrics.jsonl", "last.pt", "best.pt", "curves.png"):
        assert (out / name).is_file(), name
    assert list(out.glob("events.out.tfevents.*")), "TensorBoard events"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "images_per_s", "seconds"} <= rows[0].keys()
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"] == "quick" and config["model"] == "alexnet_small"
    assert load_checkpoint(out / "best.pt")["config"] == config
    capsys.readouterr()

    assert main(["eval", str(out / "best.pt"), "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 10_000 and report["skipped"] == 0
    assert report["ten_crop"] is False              # the quick recipe evaluates the centre view
    assert 0.6 < report["top1"] <= report["top5"] <= 1.0      # chance is 0.1
    assert len(report["per_class"]) == 10 and (out / "confusion_test.png").is_file()

    samples = tmp_path / "samples"
    samples.mkdir()
    from alexnet.data import open_dataset
    from PIL import Image
    test = open_dataset(fashion, "test", progress=False)
    for i in range(4):
        Image.fromarray(np.asarray(test.images[i])[:, :, 0]).save(samples / f"{i}_{test.labels[i]}.png")
    (samples / "broken.png").write_bytes(b"not an image")
    assert main(["predict", str(out / "best.pt"), str(samples), "--topk", "3", "--json", "-"]) == 0
    captured = capsys.readouterr()
    predictions = json.loads(captured.out)
    skipped = [p for p in predictions if "skipped" in p]          # skipped files are listed with their reason
    assert [os.path.basename(p["path"]) for p in skipped] == ["broken.png"] and "broken.png" in captured.err
    predictions = [p for p in predictions if "skipped" not in p]
    assert len(predictions) == 4
    for p in predictions:
        assert len(p["topk"]) == 3 and p["topk"][0]["prob"] >= p["topk"][1]["prob"]
        assert p["topk"][0]["label"] in test.classes and 0 <= p["topk"][0]["index"] < 10
    correct = sum(p["topk"][0]["index"] == int(os.path.basename(p["path"]).split("_")[1][0]) for p in predictions)
    assert correct >= 2


@pytest.mark.parametrize("stop_at,clip", [(5, 0.0), (16, 0.0), (7, 0.5)])   # mid-epoch, the epoch boundary; clipped
def test_exact_resume_is_bit_identical(fashion, tmp_path, stop_at, clip):
    small = dict(SMALL, clip_grad_norm=clip)
    straight = train(resolve_config("quick", data=fashion, out=str(tmp_path / "a"), **small))
    assert straight["best"]["epoch"] >= 1
    assert train(resolve_config("quick", data=fashion, out=str(tmp_path / "b"), max_steps=stop_at, **small))["stopped_at"] == stop_at
    assert load_checkpoint(tmp_path / "b" / "last.pt")["position"]["global_step"] == stop_at
    train(resume_config(tmp_path / "b", {"max_steps": 0}), resume=True)
    _assert_identical(_weights(tmp_path / "a" / "last.pt"), _weights(tmp_path / "b" / "last.pt"))
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for key in a["optimizer"]["state"]:
        assert torch.equal(a["optimizer"]["state"][key]["momentum_buffer"], b["optimizer"]["state"][key]["momentum_buffer"])


def _cli(*args, env=None):
    return [sys.executable, "-m", "alexnet", *args]


def test_sigterm_saves_and_resume_matches_straight_run(fashion, tmp_path):
    flags = ["train", "--data", fashion, "--train-subset", "1024", "--batch-size", "64", "--epochs", "3", "--quiet"]
    proc = subprocess.Popen(_cli(*flags, "--out", str(tmp_path / "b")), stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "b" / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and metrics.read_text().strip()) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)                                    # somewhere inside epoch 2
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "--resume" in err
    position = load_checkpoint(tmp_path / "b" / "last.pt")["position"]
    assert position["epoch"] >= 1
    resumed = subprocess.run(_cli(*flags, "--out", str(tmp_path / "b"), "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    train(resolve_config("quick", data=fashion, out=str(tmp_path / "a"), **dict(SMALL, epochs=3)))
    _assert_identical(_weights(tmp_path / "a" / "last.pt"), _weights(tmp_path / "b" / "last.pt"))


def test_ddp_ranks_agree_on_stop_signals_every_n_steps_not_every_step(fashion, tmp_path, monkeypatch):
    """Under DDP each agreement is an all-reduce and a host sync: every STOP_CHECK_EVERY steps and at epoch ends."""
    from alexnet.train import distributed
    from alexnet.train import loop as train_module
    agreements = []
    monkeypatch.setattr(train_module, "STOP_CHECK_EVERY", 5)
    monkeypatch.setattr(distributed, "active", lambda: True)                 # one process posing as a rank
    monkeypatch.setattr(distributed, "sum_tensor", lambda t: t)
    monkeypatch.setattr(distributed, "any_flag", lambda flag, device: agreements.append(flag) or flag)
    train(resolve_config("quick", data=fashion, out=str(tmp_path / "run"), **dict(SMALL, epochs=2, train_subset=704)))
    # 704 / 64 = 11 steps an epoch, 22 in all: agreed at steps 5, 10, 11 (epoch end), 15, 20, 22 (epoch end)
    assert agreements == [False] * 6


def test_nan_loss_stops_and_keeps_last_good_checkpoint(fashion, tmp_path):
    out = tmp_path / "run"
    flags = ["train", "--data", fashion, "--train-subset", "1024", "--batch-size", "64", "--epochs", "3", "--quiet",
             "--out", str(out)]
    fault = [sys.executable, str(Path(__file__).resolve().parents[1] / "fault_driver.py"), "nan,step=20"]   # epoch 2 (16 steps each)
    done = subprocess.run(fault + flags, capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    assert "lower --lr" in done.stderr and "step" in done.stderr
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["position"] == {"epoch": 1, "step": 0, "global_step": 16}
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_out_folder_with_a_run_is_refused(fashion, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", fashion, "--train-subset", "256", "--batch-size", "64", "--max-steps", "1", "--quiet",
            "--out", str(out)]
    assert main(args) == 0
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--force" in err
    assert main(args + ["--force"]) == 0
    assert main(["train", "--out", str(tmp_path / "none"), "--resume"]) == 2


def test_bad_flags_exit_2(tmp_path, capsys):
    assert main(["train", "--model", "alexnet_9", "--out", str(tmp_path / "x")]) == 2
    assert "alexnet_2012" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "no-such-folder"), "--out", str(tmp_path / "y")]) == 2
    assert "no-such-folder" in capsys.readouterr().err


def test_d2l_recipe_starts_and_loss_falls(fashion, tmp_path):
    cfg = resolve_config("d2l", data=fashion, out=str(tmp_path / "d2l"), train_subset=64, val_subset=32,
                         batch_size=16, epochs=3, lr=0.05, quiet=True)
    assert cfg.model == "alexnet_d2l" and cfg.resize_to == 224
    result = train(cfg)
    losses = [row["train_loss"] for row in result["history"]]
    assert losses[-1] < losses[0]
    spec = load_checkpoint(tmp_path / "d2l" / "last.pt")["model"]
    assert spec["input_size"] == 224 and spec["in_channels"] == 1


def test_clip_grad_norm_scales_the_step_to_the_norm(fashion, tmp_path):
    """--clip-grad-norm C: a step of plain SGD moves the weights by lr x C (a gradient above C, scaled down to it),
    in the gradient's own direction. Two clip levels from the same start differ by lr x (C2 - C1) along it."""
    plain = dict(SMALL, max_steps=1, lr=1.0, momentum=0.0, nesterov=False, weight_decay=0.0, schedule="constant",
                 warmup_epochs=0.0, label_smoothing=0.0, ema=0.0)   # the trained weights
    finals = {}
    for clip in (0.0, 0.01, 0.02):
        train(resolve_config("quick", data=fashion, out=str(tmp_path / f"c{clip}"), clip_grad_norm=clip, **plain))
        w = _weights(tmp_path / f"c{clip}" / "last.pt")
        finals[clip] = torch.cat([w[k].flatten() for k in sorted(w) if w[k].is_floating_point()
                                  and "running" not in k])
    between = finals[0.01] - finals[0.02]
    assert torch.linalg.vector_norm(between).item() == pytest.approx(0.01, rel=1e-3)
    unclipped = finals[0.01] - finals[0.0]                 # lr x g x (1 - C/|g|): the same direction
    assert torch.nn.functional.cosine_similarity(between, unclipped, dim=0).item() == pytest.approx(1.0, abs=1e-4)
