"""alexnet.data.preparation (`alexnet prepare`) interrupted: no staging folder left (the jpeg store: its progress
kept, issue 21), exit 143/130, no decoder outlives it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from data_fixtures import save

REPO = str(Path(__file__).resolve().parents[2])
# python -m alexnet, with each decode slowed down (inherited by the forked workers) so the run lasts seconds
SLOW_PREPARE = ("import sys, time, alexnet.data.parallel as p; d = p.decode_image\n"
                "def slow(*a, **k):\n    time.sleep(0.03)\n    return d(*a, **k)\n"
                "p.decode_image = slow\nfrom alexnet.cli.main import main\nsys.exit(main(sys.argv[1:]))")


def _jpegs(root: Path, n: int = 200) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        save(root / ("cat", "dog")[i % 2] / f"{i}.jpg", rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    return root


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("\nState:\t")[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _assert_dead(workers: list[int], within_s: float = 5.0) -> None:
    """Every decoder has ended within ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while any(map(_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(_alive, workers))


def _start(tmp_path: Path, command: str = "prepare", store: str = "raw"):
    """`alexnet prepare` (or `alexnet train`, which prepares the folder implicitly) on 200 slow JPEGs, once
    its staging folder exists and its decoders run; returns the process and the decoders' pids."""
    root = _jpegs(tmp_path / "photos")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]),
           "ALEXNET_CACHE": str(tmp_path)}
    args = (["prepare", str(root), "--out", str(tmp_path / "cache"), "--size", "16", "--store", store]
            if command == "prepare" else
            ["train", "--data", str(root), "--out", str(tmp_path / "run"), "--image-size", "16", "--crop-size", "16"])
    proc = subprocess.Popen([sys.executable, "-c", SLOW_PREPARE, *args, "--workers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:   # staging folder there, workers started
        if any(".tmp-" in n or ".partial-" in n for _, dirs, _ in os.walk(tmp_path) for n in dirs) \
                and len(_children(proc.pid)) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()
    time.sleep(0.2)
    return proc, _children(proc.pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("signum, code, store", [(signal.SIGTERM, 143, "raw"), (signal.SIGINT, 130, "raw"),
                                                 (signal.SIGTERM, 143, "jpeg")])
def test_interrupted_prepare_removes_its_staging_folder_and_its_workers(tmp_path, signum, code, store):
    proc, workers = _start(tmp_path, store=store)
    assert workers
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)             # the pipes reach EOF: no worker holds them open
    assert proc.returncode == code, err.decode()
    assert b"Traceback" not in err
    assert [n for n in os.listdir(tmp_path) if "tmp" in n] == [] and not (tmp_path / "cache").exists()
    _assert_dead(workers)
    partial = [n for n in os.listdir(tmp_path) if ".partial-" in n]
    assert len(partial) == (store == "jpeg")           # the jpeg store keeps its progress for the next run
    if store == "jpeg":
        assert b"the same command continues from there" in err
        from alexnet.data import prepare
        assert prepare(str(tmp_path / "photos"), str(tmp_path / "cache"), size=16, store="jpeg",
                       progress=False).counts == {"train": 200}
        assert [n for n in os.listdir(tmp_path) if ".partial-" in n] == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and uses prctl")
def test_decoders_die_when_prepare_is_killed_outright(tmp_path):
    proc, workers = _start(tmp_path)
    proc.kill()                                          # no cleanup can run; the workers must still end
    proc.communicate(timeout=30)
    _assert_dead(workers)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_during_the_implicit_prepare_of_train_cleans_up_too(tmp_path):
    proc, workers = _start(tmp_path, "train")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and b"Traceback" not in err, err.decode()
    assert [n for _, dirs, _ in os.walk(tmp_path) for n in dirs if ".tmp-" in n] == []
    _assert_dead(workers)
