"""Issue 23: crafted or broken weight files given to ``alexnet convert`` exit 2 with one sentence naming what
is wrong (the layer, the tensor, the line), never a traceback, and write nothing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from alexnet.cli.main import main
from alexnet.interchange.caffe_proto import CaffeLayer, LENGTH, VARINT, blob_bytes, net_bytes
from alexnet.models import create_model

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


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
