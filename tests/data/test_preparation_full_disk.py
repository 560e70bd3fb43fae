"""alexnet.data.preparation (`alexnet prepare`) on a full disk: a UsageError (exit 2) naming the file, no staging
folder left."""
from __future__ import annotations

import errno
import os
import subprocess

import pytest

from alexnet.cli.main import main
from data_fixtures import photo_folder


def _leftovers(folder) -> list[str]:
    return [name for name in os.listdir(folder) if "tmp" in name]


def test_no_space_from_preallocation_is_a_usage_error_and_leaves_no_staging_folder(tmp_path, monkeypatch, capsys):
    root = photo_folder(tmp_path / "photos", per_class=4, classes=("cat", "dog"))
    (tmp_path / "disk").mkdir()

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "posix_fallocate", full)
    out = tmp_path / "disk" / "cache"
    assert main(["prepare", str(root), "--out", str(out), "--size", "64", "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "no space left on device while writing" in err and "train_images.npy: 0 MB needed" in err
    assert "Traceback" not in err
    assert not out.exists() and _leftovers(tmp_path / "disk") == []


def test_no_space_from_a_later_write_is_a_usage_error_too(tmp_path, monkeypatch, capsys):
    root = photo_folder(tmp_path / "photos", per_class=4, classes=("cat", "dog"))
    from alexnet.data import cache

    def full(folder, fields, stats):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), os.path.join(folder, cache.CACHE_METADATA))
    monkeypatch.setattr(cache, "write_metadata", full)
    assert main(["prepare", str(root), "--out", str(tmp_path / "c"), "--size", "16", "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "no space left on device while writing" in err and "alexnet-cache.json" in err
    assert _leftovers(tmp_path) == [] and not (tmp_path / "c").exists()


@pytest.fixture
def small_tmpfs(tmp_path):
    disk = tmp_path / "tmpfs"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_prepare_onto_a_real_full_tmpfs_exits_2_instead_of_sigbus(tmp_path, small_tmpfs):
    root = photo_folder(tmp_path / "photos", per_class=20, classes=("cat", "dog"))   # 40 x 256x256x3 = 7.9 MB
    out = small_tmpfs / "cache"
    run = subprocess.run([os.sys.executable, "-m", "alexnet", "prepare", str(root), "--out", str(out),
                          "--workers", "0"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(
                             [os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                              os.environ.get("PYTHONPATH", "")])})
    assert run.returncode == 2, run.stderr
    assert "no space left on device while writing" in run.stderr and "Traceback" not in run.stderr
    assert _leftovers(small_tmpfs) == [] and not out.exists()
