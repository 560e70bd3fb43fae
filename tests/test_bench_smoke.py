"""The input-pipeline benchmark runs end to end (tiny: a smoke test, not a measurement)."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_input_pipeline_bench_quick(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "input_pipeline.py"), "--quick", "--data-dir",
                          str(tmp_path)], capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    assert "machine:" in out and "torch" in out
    rates = [float(r) for r in re.findall(r"^\(\w\) .*?:\s+(\d+) img/s", out, re.M)]
    assert len(rates) == 2 and min(rates) > 0
    assert re.search(r"ratio \(b\)/\(a\): [\d.]+x", out) and re.search(r"one-off prepare .*: [\d.]+ s", out)
    assert len(list((tmp_path / "photos-48").rglob("*.jpg"))) == 48
