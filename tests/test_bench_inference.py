"""The inference benchmark runs end to end (--quick: a smoke test, not a measurement; about a minute on 2 cores)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_inference_bench_quick():
    pytest.importorskip("onnxruntime")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "inference.py"), "--quick"], capture_output=True,
                         text=True, timeout=600, env=env)     # this checkout's alexnet, whatever is installed
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    assert "machine:" in out and "load average before" in out and "load average after" in out
    rows = re.findall(r"^\((\w)\) (.+?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x\s+([\d.]+)\s+([\d.]+)x$", out, re.M)
    assert [r[0] for r in rows] == list("abcdbcd"), out
    assert all(float(r[2]) > 0 and float(r[5]) > 0 for r in rows)
    assert rows[0][4] == "1.00" and rows[0][6] == "1.00"            # the baseline against itself
    assert "Warning" not in run.stderr, run.stderr[-2000:]
