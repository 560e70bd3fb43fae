"""The benchmarks in bench/ (input pipeline, transfer, towers, machine line, GPU feed) run end to end (tiny: smoke
tests, not measurements)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_input_pipeline_bench_quick(tmp_path):
    import json
    report = tmp_path / "pipeline.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "input_pipeline.py"), "--quick", "--data-dir",
                          str(tmp_path), "--json", str(report)], capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    assert "machine:" in out and "torch" in out
    rates = [float(r) for r in re.findall(r"^\(\w\) .*?:\s+(\d+) img/s", out, re.M)]
    assert len(rates) == 3 and min(rates) > 0
    assert re.search(r"ratio \(c\)/\(a\): [\d.]+x", out) and re.search(r"one-off prepare .*: raw [\d.]+ s", out)
    assert len(list((tmp_path / "photos-48").rglob("*.jpg"))) == 48
    rows = json.loads(report.read_text())["rows"]
    assert [r["pipeline"] for r in rows] == ["torchvision", "raw cache", "jpeg cache"]
    assert all(r["img_per_s"] > 0 and r["workers"] == 2 for r in rows)
    assert rows[2]["bytes_per_image"] < rows[1]["bytes_per_image"] / 4


def test_transfer_bench_runs_end_to_end(tmp_path, tiny_checkpoint):
    """bench/transfer.py on a tiny budget: the digits written and prepared, two arms, the JSON (not a measurement)."""
    import json
    import numpy as np
    import torch
    from alexnet.checkpoint import atomic_save
    from alexnet.train.recipes import resolve_config
    from data_fixtures import idx_folder
    source = tiny_checkpoint(tmp_path / "source.pt", classes=tuple("01234"))
    ckpt = torch.load(source, weights_only=True)       # its own data, for the source's test score
    own = idx_folder(tmp_path / "own", n_train=10, n_test=10, size=28, classes=5)
    ckpt["config"] = resolve_config("quick", data=str(own)).to_dict()
    atomic_save(ckpt, source)
    report = tmp_path / "transfer.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "transfer.py"), "--pretrained", source, "--seeds", "1",
                          "--steps", "2", "--arms", "scratch,probe", "--threads", "1", "--work", str(tmp_path / "w"),
                          "--json", str(report)], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")])))
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(report.read_text())
    assert result["target"]["sizes"] == {"test": 400, "val": 100, "train-all": 1297, "train-100": 100}
    assert [(r["arm"], r["labels"], r["steps"]) for r in result["runs"]] == [
        ("scratch", "100", 3), ("probe", "100", 3), ("scratch", "all", 40), ("probe", "all", 40)]
    assert all(0 <= r["test_top1"] <= 1 for r in result["runs"]) and "--freeze fc7" in result["runs"][1]["command"]
    from PIL import Image
    digit = np.asarray(Image.open(next((tmp_path / "w" / "digits-100" / "train" / "0").glob("*.png"))))
    assert digit.shape == (28, 28) and digit.dtype == np.uint8 and digit.max() > 200


@pytest.mark.slow   # 16 s: the towers themselves are tested in tests/models/test_towers.py
def test_towers_bench_on_the_cpu(tmp_path):
    """bench/towers.py --device cpu: the towers' output and first-step gradients against the grouped model's
    (bit-equal output on the CPU; gradients to the last bits), the ratio, the JSON; without CUDA, exit 1 says so."""
    import json
    import torch
    if not torch.cuda.is_available():
        refused = subprocess.run([sys.executable, str(ROOT / "bench" / "towers.py")], capture_output=True, text=True,
                                 timeout=120)
        assert refused.returncode == 1 and "CUDA is not available" in refused.stderr
    report = tmp_path / "towers.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "towers.py"), "--device", "cpu", "--batch-size", "4",
                          "--steps", "1", "--rounds", "2", "--warmup", "0", "--json", str(report)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads(report.read_text())["results"][0]["rows"]
    assert [row["model"] for row in rows] == ["(a) grouped, cpu", "(b) towers cpu, cpu"]
    assert rows[1]["output_rel_diff"] < 1e-5 and rows[1]["first_step_grad_rel_diff"] < 1e-4
    assert rows[1]["img_per_s"] > 0 and re.search(r"\(b\) towers cpu, cpu\s+[\d.]+\s+[\d.]+x", run.stdout)


def test_machine_line_names_the_gpus(monkeypatch):
    import torch
    from alexnet.util.machine import machine
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "NVIDIA H200")
    assert machine().endswith(f", 2 x NVIDIA H200 (CUDA {torch.version.cuda})")


@pytest.mark.slow   # 12 s: a GPU benchmark, smoke-tested on the CPU with make test-slow
def test_gpu_feed_bench_quick_runs_on_the_cpu(tmp_path):
    """bench/gpu_feed.py on a tiny budget, on the CPU (rows "on device" and "cpu decode"): runs, writes its JSON."""
    import json
    report = tmp_path / "feed.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_feed.py"), "--quick", "--device", "cpu",
                          "--data-dir", str(tmp_path), "--json", str(report)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads(report.read_text())["rows"]
    assert [r["feed"] for r in rows] == ["on device", "cpu decode"] and all(r["img_per_s"] > 0 for r in rows)
    assert rows[0]["vs_on_device"] == 1.0 and "cpu decode / on device:" in run.stdout


def test_test_time_views_bench_gives_three_accuracies(tmp_path, tiny_run):
    """bench/test_time_views.py on an untrained checkpoint and its idx data: the three views' top-1 printed, each
    the accuracy of that many averaged views (the centre column equals alexnet eval's centre view)."""
    from alexnet.inference.evaluate import evaluate_checkpoints
    best, _ = tiny_run(tmp_path)
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "test_time_views.py"), str(best), "--split", "test"],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    found = re.search(r"\((\d+) images\): centre ([\d.]+)  \+ mirror ([\d.]+)  \+ mirror \+ 4 shifts ([\d.]+)", run.stdout)
    assert found, run.stdout
    report = evaluate_checkpoints([str(best)], split="test", ten_crop=False, flip_view=False, progress=False)
    assert int(found.group(1)) == report["n"] and float(found.group(2)) == round(report["top1"], 4)
    assert all(0 <= float(found.group(i)) <= 1 for i in (3, 4))
