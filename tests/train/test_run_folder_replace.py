"""alexnet.train.run_folder: --force replaces a run only once the new one is set up (a bad flag keeps the old
run's files), --resume names a lock's holder, --resume refuses another recipe and --force, --amp bf16 off CUDA."""
import fcntl
import json
import shutil

import pytest

from alexnet.checkpoint import load_checkpoint
from alexnet.cli.main import main

TINY = ["--data", "fashion-mnist", "--train-subset", "256", "--batch-size", "64", "--val-subset", "200", "--quiet"]
KEPT = ("last.pt", "best.pt", "metrics.jsonl", "curves.png", "config.json")


@pytest.fixture(scope="module")
def finished(fashion, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    return out


@pytest.fixture
def keep(finished, tmp_path):
    """A copy of a finished one-epoch run: (its folder, its files' bytes)."""
    out = tmp_path / "keep"
    shutil.copytree(finished, out)
    return out, {name: (out / name).read_bytes() for name in KEPT}


def _bad_inits(tmp_path, make_checkpoint):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07\x12\x07pytorch" + bytes(64))
    colour = tmp_path / "colour.pt"
    make_checkpoint(channels=3, classes=10).save(colour)
    return [["--init", str(onnx)], ["--init", str(colour)]]


def test_force_with_a_bad_flag_keeps_the_old_run(keep, tmp_path, capsys, make_checkpoint):
    out, before = keep
    bad = [["--data", str(tmp_path / "nonexistent")], ["--batch-size", "100000"], ["--crop-size", "8"],
           *_bad_inits(tmp_path, make_checkpoint)]
    for flags in bad:
        assert main(["train", *TINY, "--epochs", "1", "--out", str(out), "--force", *flags]) == 2, flags
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.count("\n") == 1, err
        assert {name: (out / name).read_bytes() for name in KEPT} == before, flags
        assert len(list(out.glob("events.out.tfevents.*"))) == 1, flags
    assert main(["train", *TINY, "--max-steps", "1", "--out", str(out), "--force"]) == 0    # a good one replaces it
    assert not (out / "best.pt").exists() and not (out / "metrics.jsonl").exists()
    assert load_checkpoint(out / "last.pt")["position"]["global_step"] == 1


def test_resume_while_another_process_holds_the_lock_names_it(tmp_path, capsys):
    for out in (tmp_path / "starting", tmp_path / "missing"):
        out.mkdir()
        holder = open(out / ".lock", "a+")               # another open file: flock refuses it as another process
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder.write("pid 4242 on host elsewhere\n")
        holder.flush()
        try:
            assert main(["train", "--out", str(out), "--resume"]) == 2
            err = capsys.readouterr().err
            assert "pid 4242 on host elsewhere" in err and "nothing to resume" not in err
        finally:
            holder.close()
    assert main(["train", "--out", str(tmp_path / "starting"), "--resume"]) == 2     # free: nothing to resume
    assert "nothing to resume" in capsys.readouterr().err


def test_resume_refuses_another_recipe_and_force(keep, capsys):
    out, before = keep
    assert main(["train", "--out", str(out), "--resume", "--recipe", "paper"]) == 2
    err = capsys.readouterr().err
    assert "--recipe" in err and "Traceback" not in err
    assert main(["train", "--out", str(out), "--resume", "--recipe", "quick", "--epochs", "1"]) == 0   # its own
    assert main(["train", "--out", str(out), "--resume", "--force"]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--force" in err and "Traceback" not in err
    assert (out / "last.pt").read_bytes() == before["last.pt"]


def test_amp_bf16_on_the_cpu_says_so_and_records_off(fashion, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--max-steps", "1", "--device", "cpu", "--amp", "bf16", "--out", str(out)]) == 0
    assert "--amp bf16" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["amp"] == "off"
    assert load_checkpoint(out / "last.pt")["config"]["amp"] == "off"
