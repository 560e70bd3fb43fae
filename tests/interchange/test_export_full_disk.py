"""Issue 23: ``alexnet export`` onto a full disk says so in one sentence, for every format (safetensors raises
its own SafetensorError), keeps the earlier file, and says "nothing was written" once."""
from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch

from alexnet.cli.main import main
from alexnet.errors import NoSpace
from conftest import build_checkpoint

pytest.importorskip("safetensors")
from alexnet.interchange import export  # noqa: E402


@pytest.fixture
def ckpt_path(tmp_path) -> Path:
    torch.manual_seed(0)
    build_checkpoint().save(tmp_path / "best.pt")
    return tmp_path / "best.pt"


def test_safetensors_onto_a_full_disk_is_one_sentence(ckpt_path, capsys, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError
    out = ckpt_path.with_name("best.safetensors")
    out.write_bytes(b"the previous export")

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"part")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    monkeypatch.setattr(safetensors.torch, "save_file", full)
    assert main(["export", str(ckpt_path), "--format", "safetensors"]) == 1
    err = capsys.readouterr().err
    assert "no space left on device" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.count("nothing was written") == 1 and "earlier best.safetensors is kept" in err, err
    assert out.read_bytes() == b"the previous export"
    assert sorted(p.name for p in ckpt_path.parent.iterdir()) == ["best.pt", "best.safetensors"]


def test_an_export_error_says_nothing_was_written_once():
    full = NoSpace("no space left on device writing x.onnx; nothing was written")
    assert export.ExportError(str(full)).report().count("nothing was written") == 1
    assert export.ExportError("the ONNX file gives other logits").report().endswith("; nothing was written")


def test_any_other_safetensors_failure_is_an_export_error(ckpt_path, capsys, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    def broken(tensors, filename, metadata=None):
        raise SafetensorError("Error while serializing: something else")
    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    assert main(["export", str(ckpt_path), "--format", "safetensors"]) == 1
    err = capsys.readouterr().err
    assert "something else" in err and "Traceback" not in err and err.count("nothing was written") == 1, err
    assert errno.ENOSPC == 28
