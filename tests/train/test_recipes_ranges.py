"""alexnet.train.recipes.RANGES: negative and absurd values of train's integer flags exit 2 naming the flag, before
any data is read or folder made (a seed past 2**63, a thread or process count, a side past 4096 px, a padding past
256 px); a --crop-size larger than the images is refused before a model is built for it."""
import pytest

from alexnet.cli.main import main

HUGE = "99999999999999999999999"
CASES = [("--seed", "-1"), ("--seed", str(2 ** 64)), ("--seed", HUGE), ("--epochs", "-3"), ("--batch-size", "0"),
         ("--crop-size", "100000000"), ("--crop-size", "-2"), ("--resize-to", "100000000"),
         ("--image-size", "100000000"), ("--image-size", "0"), ("--padding", "100000000"),
         ("--loader-threads", "100000000"), ("--loader-threads", "0"), ("--workers", "99999999999"),
         ("--workers", "-1"), ("--max-steps", "-1"), ("--eval-batch-size", "-5"), ("--train-subset", "-1"),
         ("--val-subset", "-1"), ("--diagnose", "-1"), ("--plateau-patience", "-1"), ("--plateau-max-drops", "-1")]


@pytest.mark.parametrize("flag,value", CASES, ids=[f"{f} {v[:12]}" for f, v in CASES])
def test_a_bad_integer_flag_exits_2_naming_it(tmp_path, capsys, flag, value):
    out = tmp_path / "run"
    assert main(["train", flag, value, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"alexnet train: error: {flag} must be") and err.count("\n") == 1, err
    assert not out.exists()


def test_a_crop_larger_than_the_images_is_refused_before_the_model(fashion, tmp_path, capsys):
    assert main(["train", "--data", fashion, "--train-subset", "256", "--crop-size", "29", "--out",
                 str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--crop-size 29 is larger than the 28x28 images" in err and "Traceback" not in err
