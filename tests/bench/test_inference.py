"""bench/inference.py and bench/predict_folder.py, the inference benchmarks, run end to end (--quick: smoke tests,
not measurements; about a minute each on 2 cores)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))  # this checkout


@pytest.mark.slow
def test_inference_bench_quick(tmp_path):
    pytest.importorskip("onnxruntime")
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "inference.py"), "--quick", "--busy", "1", "--threads",
                          "1", "--json", str(tmp_path / "out" / "inference.json")], capture_output=True, text=True,
                         timeout=600, env=ENV)
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    assert "machine:" in out and "load average before" in out and "load average after" in out
    rows = re.findall(r"^\((\w)\) (.+?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x\s+([\d.]+)\s+([\d.]+)x$", out, re.M)
    assert [r[0] for r in rows] == list("abcdebcd"), out
    assert all(float(r[2]) > 0 and float(r[5]) > 0 for r in rows)
    assert rows[0][4] == "1.00" and rows[0][6] == "1.00"            # the baseline against itself
    assert "Warning" not in run.stderr, run.stderr[-2000:]
    summary = re.findall(r"^(alexnet_\w+) (b1|b8): fastest \((\w)\); --backend auto \((\w)\) is ([\d.]+)x the fastest "
                         r"other engine of the same network \((\w)\), ([\d.]+)x \(a\)$", out, re.M)
    assert [(m, r, d) for m, r, _, d, *_ in summary] == [
        ("alexnet_2012", "b1", "b"), ("alexnet_2012", "b8", "b"), ("alexnet_owt", "b1", "d"), ("alexnet_owt", "b8", "b")]
    assert all(other != "a" for m, *_, other, _ in summary if m == "alexnet_2012")   # (a) is another network
    record = json.loads((tmp_path / "out" / "inference.json").read_text())
    assert record["command"] == ("python bench/inference.py --quick --busy 1 --threads 1 --json "
                                 f"{tmp_path / 'out' / 'inference.json'}")
    assert (record["busy"], record["threads"]) == (1, 1)
    assert len(record["engines"]) == 8 and len(record["raw"]["b1_seconds"]["(a) torchvision alexnet, eager [baseline]"]) == 6
    assert set(record["summary"]) == {"alexnet_2012 b1", "alexnet_2012 bN", "alexnet_owt b1", "alexnet_owt bN"}
    assert all(s["auto_x_torchvision"] > 0 for s in record["summary"].values())


@pytest.mark.parametrize("bench", ["inference.py", "predict_folder.py"])
def test_benches_refuse_a_bad_json_path_before_measuring(tmp_path, bench):
    (tmp_path / "file").write_text("")
    data = ["--data-dir", str(tmp_path)] if bench == "predict_folder.py" else []
    run = subprocess.run([sys.executable, str(ROOT / "bench" / bench), "--quick", *data, "--json",
                          str(tmp_path / "file" / "x.json")], capture_output=True, text=True, timeout=120, env=ENV)
    assert run.returncode == 2 and "--json" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "photos-20").exists()            # refused before building anything


@pytest.mark.slow
def test_predict_folder_bench_quick(tmp_path):
    """20 JPEGs: the torchvision loop and alexnet predict (auto, torch, onnxruntime) agree on every top-5."""
    pytest.importorskip("onnxruntime")
    report = tmp_path / "predict_folder.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "predict_folder.py"), "--quick", "--data-dir",
                          str(tmp_path / "data"), "--json", str(report)], capture_output=True, text=True, timeout=600,
                         env=ENV)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "load average before" in run.stdout and re.search(r"ratio \(a\)/\(b\) seconds: [\d.]+x", run.stdout)
    record = json.loads(report.read_text())
    assert record["files"] == 20 and len(record["arms"]) == 5 and min(record["decode_img_s"].values()) > 0
    assert all(arm["top5_equal_to_a"] == 1.0 and arm["median_s"] > 0 for arm in record["arms"].values())
    assert "(auto -> torch)" in next(label for label in record["arms"] if label.startswith("(b)"))   # 20 < 256 images
    assert len(list((tmp_path / "data" / "photos-20").rglob("*.jpg"))) == 20
