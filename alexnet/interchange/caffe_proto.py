"""Caffe's binary protobuf files (.caffemodel, .binaryproto), read and written without a protobuf dependency.

Only the fields that carry weights are decoded, by their numbers in BVLC Caffe's ``caffe.proto``:

- ``NetParameter``: name = 1, layer = 100 (``LayerParameter``), layers = 2 (the deprecated ``V1LayerParameter``
  of the 2014 model-zoo files such as bvlc_alexnet.caffemodel);
- ``LayerParameter``: name = 1, type = 2 (a string), blobs = 7;
- ``V1LayerParameter``: name = 4, type = 5 (an enum: CONVOLUTION = 4, INNER_PRODUCT = 14, ...), blobs = 6, and
  layer = 1, a nested ``V0LayerParameter`` (name = 1, type = 2 as "conv"/"innerproduct", blobs = 50);
- ``BlobProto``: shape = 7 (``BlobShape``: dim = 1, packed int64), data = 5 (packed float), double_data = 8,
  and the deprecated 4-D num, channels, height, width = 1, 2, 3, 4 that V1 files use instead of shape.

Every other field is skipped by its wire type, as protobuf itself does. A file that is not such a message
(truncated, or another format) raises ``ProtoError`` saying where decoding failed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

V1_TYPES = {1: "Accuracy", 4: "Convolution", 5: "Data", 6: "Dropout", 14: "InnerProduct", 15: "LRN",  # AlexNet's
            17: "Pooling", 18: "ReLU", 20: "Softmax", 21: "SoftmaxWithLoss"}      # V1LayerParameter.LayerType values
V0_TYPES = {"conv": "Convolution", "innerproduct": "InnerProduct"}
VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


class ProtoError(ValueError):
    """Bytes that are not the protobuf message expected; ``str(err)`` says what and where."""


@dataclass
class CaffeLayer:
    """One layer of a net: its name, type ("Convolution", "InnerProduct", ...) and its blobs (weights, bias)."""

    name: str
    type: str
    blobs: list[np.ndarray] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------- reading
def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtoError(f"truncated varint at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtoError(f"varint longer than 10 bytes at byte {pos}")


def fields(buf: bytes | memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of each field of one message; a varint's value is an int, any
    other value the field's bytes (no copy)."""
    buf = memoryview(buf)
    pos, end = 0, len(buf)
    while pos < end:
        start = pos
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtoError(f"field number 0 at byte {start}")
        if wire == VARINT:
            value, pos = _varint(buf, pos)
        elif wire in (FIXED64, FIXED32, LENGTH):
            if wire == LENGTH:
                size, pos = _varint(buf, pos)
            else:
                size = 8 if wire == FIXED64 else 4
            if pos + size > end:
                raise ProtoError(f"field {number} at byte {start} runs {pos + size - end} bytes past the end")
            value, pos = buf[pos:pos + size], pos + size
        else:
            raise ProtoError(f"unsupported wire type {wire} (field {number}) at byte {start}")
        yield number, wire, value


def _packed_varints(value: int | memoryview) -> list[int]:
    if isinstance(value, int):
        return [value]
    out, pos = [], 0
    while pos < len(value):
        number, pos = _varint(value, pos)
        out.append(number)
    return out


def _floats(value: int | memoryview, dtype: str) -> np.ndarray:
    if isinstance(value, int):
        raise ProtoError("a float field encoded as a varint")
    size = np.dtype(dtype).itemsize
    if len(value) % size:
        raise ProtoError(f"its data field holds {len(value)} bytes, not a whole number of {size}-byte floats")
    return np.frombuffer(value, dtype=dtype)


def parse_blob(buf: bytes | memoryview) -> np.ndarray:
    """A ``BlobProto`` as a float32 array of its shape (``shape``, else the legacy num/channels/height/width); the
    shape is checked against the data (in Python integers: no overflow) before anything is allocated for it."""
    shape, legacy, chunks = None, [0, 0, 0, 0], []
    for number, wire, value in fields(buf):
        if number == 7 and wire == LENGTH:
            shape = [dim for n, _, v in fields(value) if n == 1 for dim in _packed_varints(v)]
        elif number == 5:
            chunks.append(_floats(value, "<f4"))
        elif number == 8:
            chunks.append(_floats(value, "<f8").astype(np.float32))
        elif number in (1, 2, 3, 4) and wire == VARINT:
            legacy[number - 1] = value
    values = sum(chunk.size for chunk in chunks)
    if shape is None:
        shape = legacy if any(legacy) else [values]
    if math.prod(shape) != values:
        raise ProtoError(f"a blob of shape {tuple(shape)} holds {values} values")
    data = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)  # a copy
    return data.reshape(shape)


def _text(value: int | memoryview) -> str:
    if isinstance(value, int):
        raise ProtoError("a string field encoded as a varint")
    return bytes(value).decode("utf-8", errors="replace")


def _blobs(layer: CaffeLayer, raw: list[memoryview]) -> CaffeLayer:
    """``layer`` with its ``raw`` BlobProtos parsed; a bad one is a ProtoError naming the layer and the blob."""
    for index, value in enumerate(raw):
        try:
            layer.blobs.append(parse_blob(value))
        except ProtoError as err:
            raise ProtoError(f"layer {layer.name or '(unnamed)'!r}, blob {index} "
                             f"({'weights' if index == 0 else 'bias' if index == 1 else 'extra'}): {err}") from None
    return layer


def _layer(buf: memoryview) -> CaffeLayer:
    layer, raw = CaffeLayer("", ""), []
    for number, wire, value in fields(buf):
        if number == 1 and wire == LENGTH:
            layer.name = _text(value)
        elif number == 2 and wire == LENGTH:
            layer.type = _text(value)
        elif number == 7 and wire == LENGTH:
            raw.append(value)
    return _blobs(layer, raw)


def _v1_layer(buf: memoryview) -> CaffeLayer:
    layer, raw = CaffeLayer("", ""), []
    for number, wire, value in fields(buf):
        if number == 4 and wire == LENGTH:
            layer.name = _text(value)
        elif number == 5 and wire == VARINT:
            layer.type = V1_TYPES.get(value, f"V1 type {value}")
        elif number == 6 and wire == LENGTH:
            raw.append(value)
        elif number == 1 and wire == LENGTH:                 # a V0 layer nested inside (pre-2014 files)
            for n, w, v in fields(value):
                if n == 1 and w == LENGTH:
                    layer.name = _text(v)
                elif n == 2 and w == LENGTH:
                    layer.type = V0_TYPES.get(_text(v), _text(v))
                elif n == 50 and w == LENGTH:
                    raw.append(v)
    return _blobs(layer, raw)


def parse_net(buf: bytes | memoryview) -> tuple[str, list[CaffeLayer]]:
    """(net name, layers in file order) of a ``NetParameter`` (new ``layer`` and V1 ``layers`` alike)."""
    name, layers = "", []
    for number, wire, value in fields(buf):
        if number == 1 and wire == LENGTH:
            name = _text(value)
        elif number == 100 and wire == LENGTH:
            layers.append(_layer(value))
        elif number == 2 and wire == LENGTH:
            layers.append(_v1_layer(value))
    return name, layers


# ---------------------------------------------------------------------------------------------------- writing
def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes | int) -> bytes:
    key = encode_varint(number << 3 | wire)
    if wire == VARINT:
        return key + encode_varint(payload)
    return key + encode_varint(len(payload)) + payload


def blob_bytes(array: np.ndarray, *, legacy: bool = False) -> bytes:
    """A ``BlobProto``: packed float data with a ``BlobShape``, or (``legacy``, as V1 files) the 4-D
    num/channels/height/width with leading 1s."""
    array = np.ascontiguousarray(array, dtype="<f4")
    if legacy:
        if array.ndim > 4:
            raise ValueError(f"a legacy blob has at most 4 dimensions, got {array.shape}")
        dims = (1,) * (4 - array.ndim) + array.shape
        head = b"".join(_field(i + 1, VARINT, d) for i, d in enumerate(dims))
    else:
        head = _field(7, LENGTH, _field(1, LENGTH, b"".join(encode_varint(d) for d in array.shape)))
    return head + _field(5, LENGTH, array.tobytes())


def net_bytes(name: str, layers: list[CaffeLayer], *, v1: bool = False) -> bytes:
    """A ``NetParameter`` holding ``layers``: in the ``layer`` field (100), or (``v1``) the deprecated
    ``layers`` field (2) with enum types and legacy blob shapes, as the 2014 model-zoo files."""
    parts = [_field(1, LENGTH, name.encode())]
    v1_codes = {text: code for code, text in V1_TYPES.items()}
    for layer in layers:
        if v1:
            body = _field(4, LENGTH, layer.name.encode()) + _field(5, VARINT, v1_codes[layer.type])
            body += b"".join(_field(6, LENGTH, blob_bytes(b, legacy=True)) for b in layer.blobs)
            parts.append(_field(2, LENGTH, body))
        else:
            body = _field(1, LENGTH, layer.name.encode()) + _field(2, LENGTH, layer.type.encode())
            body += b"".join(_field(7, LENGTH, blob_bytes(b)) for b in layer.blobs)
            parts.append(_field(100, LENGTH, body))
    return b"".join(parts)
