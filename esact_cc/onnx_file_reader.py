"""Reading a `.onnx` file with its weights as zero-copy views of the memory-mapped file.

`onnx.load` reads the whole file into a bytes object and then parses it into a second copy,
and `numpy_helper.to_array` copies every tensor a third time. Here the file is memory-mapped
and only the protobuf framing is walked: every initializer stored as `raw_data` with a plain
numeric element type becomes a read-only numpy view of the mapping (no copy at all), and the
rest of the model (nodes, value infos, small or unusual tensors) is parsed by protobuf as
usual. Tensors in external data files are resolved by onnx's own helper.

Only framing is interpreted: field numbers of ModelProto.graph (7), GraphProto.initializer (5)
and TensorProto.{dims (1), data_type (2), name (8), raw_data (9), data_location (14)}.
"""

from __future__ import annotations

import mmap
import os
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import ModelProto, TensorProto

from esact_cc.runtime.errors import CompileError

_MODEL_GRAPH = 7
_GRAPH_INITIALIZER = 5
_TENSOR_RAW_DATA = 9
_TENSOR_DATA_LOCATION = 14
_LENGTH_DELIMITED = 2
# Element types whose raw bytes are exactly a little-endian numpy array.
_PLAIN_DTYPES: dict[int, np.dtype] = {
    TensorProto.FLOAT: np.dtype("<f4"), TensorProto.FLOAT16: np.dtype("<f2"),
    TensorProto.DOUBLE: np.dtype("<f8"), TensorProto.INT64: np.dtype("<i8"),
    TensorProto.INT32: np.dtype("<i4"), TensorProto.INT16: np.dtype("<i2"),
    TensorProto.INT8: np.dtype("i1"), TensorProto.UINT64: np.dtype("<u8"),
    TensorProto.UINT32: np.dtype("<u4"), TensorProto.UINT16: np.dtype("<u2"),
    TensorProto.UINT8: np.dtype("u1"), TensorProto.BOOL: np.dtype("?"),
}


class _Malformed(Exception):
    pass


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _Malformed(f"truncated varint at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Malformed(f"varint too long at byte {pos}")


def _fields(buf: memoryview, pos: int, end: int):  # -> Iterator[tuple[int, int, int, int, int]]
    """(field number, wire type, field start, value start, field end) for each field."""
    while pos < end:
        start = pos
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, value_end = _varint(buf, pos, end)
        elif wire == 1:
            value_end = pos + 8
        elif wire == _LENGTH_DELIMITED:
            length, pos = _varint(buf, pos, end)
            value_end = pos + length
        elif wire == 5:
            value_end = pos + 4
        else:
            raise _Malformed(f"unsupported wire type {wire} at byte {start}")
        if value_end > end or number == 0:
            raise _Malformed(f"field {number} at byte {start} runs past its message")
        yield number, wire, start, pos, value_end
        pos = value_end


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _view_tensor(mapped: mmap.mmap, buf: memoryview, start: int, end: int) -> tuple[str, np.ndarray] | None:
    """The initializer at buf[start:end] as a view of the mapping, or None to parse it normally."""
    meta = bytearray()
    raw: tuple[int, int] | None = None
    for number, wire, field_start, value_start, field_end in _fields(buf, start, end):
        if number == _TENSOR_RAW_DATA and wire == _LENGTH_DELIMITED:
            raw = (value_start, field_end)
        elif number == _TENSOR_DATA_LOCATION:
            return None  # external data: onnx resolves it
        else:
            meta += buf[field_start:field_end]
    if raw is None:
        return None
    tensor = TensorProto.FromString(bytes(meta))
    dtype = _PLAIN_DTYPES.get(tensor.data_type)
    count = int(np.prod(tensor.dims, dtype=np.int64))
    if dtype is None or tensor.segment.ByteSize() or count * dtype.itemsize != raw[1] - raw[0] or count == 0:
        return None
    array = np.frombuffer(mapped, dtype=dtype, count=count, offset=raw[0]).reshape(tuple(tensor.dims))
    return tensor.name, array


def read_model(path: str | os.PathLike[str]) -> tuple[ModelProto, dict[str, np.ndarray]]:
    """The model without its plain raw-data initializers, and those initializers as views."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise CompileError(f"cannot read ONNX model '{path}': the file is empty")
    if sys.byteorder != "little":  # raw_data is little-endian; let onnx convert
        return onnx.load(str(path)), {}
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    buf = memoryview(mapped)
    try:
        model_rest = bytearray()
        graph_rest = bytearray()
        arrays: dict[str, np.ndarray] = {}
        for number, wire, start, value_start, end in _fields(buf, 0, len(buf)):
            if number != _MODEL_GRAPH or wire != _LENGTH_DELIMITED:
                model_rest += buf[start:end]
                continue
            for g_number, g_wire, g_start, g_value, g_end in _fields(buf, value_start, end):
                viewed = None
                if g_number == _GRAPH_INITIALIZER and g_wire == _LENGTH_DELIMITED:
                    viewed = _view_tensor(mapped, buf, g_value, g_end)
                if viewed is None:
                    graph_rest += buf[g_start:g_end]
                else:
                    arrays[viewed[0]] = viewed[1]
        model_rest += _encode_varint(_MODEL_GRAPH << 3 | _LENGTH_DELIMITED)
        model_rest += _encode_varint(len(graph_rest)) + graph_rest
        proto = ModelProto.FromString(bytes(model_rest))
    except (_Malformed, Exception) as e:
        raise CompileError(f"cannot read ONNX model '{path}': {' '.join(str(e).split()) or type(e).__name__}") from None
    finally:
        buf.release()
    if any(t.data_location == TensorProto.EXTERNAL for t in proto.graph.initializer):
        try:
            onnx.external_data_helper.load_external_data_for_model(proto, str(path.parent))
        except Exception as e:
            raise CompileError(f"cannot read external data of '{path}': {' '.join(str(e).split())}") from None
    return proto, arrays
