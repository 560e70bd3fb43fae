"""alexnet.cli.main, every command's bad flag values: exit 2, a sentence naming the flag or file, no traceback.

Every case fails before any data is loaded or any model trained (each runs in well under a second).
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import torch

from alexnet.weights import FORMAT
from alexnet.cli.main import main
from alexnet.train.recipes import RANGES, TrainConfig


@pytest.fixture
def paths(tmp_path):
    (tmp_path / "file").write_text("a file, not a folder\n")
    (tmp_path / "text.pt").write_text("this is a text file, not a checkpoint\n")
    torch.save({"format": FORMAT, "model": {"name": "alexnet_small"}}, tmp_path / "partial.pt")
    (tmp_path / "dir").mkdir()
    (tmp_path / "notes.png").write_text("notes, not an image\n")
    return tmp_path


T = ["train", "--quiet", "--epochs", "1"]
# (argv with {p} for the test's folder, what the error must name)
CASES = [
    (T + ["--out", "{p}/file"], "--out"),
    (T + ["--out", "{p}/file/run"], "--out"),
    (["prepare", "fashion-mnist", "--out", "{p}/file"], "--out"),
    (["prepare", "fashion-mnist", "--out", "{p}/file/cache"], "--out"),
    (T + ["--out", "{p}/r", "--model-kwargs", '{"bogus": 1}'], "bogus"),
    (T + ["--out", "{p}/r", "--model-kwargs", '{"dropout": "x"}'], "--model-kwargs"),
    (T + ["--out", "{p}/r", "--model-kwargs", '{"norm": 5}'], "norm"),
    (T + ["--out", "{p}/r", "--model-kwargs", "[1]"], "--model-kwargs"),
    (T + ["--out", "{p}/r", "--device", "gpu"], "--device"),
    (["eval", "{p}/text.pt", "--device", "gpu"], "--device"),
    (["predict", "{p}/text.pt", "{p}/dir", "--device", "gpu"], "--device"),
    (["eval", "{p}/text.pt", "--json", "{p}/dir"], "--json"),
    (T + ["--label-smoothing", "2"], "--label-smoothing"),
    (T + ["--momentum", "-1"], "--momentum"),
    (T + ["--lr", "nan"], "--lr"),
    (T + ["--lr", "inf"], "--lr"),
    (T + ["--weight-decay", "nan"], "--weight-decay"),
    (T + ["--weight-decay=-inf"], "--weight-decay"),
    (T + ["--train-subset", "-5"], "--train-subset"),
    (T + ["--val-subset", "-5"], "--val-subset"),
    (T + ["--max-steps", "-1"], "--max-steps"),
    (T + ["--batch-size", "0"], "--batch-size"),
    (T + ["--eval-batch-size", "0"], "--eval-batch-size"),
    (T + ["--val-fraction", "1"], "--val-fraction"),
    (T + ["--crop-size", "-1"], "--crop-size"),
    (T + ["--pca-std", "nan"], "--pca-std"),
    (T + ["--loader-threads", "0"], "--loader-threads"),
    (T + ["--head-lr-mult", "0"], "--head-lr-mult"),
    (T + ["--out", "{p}/r", "--init", "{p}/missing.pt"], "--init"),
    (T + ["--out", "{p}/r", "--reset-head"], "--reset-head"),
    (T + ["--out", "{p}/r", "--freeze", "conv9"], "--freeze conv9"),
    (["eval", "{p}/text.pt", "--batch-size", "0"], "--batch-size"),
    (["predict", "{p}/text.pt", "{p}/dir", "--topk", "0"], "--topk"),
    (["predict", "{p}/text.pt", "{p}/dir", "--topk", "-1"], "--topk"),
    (["predict", "{p}/text.pt", "{p}/dir"], "text.pt"),
    (["eval", "{p}/text.pt"], "text.pt"),
    (["predict", "{p}/partial.pt", "{p}/dir"], "partial.pt"),
    (["eval", "{p}/partial.pt"], "partial.pt"),
    (["summary", "alexnet_small", "--input-size", "100000"], "--input-size"),
    (["eval", "{p}/text.pt", "--json", "{p}/file/report.json"], "--json"),
    (["eval", "{p}/text.pt", "--confusion", "{p}/dir"], "--confusion"),
    (["eval", "{p}/text.pt", "--confusion", "{p}/file/c.png"], "--confusion"),
    (["predict", "{p}/text.pt", "{p}/dir", "--json", "{p}/file/p.json"], "--json"),
    (["prepare", "fashion-mnist", "--out", "{p}/c", "--image-size", "0"], "--image-size"),
    (["prepare", "fashion-mnist", "--out", "{p}/c", "--quality", "101"], "--quality"),
    # issue 23, items 9, 10, 12, 28: every integer flag's absurd value, every output path that cannot be written
    (["show", "neighbors", "{p}/text.pt", "--queries", "100000"], "--queries"),
    (["show", "neighbors", "{p}/text.pt", "--queries", "0"], "--queries"),
    (["show", "neighbors", "{p}/text.pt", "--k", "100000"], "--k"),
    (["show", "neighbors", "{p}/text.pt", "--seed", "-1"], "--seed"),
    (["show", "neighbors", "{p}/text.pt", "--batch-size", "-1"], "--batch-size"),
    (["features", "{p}/text.pt", "--batch-size", "-1"], "--batch-size"),
    (["prepare", "fashion-mnist", "--out", "{p}/c", "--seed", "-1"], "--seed"),
    (["prepare", "fashion-mnist", "--out", "{p}/c", "--image-size", "100000"], "--image-size"),
    (["prepare", "fashion-mnist", "--out", "{p}/c", "--quality", "-1"], "--quality"),
    (["prepare", "fashion-mnist", "--out", "{p}/c", "--workers", "-1"], "--workers"),
    (["summary", "alexnet_small", "--in-channels", "-1"], "--in-channels"),
    (["summary", "alexnet_small", "--num-classes", "0"], "--num-classes"),
    (["summary", "alexnet_small", "--input-size", "-5"], "--input-size"),
    (["eval", "{p}/text.pt", "--batch-size", "-1"], "--batch-size"),
    (["compare", "lenet5", "--out", "{p}/cmp", "--epochs", "0"], "--epochs"),
    (["compare", "lenet5", "--out", "{p}/cmp", "--seeds", "-1"], "--seeds"),
    (["compare", "lenet5", "--out", "{p}/cmp", "--train-subset", "-5"], "--train-subset"),
    (["compare", "lenet5", "--out", "{p}/cmp", "--val-subset", "-5"], "--val-subset"),
    (["compare", "lenet5", "--out", "{p}/cmp", "--input-size", "-5"], "--input-size"),
    (["compare", "lenet5", "--out", "{p}/cmp", "--batch-size", "0"], "--batch-size"),
    (["study", "lrn", "--out", "{p}/st", "--seeds", "-1"], "--seeds"),
    (["study", "lrn", "--out", "{p}/st", "--epochs", "-1"], "--epochs"),
    (["eval", "{p}/text.pt", "--json", "/proc/no/such.json"], "--json"),
    (["eval", "{p}/text.pt", "--confusion", "/proc/no/c.png"], "--confusion"),
    (["eval", "{p}/text.pt", "--confusion", "{p}/c.jpg"], "--confusion"),        # written as PNG: named so
    (["eval", "{p}/text.pt", "--confusion", "{p}/notes.png"], "not an image"),
    (["predict", "{p}/text.pt", "{p}/dir", "--json", "/proc/no/p.json"], "--json"),
    (["features", "{p}/text.pt", "--out", "/proc/no/f.npz"], "--out"),
    (["prepare", "fashion-mnist", "--out", "/proc/no/cache"], "--out"),
    (["prepare", "fashion-mnist", "--out", "/proc"], "--out"),
    (["compare", "lenet5", "--out", "/proc/no/cmp"], "--out"),
    (["study", "lrn", "--out", "/proc/no/st"], "--out"),
    (["convert", "{p}/text.pt", "--out", "/proc/no/x.pt"], "--out"),
    (["export", "{p}/text.pt", "--format", "onnx", "--out", "/proc/no/x.onnx"], "--out"),
    (["show", "kernels", "{p}/text.pt", "--out", "/proc/no/k.png"], "--out"),
    (["show", "kernels", "{p}/text.pt", "--out", "{p}/k.txt"], "--out"),
    (["show", "kernels", "{p}/text.pt", "--out", "{p}/k"], "--out"),
    (["show", "kernels", "{p}/text.pt", "--out", "{p}/notes.png"], "not an image"),
    (["show", "neighbors", "{p}/text.pt", "--out", "{p}/n.txt"], "--out"),
    (["show", "neighbors", "{p}/text.pt", "--out", "{p}/notes.png"], "not an image"),
    # issue 23: serve's flags, refused before the checkpoint is read or a port taken
    (["serve", "{p}/text.pt", "--workers", "0"], "--workers"),
    (["serve", "{p}/text.pt", "--workers", "100000"], "--workers"),
    (["serve", "{p}/text.pt", "--max-bytes", "10XB"], "--max-bytes"),
    (["serve", "{p}/text.pt", "--max-bytes", "0"], "--max-bytes"),
    (["serve", "{p}/text.pt", "--max-bytes", "-1"], "--max-bytes"),
    (["serve", "{p}/text.pt", "--max-bytes", "100GB"], "--max-bytes"),
    (["serve", "{p}/text.pt", "--max-bytes", "9" * 400], "--max-bytes"),          # past a float: inf
    (["serve", "{p}/text.pt", "--max-pixels", "abc"], "--max-pixels"),
    (["serve", "{p}/text.pt", "--max-pixels", "100G"], "--max-pixels"),
    (["serve", "{p}/text.pt", "--max-pixels", "9" * 400 + "G"], "--max-pixels"),
    (["serve", "{p}/text.pt", "--read-timeout", "0"], "--read-timeout"),
    (["serve", "{p}/text.pt", "--read-timeout", "-1"], "--read-timeout"),
    (["serve", "{p}/text.pt", "--read-timeout", "nan"], "--read-timeout"),
    (["serve", "{p}/text.pt", "--read-timeout", "1e400"], "--read-timeout"),
    (["serve", "{p}/text.pt", "--port", "-5"], "--port"),
    (["serve", "{p}/text.pt", "--port", "70000"], "--port"),
    (["serve", "{p}/text.pt", "--batch-window-ms", "-1"], "--batch-window-ms"),
    (["serve", "{p}/text.pt", "--batch-window-ms", "nan"], "--batch-window-ms"),
    (["serve", "{p}/text.pt", "--max-batch", "0"], "--max-batch"),
    (["serve", "{p}/text.pt", "--max-batch", "1000000000"], "--max-batch"),
    (["serve", "{p}/text.pt", "--threads", "-1"], "--threads"),
    (["serve", "{p}/text.pt", "--threads", "100000"], "--threads"),
    (["serve", "{p}/text.pt", "--topk", "0"], "--topk"),
    (["serve", "{p}/text.pt", "--topk", "1000000"], "--topk"),
]


@pytest.mark.parametrize("argv,named", CASES, ids=[" ".join(x if len(x) <= 24 else x[:12] + "..." for x in a[:1] + a[-2:])
                                                   for a, _ in CASES])
def test_bad_flag_exits_2_naming_it(paths, capsys, argv, named):
    if any(a.startswith("/proc/") or a == "/proc" for a in argv) and not os.path.isdir("/proc/self"):
        pytest.skip("no /proc here")
    before = {p.name: p.read_bytes() for p in paths.iterdir() if p.is_file()}
    assert main([a.replace("{p}", str(paths)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err, err
    assert {p.name: p.read_bytes() for p in paths.iterdir() if p.is_file()} == before     # nothing overwritten


def test_every_numeric_train_field_has_a_range_rule():
    numeric = {f.name for f in dataclasses.fields(TrainConfig) if f.type in ("int", "float")}
    assert numeric <= set(RANGES), f"add a rule to alexnet.train.recipes.RANGES for {sorted(numeric - set(RANGES))}"


def test_bare_command_lists_the_commands_and_version(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert all(c in err for c in ("train", "eval", "predict", "prepare", "summary"))
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    from alexnet import __version__
    assert stop.value.code == 0 and __version__ in capsys.readouterr().out


def test_eval_checks_outputs_before_evaluating(tmp_path, capsys, monkeypatch, tiny_checkpoint):
    import alexnet.inference.evaluate
    ckpt = tiny_checkpoint(tmp_path / "best.pt")
    monkeypatch.setattr(alexnet.inference.evaluate, "evaluate_checkpoints", lambda *a, **k: pytest.fail("evaluated"))
    (tmp_path / "ro").write_text("")
    for flag, target in (("--json", tmp_path / "ro" / "r.json"), ("--confusion", tmp_path)):
        assert main(["eval", ckpt, flag, str(target)]) == 2
        assert flag in capsys.readouterr().err


def test_predict_json_lists_skipped_files_and_all_skipped_exits_2(tmp_path, capsys, tiny_checkpoint):
    from PIL import Image
    ckpt = tiny_checkpoint(tmp_path / "best.pt")
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(images / "good.png")
    (images / "bad.png").write_text("not a PNG")
    out = tmp_path / "p.json"
    assert main(["predict", ckpt, str(images), "--json", str(out), "--device", "cpu"]) == 0
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in json.loads(out.read_text())}
    assert len(rows["good.png"]["topk"]) == 3 and "not an image" in rows["bad.png"]["skipped"]
    (images / "good.png").unlink()
    assert main(["predict", ckpt, str(images), "--json", str(out), "--device", "cpu"]) == 2
    assert "skipped" in capsys.readouterr().err and "skipped" in json.loads(out.read_text())[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", ckpt, str(empty), "--device", "cpu"]) == 2
    assert "no image files" in capsys.readouterr().err


def test_checkpoint_that_is_text_or_incomplete_names_file_and_problem(tmp_path):
    from alexnet.checkpoint import load_checkpoint, load_model
    from alexnet.errors import UsageError
    (tmp_path / "notes.pt").write_text("hello\n")
    with pytest.raises(UsageError, match="notes.pt is not a checkpoint file"):
        load_checkpoint(tmp_path / "notes.pt")
    torch.save({"format": FORMAT, "model": {"name": "alexnet_small"}, "classes": ["a"]}, tmp_path / "part.pt")
    with pytest.raises(UsageError, match=r"part.pt .*missing.*config, data, state_dict, model.num_classes"):
        load_model(tmp_path / "part.pt")


def test_messages_name_the_real_flags(tmp_path, capsys):
    assert main(["summary", "alexnet_small", "--input-size", "2"]) == 2
    err = capsys.readouterr().err
    assert "--input-size" in err and "Traceback" not in err
    assert main(["prepare", "fashion-mnist", "--out", str(tmp_path / "c"), "--size", "0"]) == 2
    assert "--image-size" in capsys.readouterr().err


def test_unwritable_out_is_refused_before_loading_data(tmp_path, capsys, monkeypatch):
    import alexnet.util.checks
    monkeypatch.setattr(alexnet.util.checks.os, "access", lambda path, mode: False)   # as root, nothing is unwritable
    for argv in (["train", "--out", str(tmp_path)], ["prepare", "fashion-mnist", "--out", str(tmp_path / "c")],
                 ["eval", str(tmp_path / "x.pt"), "--json", str(tmp_path / "r.json")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "permission denied" in err and ("--out" in err or "--json" in err), err
