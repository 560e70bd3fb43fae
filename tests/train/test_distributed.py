"""torchrun / DDP on CPU with gloo: sharded data gives the same weights as one big batch; failures end every rank."""
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from alexnet.checkpoint import load_checkpoint

# No BatchNorm (LRN instead), no dropout, no random flips or crops: the only difference between the runs is
# how the batch is split, so the weights must agree to float tolerance.
FLAGS = ["train", "--train-subset", "512", "--max-steps", "4", "--quiet", "--no-flip", "--padding", "0",
         "--model-kwargs", '{"norm": "lrn", "norm_layers": [1, 2], "dropout": 0.0}']


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1")


def _torchrun(nproc, *args, env=None, timeout=300, fault=None):
    target = [str(Path(__file__).resolve().parents[1] / "fault_driver.py"), fault] if fault else ["-m", "alexnet"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *target, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env or _env(), timeout=timeout)


def test_two_ranks_equal_one_process_with_double_batch(fashion, tmp_path):
    two = _torchrun(2, *FLAGS, "--data", fashion, "--batch-size", "64", "--out", str(tmp_path / "ddp"))
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "alexnet", *FLAGS, "--data", fashion, "--batch-size", "64",
                          "--out", str(tmp_path / "single")], capture_output=True, text=True, env=_env())
    assert one.returncode == 0, one.stderr[-3000:]
    a = load_checkpoint(tmp_path / "ddp" / "last.pt")
    b = load_checkpoint(tmp_path / "single" / "last.pt")
    assert a["position"]["global_step"] == b["position"]["global_step"] == 4
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(value, b["state_dict"][key], rtol=1e-4, atol=1e-5, msg=key)
    assert a["config"]["batch_size"] == 64


def test_a_failing_rank_ends_every_rank_quickly(fashion, tmp_path):
    start = time.time()
    done = _torchrun(2, *FLAGS, "--data", fashion, "--batch-size", "64", "--out", str(tmp_path / "fail"),
                     timeout=240, fault="raise,rank=1,step=2")
    assert done.returncode != 0
    assert "injected fault on rank 1" in done.stderr
    assert time.time() - start < 240


def test_only_rank_0_prints_the_run_summary(fashion, tmp_path):
    done = _torchrun(2, "train", "--data", fashion, "--train-subset", "256", "--batch-size", "64", "--val-subset",
                     "100", "--epochs", "1", "--quiet", "--out", str(tmp_path / "ddp"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("best val top-1") == 1 and done.stdout.count("run folder:") == 1, done.stdout
    assert "at epoch -1" not in done.stdout
