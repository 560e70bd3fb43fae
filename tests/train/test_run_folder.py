"""alexnet.train.run_folder: the run folder is one run's: a lock, what --resume may change, max_steps per call, dead
runs, metrics after last.pt, a full disk, file modes, one-class data, absolute --data paths."""
import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image

from alexnet import checkpoint
from alexnet.checkpoint import load_checkpoint
from alexnet.cli.main import main

TINY = ["--data", "fashion-mnist", "--train-subset", "256", "--batch-size", "64", "--val-subset", "200", "--quiet"]


def _cli(*args):
    return [sys.executable, "-m", "alexnet", *args]


def test_second_run_on_the_same_out_is_refused_and_a_killed_run_blocks_nothing(fashion, tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(_cli("train", *TINY, "--train-subset", "4096", "--epochs", "50", "--out", str(out)),
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not ((out / ".lock").exists() and (out / ".lock").read_text().strip()) and time.time() < deadline:
            assert first.poll() is None, first.stderr.read()
            time.sleep(0.05)
        second = subprocess.run(_cli("train", *TINY, "--max-steps", "1", "--out", str(out)),
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert f"pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
        resumed = subprocess.run(_cli("train", *TINY, "--max-steps", "1", "--out", str(out), "--force"),
                                 capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 2 and f"pid {first.pid}" in resumed.stderr      # --force does not skip the lock
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    after = subprocess.run(_cli("train", *TINY, "--max-steps", "1", "--out", str(out), "--force"),
                           capture_output=True, text=True, timeout=120)
    assert after.returncode == 0, after.stderr


def test_resume_refuses_changing_the_model_or_data_and_names_the_flags(fashion, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", *TINY, "--max-steps", "1", "--out", out]) == 0
    capsys.readouterr()
    assert main(["train", "--out", out, "--resume", "--model", "alexnet_d2l", "--batch-size", "32"]) == 2
    err = capsys.readouterr().err
    assert "--model" in err and "--batch-size" in err and "--epochs" in err and "Traceback" not in err
    assert main(["train", "--out", out, "--resume", "--model-kwargs", '{"dropout": 0.1}']) == 2
    assert "--model-kwargs" in capsys.readouterr().err
    assert load_checkpoint(f"{out}/last.pt")["config"]["model"] == "alexnet_small"
    # the same values again, and what a resume may change, are fine
    assert main(["train", *TINY, "--out", out, "--resume", "--max-steps", "2", "--eval-batch-size", "100"]) == 0


def test_resume_after_max_steps_trains_to_the_end(fashion, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", *TINY, "--epochs", "2", "--max-steps", "2", "--out", out]) == 0
    assert load_checkpoint(f"{out}/last.pt")["position"]["global_step"] == 2
    assert main(["train", "--out", out, "--resume"]) == 0
    ckpt = load_checkpoint(f"{out}/last.pt")
    assert ckpt["position"]["epoch"] == 2 and ckpt["position"]["global_step"] == 8     # 256 / 64 = 4 an epoch
    assert [json.loads(line)["epoch"] for line in open(f"{out}/metrics.jsonl")] == [1, 2]


def test_a_run_that_died_before_its_first_checkpoint_does_not_block_its_folder(fashion, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}\n")          # what a run leaves when it dies in its first epoch
    (out / "metrics.jsonl").write_text("")
    assert main(["train", *TINY, "--max-steps", "1", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["model"] == "alexnet_small"


def test_metrics_are_written_after_last_pt(fashion, tmp_path, monkeypatch):
    from alexnet.train import loop as train_module
    order = []
    real_save, real_append = train_module.atomic_save, train_module.append_metrics
    monkeypatch.setattr(train_module, "atomic_save", lambda obj, path: (order.append(path.name), real_save(obj, path)))
    monkeypatch.setattr(train_module, "append_metrics", lambda *a: (order.append("metrics"), real_append(*a)))
    assert main(["train", *TINY, "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    assert order.index("last.pt") < order.index("metrics")


def test_full_disk_leaves_no_temp_file_and_the_last_checkpoint_resumes(fashion, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "2", "--max-steps", "4", "--out", str(out)]) == 0   # epoch 1 saved
    good = (out / "last.pt").read_bytes()
    real_save = torch.save

    def full(obj, f, *a, **k):
        f.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(checkpoint.torch, "save", full)
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume"]) == 1
    err = capsys.readouterr().err
    assert "no space left on device writing" in err and str(out / "last.pt") in err and "Traceback" not in err
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]
    assert (out / "last.pt").read_bytes() == good
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert main(["train", "--out", str(out), "--resume"]) == 0
    assert load_checkpoint(out / "last.pt")["position"]["epoch"] == 2
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_checkpoints_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        checkpoint.atomic_save({"x": torch.zeros(1)}, tmp_path / "a.pt")
        os.umask(0o077)
        checkpoint.atomic_save({"x": torch.zeros(1)}, tmp_path / "b.pt")
    finally:
        os.umask(old)
    assert (tmp_path / "a.pt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.pt").stat().st_mode & 0o777 == 0o600


def _folder(root, classes, n=70):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_one_class_data_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))
    data = _folder(tmp_path / "one", ["cat"])
    code = main(["train", "--data", str(data), "--image-size", "16", "--crop-size", "16", "--batch-size", "16",
                 "--max-steps", "1", "--quiet", "--out", str(tmp_path / "run")])
    assert code == 2
    assert "has only one class" in capsys.readouterr().err


def test_eval_of_a_run_trained_on_a_relative_path_works_from_elsewhere(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))
    _folder(tmp_path / "work" / "pics", ["cat", "dog"])
    monkeypatch.chdir(tmp_path / "work")
    assert main(["train", "--data", "pics", "--image-size", "16", "--crop-size", "16", "--batch-size", "16",
                 "--epochs", "1", "--no-ten-crop", "--quiet", "--out", "run"]) == 0
    assert json.loads((tmp_path / "work" / "run" / "config.json").read_text())["data"] == str(tmp_path / "work" / "pics")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["eval", "work/run/best.pt", "--split", "val", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] > 0


def test_resume_drops_metrics_lines_ahead_of_last_pt(fashion, tmp_path):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "2", "--max-steps", "4", "--out", str(out)]) == 0   # epoch 1 saved
    with open(out / "metrics.jsonl", "a") as f:          # an older version died between this line and last.pt
        f.write(json.dumps({"epoch": 2, "val_top1": 0.0}) + "\n")
    assert main(["train", "--out", str(out), "--resume"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["val_top1"] > 0
