"""`alexnet summary` and `alexnet models`: the table's numbers and the command line's exit codes."""
import subprocess
import sys

from alexnet.cli.main import main
from alexnet.models import create_model
from alexnet.models.summary import layer_table, summary_text


def test_paper_shapes_in_layer_table():
    rows = {r.name.split(".")[-1]: r for r in layer_table(create_model("alexnet_2012"), (3, 224, 224))}
    assert rows["conv1"].out_shape == (96, 55, 55)
    assert rows["pool1"].out_shape == (96, 27, 27)
    assert rows["conv2"].out_shape == (256, 27, 27)
    assert rows["pool2"].out_shape == (256, 13, 13)
    assert rows["conv3"].out_shape == (384, 13, 13)
    assert rows["conv4"].out_shape == (384, 13, 13)
    assert rows["conv5"].out_shape == (256, 13, 13)
    assert rows["pool5"].out_shape == (256, 6, 6)
    assert rows["conv1"].kind == "conv 11x11/4, 96, groups 1, pad 2"
    assert rows["conv2"].kind.startswith("conv 5x5/1, 256, groups 2")
    # PAPER.md: 724,406,816 multiply-adds per image; parameters sum to the model's.
    assert sum(r.macs for r in rows.values()) == 724_406_816
    assert sum(r.params for r in rows.values()) == 60_965_224


def test_227_input_gives_same_shapes_without_padding():
    rows = {r.name.split(".")[-1]: r for r in layer_table(create_model("alexnet_2012", input_size=227), (3, 227, 227))}
    assert rows["conv1"].out_shape == (96, 55, 55) and rows["conv1"].kind.endswith("groups 1")
    assert sum(r.macs for r in rows.values()) == 724_406_816


def test_summary_text_has_totals_and_notes():
    text = summary_text("alexnet_2012")
    assert "parameters: 60,965,224" in text and "724,406,816" in text
    assert "224" in text and "227" in text and "alpha" in text
    assert "one weird trick" in summary_text("alexnet_owt").lower()
    assert "pool then norm" in summary_text("caffenet")


def test_cli_models_and_summary_exit_zero(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "alexnet_2012" in out and "60,965,224" in out and "resnet18" in out
    assert main(["summary", "alexnet_2012", "--input-size", "227", "--num-classes", "10"]) == 0
    assert "96 x 55 x 55" in capsys.readouterr().out


def test_cli_bad_model_and_size_exit_2(capsys):
    assert main(["summary", "alexnet_9999"]) == 2
    err = capsys.readouterr().err
    assert "unknown model" in err and "alexnet_2012" in err and "vgg16" in err
    assert main(["summary", "alexnet_2012", "--input-size", "300"]) == 2
    assert "224 or 227" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    done = subprocess.run([sys.executable, "-m", "alexnet", "summary", "alexnet_small"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "alexnet_small" in done.stdout
