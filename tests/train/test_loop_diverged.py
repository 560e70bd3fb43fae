"""alexnet.train.loop: an epoch whose validation diverged (a non-finite loss) is neither last.pt nor best.pt: the run
stops (exit 1) with the last good checkpoint untouched, and metrics.jsonl stays JSON (null for NaN/inf)."""
import json
import math

import pytest

import alexnet.train.loop
from alexnet.checkpoint import load_checkpoint
from alexnet.cli.main import main
from alexnet.train.run_folder import append_metrics

TINY = ["--data", "fashion-mnist", "--train-subset", "256", "--batch-size", "64", "--val-subset", "100", "--quiet"]


def _diverging_at(monkeypatch, epoch: int):
    """Validation reports a NaN loss from epoch ``epoch`` on (as a run at --lr 1.5 does)."""
    real, calls = alexnet.train.loop.accuracy_report, []

    def report(*args, **kwargs):
        calls.append(1)
        result = real(*args, **kwargs)
        return dict(result, loss=math.nan, top1=0.99) if len(calls) >= epoch else result
    monkeypatch.setattr(alexnet.train.loop, "accuracy_report", report)


def test_a_diverged_epoch_is_never_saved_nor_best(fashion, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _diverging_at(monkeypatch, 2)
    assert main(["train", *TINY, "--epochs", "3", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "validation loss is nan after epoch 2" in err and "untouched" in err and "Traceback" not in err
    last, best = load_checkpoint(out / "last.pt"), load_checkpoint(out / "best.pt")
    assert last["position"]["epoch"] == 1 and best["best"]["epoch"] == 1 and best["best"]["val_top1"] < 0.99
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1]


def test_a_first_epoch_that_diverged_leaves_no_checkpoint(fashion, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _diverging_at(monkeypatch, 1)
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 1
    assert not (out / "last.pt").exists() and not (out / "best.pt").exists()


class _Writer:
    def add_scalar(self, *args):
        pass

    def flush(self):
        pass


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_metrics_lines_are_json_with_null_for_non_finite_numbers(tmp_path, bad):
    append_metrics(tmp_path, {"epoch": 1, "train_loss": bad, "val_top1": 0.5}, _Writer())
    line = (tmp_path / "metrics.jsonl").read_text()
    assert json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in {line}")) == \
        {"epoch": 1, "train_loss": None, "val_top1": 0.5}
