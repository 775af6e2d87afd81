"""An ONNX model's bytes with its large initializers' data spliced in, not copied by protobuf.

A host region's model carries its weights: BERT-base's first region holds the 94 MB word
embedding table. Put into the TensorProto, those bytes are copied three times (the array's
`tobytes`, protobuf's `raw_data` field, `SerializeToString`); 0.3 s CPU of every BERT-base
compile. Instead `export_ops` gives each large initializer a placeholder `raw_data`
(`placeholder`) and collects the arrays; `serialize_spliced` serializes that small model and
rebuilds the bytes along model.graph (7) -> graph.initializer (5) -> tensor.raw_data (9),
each placeholder replaced by its array's bytes and the lengths around it re-encoded: one copy,
the final join. The result is byte for byte `SerializeToString(deterministic=True)` of the
model holding the arrays (deterministic serialization writes fields in number order, and only
the raw_data values and their enclosing lengths differ; test_raw_data_splice.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from esact_cc.frontend.onnx_builders import little_endian
from esact_cc.frontend.onnx_core import ModelProto
from esact_cc.frontend.onnx_file_reader import _encode_varint, _fields

SPLICE_BYTES = 1 << 20
"""Initializers from this size on are spliced; smaller ones go through protobuf as before."""
_MARKER = b"\x00esact-cc raw_data splice\x00"
_PATH = (7, 5, 9)  # ModelProto.graph, GraphProto.initializer, TensorProto.raw_data
_LENGTH_DELIMITED = 2


def placeholder(index: int) -> bytes:
    """The raw_data standing for the `index`-th spliced array."""
    return _MARKER + index.to_bytes(8, "little")


def little_endian_bytes(array: np.ndarray) -> memoryview:
    """The array's bytes as ONNX raw_data holds them (onnx_builders.tobytes_little_endian),
    without copying a C-contiguous little-endian array."""
    return memoryview(np.ascontiguousarray(little_endian(array))).cast("B")


def serialize_spliced(model: ModelProto, arrays: Sequence[np.ndarray]) -> bytes:
    """`model`'s deterministic serialization with placeholder(i) replaced by arrays[i]."""
    data = memoryview(model.SerializeToString(deterministic=True))
    spliced = [little_endian_bytes(a) for a in arrays]
    parts: list[bytes | memoryview] = []
    _rebuild(data, 0, len(data), 0, spliced, parts)
    found = sum(1 for part in parts if any(part is s for s in spliced))
    if found != len(spliced):
        raise AssertionError(f"raw_data splice: {found} of {len(spliced)} placeholders found")
    return b"".join(parts)


def _rebuild(data: memoryview, start: int, end: int, depth: int,
             spliced: list[memoryview], parts: list[bytes | memoryview]) -> int:
    """Append the message data[start:end] to `parts`, rebuilt along _PATH from `depth`;
    return its new length."""
    length, copied_from = 0, start
    for number, wire, field_start, value_start, field_end in _fields(data, start, end):
        if number != _PATH[depth] or wire != _LENGTH_DELIMITED:
            continue
        parts.append(data[copied_from:field_start])  # the fields before, as they are
        length += field_start - copied_from
        key = _encode_varint(number << 3 | _LENGTH_DELIMITED)
        if depth + 1 < len(_PATH):
            inner: list[bytes | memoryview] = []
            size = _rebuild(data, value_start, field_end, depth + 1, spliced, inner)
        else:
            inner = [_spliced_value(data[value_start:field_end], spliced)]
            size = len(inner[0])
        head = key + _encode_varint(size)
        parts.append(head)
        parts.extend(inner)
        length += len(head) + size
        copied_from = field_end
    parts.append(data[copied_from:end])
    return length + end - copied_from


def _spliced_value(value: memoryview, spliced: list[memoryview]) -> bytes | memoryview:
    if len(value) == len(_MARKER) + 8 and value[:len(_MARKER)] == _MARKER:
        index = int.from_bytes(value[len(_MARKER):], "little")
        if index < len(spliced):
            return spliced[index]
    return value
