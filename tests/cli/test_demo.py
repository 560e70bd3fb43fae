"""`alexnet demo` (what `make demo` runs): train the quick recipe, then eval and predict; run again: it continues.
A bare `alexnet train` only trains."""
import pytest

from alexnet.train import recipes
from alexnet.cli.main import main


@pytest.fixture
def small_quick(fashion, tmp_path, monkeypatch):
    """The quick recipe cut to one short epoch, its run folder under tmp_path."""
    quick = dict(recipes.RECIPES["quick"], out=str(tmp_path / "quick"), epochs=1, train_subset=512, val_subset=256,
                 quiet=True)
    monkeypatch.setitem(recipes.RECIPES, "quick", quick)


def test_demo_trains_evaluates_predicts_and_continues(small_quick, tmp_path, capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "best val top-1" in out and "$ alexnet eval" in out and "top-1 accuracy" in out
    assert "$ alexnet predict" in out and (tmp_path / "quick" / "samples").is_dir()
    assert (tmp_path / "quick" / "confusion_test.png").is_file()
    assert main(["demo"]) == 0                       # again: continues (here: re-reports) the run
    assert "holds an earlier demo run" in capsys.readouterr().out


def test_bare_train_only_trains(small_quick, capsys):
    assert main(["train"]) == 0
    out = capsys.readouterr().out
    assert "best val top-1" in out and "alexnet eval" not in out
    assert main(["train"]) == 2                      # a second bare run does not silently continue the first
