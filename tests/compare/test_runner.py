"""alexnet.compare.runner and .report, `alexnet compare`: two small models end to end on real Fashion-MNIST images (a
few hundred, as idx files), the input-size rules, the per-model means, and every bad usage refused with exit 2 before
any training."""
from __future__ import annotations

import contextlib
import io
import json
import math
import re

import numpy as np
import pytest
from PIL import Image

from alexnet.checkpoint import Checkpoint
from alexnet.cli.main import main
from alexnet.compare.runner import Budget, choose_input_size, common_input_size, parse_models, run_config, summarise
from alexnet.compare.report import markdown_table, plot_compare
from alexnet.errors import UsageError
from alexnet.models import create_model
from alexnet.models.summary import layer_table
from data_fixtures import write_idx

TWO = ["lenet5", "alexnet_small"]


@pytest.fixture(scope="module")
def few_fashion(tmp_path_factory, fashion):
    """600 training and 300 test images of the real Fashion-MNIST, as an idx folder."""
    from alexnet.data import open_dataset
    root = tmp_path_factory.mktemp("fashion-few")
    for split, prefix, n in (("train", "train", 600), ("test", "t10k", 300)):
        data = open_dataset(fashion, split, progress=False)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", np.asarray(data.images[:n])[..., 0])
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.asarray(data.labels[:n]))
    return root


@pytest.fixture(scope="module")
def compared(few_fashion, tmp_path_factory):
    """One `alexnet compare lenet5,alexnet_small` run: (exit code, stdout, its folder)."""
    out = tmp_path_factory.mktemp("compare") / "cmp"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["compare", "lenet5,alexnet_small", "--data", str(few_fashion), "--epochs", "1",
                     "--batch-size", "64", "--out", str(out), "--quiet"])
    return code, stdout.getvalue(), out


def test_compare_trains_scores_and_reports_both_models(compared):
    code, printed, out = compared
    assert code == 0
    result = json.loads((out / "compare.json").read_text())
    assert result["input_size"] == 28 and result["resized"] is False and result["classes"] == 10
    assert result["budget"]["epochs"] == 1 and result["budget"]["seeds"] == [0] and result["budget"]["batch_size"] == 64
    assert result["budget"]["lr"] is None                               # each family's own: LeNet 0.1, AlexNet 0.05
    assert result["budget"]["recipe"] == "each family's own"
    assert [(run["recipe"]["family"], run["recipe"]["lr"], run["recipe"]["batch_size"]) for run in result["runs"]] \
        == [("LeNet", 0.1, 64), ("AlexNet", 0.05, 64)]                  # --batch-size 64 wins over both recipes
    assert [row["recipe"]["family"] for row in result["models"]] == ["LeNet", "AlexNet"]
    assert result["command"].startswith("alexnet compare lenet5,alexnet_small ")
    assert [row["model"] for row in result["models"]] == TWO and len(result["runs"]) == 2
    assert result["test"] == {"split": "test", "views": "centre", "images": 300}
    for row, run in zip(result["models"], result["runs"]):
        kwargs = Checkpoint.load(out / "runs" / f"{row['model']}-seed0" / "best.pt").model.kwargs
        assert kwargs == ({"fc_width": 512, "dropout": 0.25} if row["model"] == "alexnet_small" else {"init": "xavier"})
        model = create_model(row["model"], num_classes=10, in_channels=1, input_size=28, **kwargs)
        assert row["params"] == run["params"] == sum(p.numel() for p in model.parameters())
        assert row["macs"] == sum(r.macs for r in layer_table(model, (1, 28, 28))) > 0
        assert 0 <= run["test_top1"] <= run["test_top5"] <= 1 and row["test_top1"] == run["test_top1"]
        assert row["test_top1_std"] is None                             # one seed: no spread
        speed = run["history"][0]["images_per_s"]
        assert run["train_images_per_s"] == pytest.approx(speed) and speed > 0
        assert run["wall_seconds"] == pytest.approx(run["train_seconds"] + run["eval_seconds"])
        assert (out / "runs" / f"{row['model']}-seed0" / "best.pt").exists()
    assert result["models"][0]["params"] < result["models"][1]["params"]       # LeNet-5 is the small one
    table = (out / "compare.md").read_text()
    for name in TWO:
        assert f"`{name}`" in table and f"`{name}`" in printed
    assert "input 28 px" in table and "300 test images" in table and "compare.json" in printed
    assert "each model with its family's recipe" in table and "LeNet: batch 64, lr 0.1, momentum 0.9" in table
    assert "- LeNet: d2l's LeNet" in table and "| trained with" in table


def test_the_reported_test_accuracy_is_the_checkpoints(compared):
    from alexnet.inference.evaluate import evaluate_checkpoints
    _, _, out = compared
    run = json.loads((out / "compare.json").read_text())["runs"][1]
    report = evaluate_checkpoints([run["out"] + "/best.pt"], split="test", ten_crop=False, progress=False)
    assert (report["top1"], report["top5"], report["n"]) == (run["test_top1"], run["test_top5"], 300)


def test_the_figure_is_drawn(compared):
    _, _, out = compared
    image = np.asarray(Image.open(out / "compare.png").convert("RGB"))
    assert image.shape[0] > 300 and image.shape[1] > 600
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50           # points, labels, axes: not a blank canvas
    assert not list(out.glob(".*tmp*"))                                  # atomic writes leave no temporary file


def test_input_size_is_the_smallest_every_model_takes():
    assert common_input_size(TWO, 28) == 28
    assert common_input_size(["lenet5", "vgg11_bn", "resnet18"], 28) == 32      # VGG/ResNet need >= 32
    assert common_input_size(["alexnet_2012", "lenet5"], 28) == 224             # the paper's net: 224 or 227
    assert common_input_size(["alexnet_2012"], 256) == 227                      # none above 256: the largest below
    assert choose_input_size(TWO, 28, 40) == 40
    with pytest.raises(UsageError, match=r"--input-size 28: alexnet_2012 needs 224 or 227 px.*--input-size 224"):
        choose_input_size(["alexnet_2012", "lenet5"], 28, 28)


def _config(model: str, budget: Budget, tmp_path, seed: int = 0, size: int = 28):
    return run_config(model, seed, data="fashion-mnist", data_root=None, input_size=size, native=28, out=tmp_path,
                      budget=budget, device="cpu", quiet=True)


def test_every_model_gets_its_familys_recipe_at_one_size(tmp_path):
    budget = Budget(epochs=3, seeds=1, train_subset=500)
    vgg = _config("vgg11_bn", budget, tmp_path, seed=1, size=32)
    assert (vgg.model, vgg.seed, vgg.epochs, vgg.train_subset) == ("vgg11_bn", 1, 3, 500)
    assert (vgg.crop_size, vgg.resize_to) == (32, 32)                    # 28 px images resized to 32
    assert vgg.out == str(tmp_path / "runs" / "vgg11_bn-seed1") and vgg.schedule == "onecycle"
    assert (vgg.lr, vgg.momentum, vgg.weight_decay, vgg.nesterov) == (0.01, 0.9, 5e-4, False)   # Simonyan & Zisserman
    resnet = _config("resnet18", budget, tmp_path, size=32)
    assert (resnet.lr, resnet.momentum, resnet.weight_decay) == (0.1, 0.9, 1e-4)                # He et al.'s CIFAR
    lenet = _config("lenet5", budget, tmp_path)
    assert (lenet.crop_size, lenet.resize_to, lenet.batch_size, lenet.lr, lenet.schedule) == (28, 0, 64, 0.1, "constant")
    assert (lenet.flip, lenet.padding, lenet.weight_decay, lenet.model_kwargs) == (False, 0, 0.0, {"init": "xavier"})
    quick = _config("alexnet_small", budget, tmp_path)
    assert (quick.lr, quick.batch_size, quick.schedule, quick.label_smoothing) == (0.05, 128, "onecycle", 0.1)
    assert _config("caffenet", budget, tmp_path, size=227).lr == 0.05                           # the AlexNet family


def test_same_recipe_and_the_budgets_flags_win_over_the_family(tmp_path):
    same = Budget(epochs=1, seeds=1, same_recipe=True)
    for model in ("lenet5", "resnet18", "vgg11_bn"):
        cfg = _config(model, same, tmp_path, size=32)
        assert (cfg.lr, cfg.batch_size, cfg.momentum, cfg.model_kwargs) == (0.05, 128, 0.9, {})   # the quick recipe
    flags = _config("lenet5", Budget(epochs=1, seeds=1, lr=0.02, batch_size=32), tmp_path)
    assert (flags.lr, flags.batch_size, flags.momentum) == (0.02, 32, 0.9)                      # the rest: LeNet's


def test_means_and_spread_over_seeds(tmp_path):
    runs = [{"model": m, "seed": s, "params": 10 ** (i + 4), "macs": 10 ** (i + 6), "test_top1": top1,
             "test_top5": 0.99, "train_images_per_s": 100.0 * (i + 1) + s, "train_seconds": 10.0, "eval_seconds": 1.0,
             "wall_seconds": 11.0} for i, m in enumerate(TWO) for s, top1 in enumerate((0.80, 0.90))]
    rows = summarise(runs, TWO)
    assert rows[0]["test_top1"] == pytest.approx(0.85) and rows[0]["test_top1_std"] == pytest.approx(math.sqrt(0.005))
    assert rows[1]["train_images_per_s"] == pytest.approx(200.5) and rows[1]["seeds"] == 2
    result = {"models": rows, "data": "fashion-mnist", "input_size": 28,
              "budget": {"epochs": 1, "train_images": 600, "seeds": [0, 1]}}
    assert "0.8500 ± 0.0707" in markdown_table(result)
    plot_compare(result, tmp_path / "two_seeds.png")
    assert Image.open(tmp_path / "two_seeds.png").size[0] > 600


def test_model_names_comma_or_space_separated():
    assert parse_models(["lenet5, vgg11_bn", "resnet18", "lenet5"]) == ["lenet5", "vgg11_bn", "resnet18"]


@pytest.mark.parametrize("argv, says", [
    (["lenet5,alexnet_big"], r"unknown model 'alexnet_big'; choose from: .*resnet18"),
    (["alexnet_2012,lenet5", "--input-size", "28"], r"alexnet_2012 needs 224 or 227 px; --input-size 224 suits"),
    (["lenet5,vgg11_bn", "--input-size", "28"], r"vgg11_bn needs >= 32 px; --input-size 32 suits all"),
    (["lenet5", "--input-size", "100000"], r"--input-size 100000 is too large"),
    (["lenet5", "--seeds", "0"], r"--seeds must be >= 1, got 0"),
    (["lenet5", "--epochs", "0"], r"--epochs must be >= 1, got 0"),
    (["lenet5", "--train-subset", "-5"], r"--train-subset must be an integer >= 0"),
    (["lenet5", "--lr", "nan"], r"--lr must be a finite number > 0"),
])
def test_bad_usage_exits_2_with_a_sentence(argv, says, capsys, tmp_path):
    assert main(["compare", *argv, "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alexnet compare: error: ")
    assert re.search(says, err), err
    assert not (tmp_path / "cmp").exists()                               # refused before anything was written


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["compare", "lenet5", "--out", str(tmp_path / "file")]) == 2
    assert "--out" in capsys.readouterr().err


def test_the_command_line_stays_light():
    """`alexnet --help` builds every parser, compare's included, without importing torch or matplotlib."""
    import subprocess
    import sys
    code = ("import sys; from alexnet.cli.main import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'matplotlib', 'alexnet.compare.runner', 'alexnet.data') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_a_diverging_model_loses_neither_the_others_nor_the_report(few_fashion, tmp_path, monkeypatch):
    import alexnet.compare.runner as compare_module
    from alexnet.compare.report import write_outputs
    from alexnet.errors import NonFiniteLoss

    def fake_run(cfg, recipe=None):
        if cfg.model == "lenet5":
            raise NonFiniteLoss("loss is nan at epoch 1 step 3")
        return {"model": cfg.model, "seed": cfg.seed, "out": cfg.out, "test_top1": 0.8, "test_top5": 0.99,
                "test_images": 300, "params": 1000, "macs": 5000, "train_images_per_s": 100.0,
                "train_seconds": 1.0, "eval_seconds": 1.0, "wall_seconds": 2.0}

    monkeypatch.setattr(compare_module, "run_one", fake_run)
    budget = Budget(epochs=1, seeds=1)
    result = compare_module.compare(TWO, data=str(few_fashion), out=str(tmp_path), budget=budget, quiet=True,
                                    log=lambda *a: None)
    rows = {row["model"]: row for row in result["models"]}
    assert rows["lenet5"]["failed"].startswith("diverged: loss is nan") and rows["alexnet_small"]["test_top1"] == 0.8
    paths = write_outputs(result, tmp_path)
    table = open(paths["md"]).read()
    assert re.search(r"`lenet5`\s*\|\s*diverged", table) and "0.8000" in table
    assert "LeNet: batch 64, lr 0.1" in table                              # a diverged row still says its recipe
    monkeypatch.setattr(compare_module, "run_one", lambda cfg, recipe=None: fake_run(cfg.__class__(**{**cfg.to_dict(), "model": "lenet5"})))
    with pytest.raises(NonFiniteLoss, match="every run diverged"):
        compare_module.compare(TWO, data=str(few_fashion), out=str(tmp_path), budget=budget, quiet=True,
                               log=lambda *a: None)
