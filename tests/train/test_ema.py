"""alexnet.train.ema and ``--ema``: the average's formula and warm-up, what checkpoints hold, exact resume, and
validation measuring the averaged weights."""
import json

import pytest
import torch
from torch import nn

from alexnet.checkpoint import Checkpoint, load_checkpoint
from alexnet.inference.evaluate import evaluate_checkpoints
from alexnet.train.ema import WeightAverage
from alexnet.train.loop import train
from alexnet.train.recipes import resolve_config
from alexnet.train.run_folder import resume_config

SMALL = dict(train_subset=512, batch_size=64, epochs=2, quiet=True, ema=0.9)


def test_the_average_follows_the_formula_with_its_warm_up():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    average = WeightAverage(model, decay=0.9)
    expected = {k: v.clone() for k, v in average.state_dict().items()}
    for t in range(20):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()(torch.randn(8, 3))                    # BatchNorm's running statistics and batch count move
        d = min(0.9, (1 + t) / (10 + t))                    # the warm-up, then the decay itself
        assert average.current_decay() == pytest.approx(d)
        average.update()
        for key, value in model.state_dict().items():
            expected[key] = value.clone() if not value.is_floating_point() else d * expected[key] + (1 - d) * value
    for key, value in average.state_dict().items():
        assert torch.allclose(value, expected[key], atol=1e-6), key
    assert average.state_dict()["1.num_batches_tracked"] == 20          # integer buffers are copied
    assert not any(p.requires_grad for p in average.model.parameters()) and not average.model.training
    with pytest.raises(ValueError):
        WeightAverage(model, 1.0)


def test_checkpoints_hold_the_average_and_resume_is_exact(fashion, tmp_path):
    straight = train(resolve_config("quick", data=fashion, out=str(tmp_path / "a"), **SMALL))
    last = load_checkpoint(tmp_path / "a" / "last.pt")
    trained, average = last["ema"]["trained"], last["state_dict"]
    assert last["ema"]["updates"] == 2 * (512 // 64)
    assert trained.keys() == average.keys() and any(not torch.equal(trained[k], average[k]) for k in trained)
    best = load_checkpoint(tmp_path / "a" / "best.pt")
    assert best["ema"] == {} and best["optimizer"] == {}                # best.pt: only what eval and predict read
    # the per-epoch validation measured the averaged weights: eval of the checkpoint gives the same top-1
    report = evaluate_checkpoints([str(tmp_path / "a" / "last.pt")], split="val", progress=False)
    assert report["top1"] == pytest.approx(straight["history"][-1]["val_top1"], abs=1e-6)
    # stopped mid-epoch and resumed: the trained weights, the average and its count all continue exactly
    train(resolve_config("quick", data=fashion, out=str(tmp_path / "b"), max_steps=11, **SMALL))
    train(resume_config(tmp_path / "b", {"max_steps": 0}), resume=True)
    resumed = load_checkpoint(tmp_path / "b" / "last.pt")
    assert resumed["ema"]["updates"] == last["ema"]["updates"]
    for key in average:
        assert torch.equal(resumed["state_dict"][key], average[key]), key
        assert torch.equal(resumed["ema"]["trained"][key], trained[key]), key
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_top1"] for r in rows] == [r["val_top1"] for r in straight["history"]]
    assert Checkpoint.load(tmp_path / "b" / "last.pt").training["ema"]["updates"] == 16


def test_ema_is_a_fraction(fashion, tmp_path):
    from alexnet.errors import UsageError
    from alexnet.train.recipes import check_ranges
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(UsageError, match=r"--ema must be a finite number in \[0, 1\)"):
            check_ranges(resolve_config("quick", ema=bad))
