"""Issue 23: crafted or broken weight files given to ``alexnet convert`` exit 2 with one sentence naming what
is wrong (the layer, the tensor, the line), never a traceback, and write nothing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from alexnet.cli.main import main
from alexnet.interchange.caffe_proto import CaffeLayer, LENGTH, VARINT, blob_bytes, encode_varint as varint, net_bytes
from alexnet.models import create_model

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")




def field(number: int, wire: int, payload) -> bytes:
    key = varint(number << 3 | wire)
    return key + (varint(payload) if wire == VARINT else varint(len(payload)) + payload)


def small_layers() -> list[CaffeLayer]:
    torch.manual_seed(0)
    state = create_model("alexnet_caffe", num_classes=10, fc_width=32).state_dict()
    return [CaffeLayer(name, "Convolution" if name.startswith("conv") else "InnerProduct",
                       [state[f"{'features' if name.startswith('conv') else 'classifier'}.{name}.{p}"].numpy()
                        for p in ("weight", "bias")]) for name in LAYERS]


def crafted_net(blob: bytes, layer: str = "conv3") -> bytes:
    """A net whose ``layer`` has ``blob`` (raw BlobProto bytes) as its weights."""
    parts = [field(1, LENGTH, b"AlexNet")]
    for one in small_layers():
        blobs = [blob if one.name == layer else blob_bytes(one.blobs[0]), blob_bytes(one.blobs[1])]
        body = field(1, LENGTH, one.name.encode()) + field(2, LENGTH, one.type.encode())
        parts.append(field(100, LENGTH, body + b"".join(field(7, LENGTH, b) for b in blobs)))
    return b"".join(parts)


def convert(tmp_path, capsys, data: bytes, *extra) -> str:
    (tmp_path / "w.caffemodel").write_bytes(data)
    code = main(["convert", str(tmp_path / "w.caffemodel"), "--out", str(tmp_path / "out.pt"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and not (tmp_path / "out.pt").exists(), err
    return err


@pytest.mark.parametrize("blob, said", [
    (field(7, LENGTH, field(1, LENGTH, varint(1 << 32) + varint(1 << 32))), "(4294967296, 4294967296)"),
    (field(7, LENGTH, field(1, LENGTH, varint(2))) + field(5, LENGTH, b"\0" * 7), "7 bytes"),
    (field(5, LENGTH, b"\0" * 8) + field(8, LENGTH, b"\0" * 12), "12 bytes"),
], ids=["2^32 x 2^32 without data", "7-byte float data", "12-byte double data"])
def test_a_crafted_blob_exits_2_naming_the_layer(tmp_path, capsys, blob, said):
    err = convert(tmp_path, capsys, crafted_net(blob))
    assert "conv3" in err and said in err, err


@pytest.fixture(scope="module")
def owt_state():
    torch.manual_seed(0)
    return create_model("alexnet_owt", num_classes=3).state_dict()


def save_pth(tmp_path, state) -> str:
    torch.save(state, tmp_path / "w.pth")
    return str(tmp_path / "w.pth")


def convert_pth(tmp_path, capsys, state, classes: str | None = "a\nb\nc\n") -> tuple[int, str]:
    (tmp_path / "classes.txt").write_bytes(classes.encode("utf-8") if isinstance(classes, str) else classes)
    code = main(["convert", save_pth(tmp_path, state), "--out", str(tmp_path / "out.pt"),
                 "--classes", str(tmp_path / "classes.txt")])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_non_finite_weights_are_refused_naming_each(tmp_path, capsys, owt_state):
    state = dict(owt_state)
    state["classifier.6.weight"] = state["classifier.6.weight"].clone()
    state["classifier.6.weight"][0, :2] = float("nan")
    state["features.0.bias"] = state["features.0.bias"].clone()
    state["features.0.bias"][1] = float("inf")
    code, err = convert_pth(tmp_path, capsys, state)
    assert code == 2 and "classifier.6.weight (2 NaN)" in err and "features.0.bias (1 infinite)" in err, err
    assert not (tmp_path / "out.pt").exists()


def test_integer_weights_are_refused(tmp_path, capsys, owt_state):
    state = {key: (value * 100).to(torch.int32) for key, value in owt_state.items()}
    code, err = convert_pth(tmp_path, capsys, state)
    assert code == 2 and "floating point" in err and "features.0.weight (int32)" in err, err
    assert not (tmp_path / "out.pt").exists()


@pytest.mark.parametrize("classes, said", [
    ("a\nb\na\n", "line 3"), ("a\nb\x00x\nc\n", "line 2"), ("a\tz\nb\nc\n", "line 1"),
], ids=["duplicate", "NUL", "tab"])
def test_bad_class_files_are_refused_naming_the_line(tmp_path, capsys, owt_state, classes, said):
    code, err = convert_pth(tmp_path, capsys, owt_state, classes)
    assert code == 2 and "--classes" in err and said in err, err


def test_a_byte_order_mark_is_not_part_of_class_0(tmp_path, capsys, owt_state):
    from alexnet.checkpoint import Checkpoint
    code, _ = convert_pth(tmp_path, capsys, owt_state, b"\xef\xbb\xbfcat\r\ndog\r\nemu\r\n")
    assert code == 0 and Checkpoint.load(tmp_path / "out.pt").classes == ["cat", "dog", "emu"]


def test_convert_onto_a_full_disk_is_one_sentence(tmp_path, capsys, owt_state, monkeypatch):
    """Issue 23 (8): the NoSpace sentence, no traceback, the earlier file kept (a regression test: it held)."""
    import errno
    import alexnet.checkpoint

    def full(obj, f):
        f.write(b"part")
        raise OSError(errno.ENOSPC, "No space left on device")
    (tmp_path / "out.pt").write_bytes(b"earlier")
    (tmp_path / "classes.txt").write_text("a\nb\nc\n")
    weights = save_pth(tmp_path, owt_state)
    monkeypatch.setattr(alexnet.checkpoint.torch, "save", full)
    code = main(["convert", weights, "--out", str(tmp_path / "out.pt"), "--classes", str(tmp_path / "classes.txt")])
    err = capsys.readouterr().err
    assert code == 1 and "no space left on device" in err and len(err.strip().splitlines()) == 1, err
    assert (tmp_path / "out.pt").read_bytes() == b"earlier"


def test_sigint_during_convert_save_is_exit_130_without_a_traceback(tmp_path, capsys, owt_state, monkeypatch):
    """Issue 23 (8): an interrupt in the middle of torch.save (its zip writer then fails with "unexpected pos", the
    interrupt as its context) is the interrupt: exit 130, nothing printed, the earlier file kept."""
    real_save = torch.save

    class Interrupting:
        def __init__(self, f):
            self.f, self.writes = f, 0

        def write(self, data):
            self.writes += 1
            if self.writes == 3:
                raise KeyboardInterrupt
            return self.f.write(data)

    (tmp_path / "out.pt").write_bytes(b"earlier")
    (tmp_path / "classes.txt").write_text("a\nb\nc\n")
    weights = save_pth(tmp_path, owt_state)
    monkeypatch.setattr(torch, "save", lambda obj, f: real_save(obj, Interrupting(f)))
    code = main(["convert", weights, "--out", str(tmp_path / "out.pt"), "--classes", str(tmp_path / "classes.txt")])
    captured = capsys.readouterr()
    assert code == 130 and "Traceback" not in captured.err + captured.out, captured.err
    assert (tmp_path / "out.pt").read_bytes() == b"earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.txt", "out.pt", "w.pth"]
