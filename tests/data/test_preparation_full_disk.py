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
    """Staging folders (.cache.tmp-*), locks (.cache.lock) and any other hidden entry left beside the cache."""
    return [name for name in os.listdir(folder) if "tmp" in name or name.startswith(".")]


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


def test_a_finished_prepare_leaves_only_the_cache(tmp_path):
    """Issue 23, item 13: the lock file stayed beside the cache, after a full disk and after success alike."""
    root = photo_folder(tmp_path / "photos", per_class=2, classes=("cat", "dog"))
    (tmp_path / "disk").mkdir()
    for _ in range(2):                                         # made, then reused
        assert main(["prepare", str(root), "--out", str(tmp_path / "disk" / "c"), "--size", "16",
                     "--workers", "0"]) == 0
        assert os.listdir(tmp_path / "disk") == ["c"]


def test_the_lock_still_excludes_once_its_holder_removes_it(tmp_path):
    import threading
    import time
    from alexnet.data import cache
    out, inside, overlaps = str(tmp_path / "c"), [], []

    def hold() -> None:
        with cache.locked(out):
            inside.append(1)
            overlaps.append(len(inside))
            time.sleep(0.05)
            inside.pop()
    threads = [threading.Thread(target=hold) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == [1, 1, 1, 1] and os.listdir(tmp_path) == []


def test_no_space_saving_the_jpeg_stores_progress_is_a_usage_error_too(tmp_path, monkeypatch, capsys):
    """The jpeg store's progress file, written whole by alexnet.util.atomic: its NoSpace exits 2 like the rest."""
    from alexnet.data.writing import JpegSplitWriter
    from alexnet.errors import NoSpace
    root = photo_folder(tmp_path / "photos", per_class=4, classes=("cat", "dog"))
    (tmp_path / "disk").mkdir()

    def full(self, sums, **changes):
        raise NoSpace("no space left on device writing .train_progress.npz; nothing was written")
    monkeypatch.setattr(JpegSplitWriter, "_save", full)
    out = tmp_path / "disk" / "cache"
    assert main(["prepare", str(root), "--out", str(out), "--size", "16", "--workers", "0", "--store", "jpeg"]) == 2
    err = capsys.readouterr().err
    assert "no space left on device" in err and "--out on another disk" in err and "Traceback" not in err
    assert os.listdir(tmp_path / "disk") == []
