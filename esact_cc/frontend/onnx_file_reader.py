"""Reading a `.onnx` file with its weights as zero-copy views of the file's bytes in memory.

`onnx.load` reads the whole file into a bytes object and then parses it into a second copy,
and `numpy_helper.to_array` copies every tensor a third time. Here the file is read once into
memory (`stable_file_read`: never memory-mapped, so the file changing or shrinking under the
compiler is one clear error, not a SIGBUS) and only the protobuf framing is walked: every
initializer stored as `raw_data` with a plain numeric element type becomes a read-only numpy
view of those bytes (no further copy; moved down a few bytes into its own framing first, so
the view is aligned, as BLAS needs), and the rest of the model (nodes, value infos, small
or unusual tensors) is parsed by protobuf as usual. Tensors in external data files are read
by `onnx_external_data`, only from inside the model's directory.

Only framing is interpreted: field numbers of ModelProto.graph (7), GraphProto.initializer (5)
and TensorProto.{dims (1), data_type (2), name (8), raw_data (9), data_location (14)}.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
from pathlib import Path

import numpy as np

from esact_cc.frontend.onnx_core import ModelProto, TensorProto
from esact_cc.frontend.onnx_external_data import inline_external_data
from esact_cc.frontend.onnx_limits import MODEL_FILE_CAP
from esact_cc.frontend.stable_file_read import read_stable
from esact_cc.runtime.errors import CompileError
from esact_cc.tensor_types import RAW_DATA_DTYPES

_MODEL_GRAPH = 7
_GRAPH_INITIALIZER = 5
_TENSOR_RAW_DATA = 9
_TENSOR_DATA_LOCATION = 14
_LENGTH_DELIMITED = 2


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


def _view_tensor(data: bytes | memoryview, buf: memoryview, start: int, end: int) -> tuple[str, np.ndarray] | None:
    """The initializer at buf[start:end] as a view of `data`, or None to parse it normally."""
    meta = bytearray()
    raw: tuple[int, int] | None = None
    for number, wire, field_start, value_start, field_end in _fields(buf, start, end):
        if number == _TENSOR_RAW_DATA and wire == _LENGTH_DELIMITED:
            raw = (value_start, field_end)
        elif number == _TENSOR_DATA_LOCATION:
            return None  # external data: onnx_external_data reads it
        else:
            meta += buf[field_start:field_end]
    if raw is None:
        return None
    tensor = TensorProto.FromString(bytes(meta))
    dtype = RAW_DATA_DTYPES.get(tensor.data_type)
    count = math.prod(int(d) for d in tensor.dims)
    if dtype is None or tensor.segment.ByteSize() or count * dtype.itemsize != raw[1] - raw[0] or count == 0:
        return None
    offset = _aligned_offset(data, raw[0], raw[1], start, dtype.itemsize)
    array = np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(tuple(tensor.dims))
    array.flags.writeable = False
    return tensor.name, array


def _aligned_offset(data: bytes | memoryview, begin: int, end: int, floor: int, alignment: int) -> int:
    """Where the tensor bytes data[begin:end] start once aligned: moved down by at most
    alignment - 1 bytes when `data` is writable and the bytes below (from `floor`: this
    tensor's own framing and fields, already parsed) leave room. numpy's matmul takes BLAS
    only for aligned operands: unaligned views made calibration copy every weight (0.6 s and
    340 MB for BERT-base)."""
    whole = np.frombuffer(data, np.uint8)
    if not whole.flags.writeable:
        return begin
    shift = (whole.ctypes.data + begin) % alignment
    if shift == 0 or begin - shift < floor:
        return begin
    # memmove: numpy would copy the overlapping range through a temporary buffer
    ctypes.memmove(whole.ctypes.data + begin - shift, whole.ctypes.data + begin, end - begin)
    return begin - shift


def _split_model(data: bytes | memoryview) -> tuple[ModelProto, dict[str, np.ndarray]]:
    """The model without its plain raw-data initializers, and those initializers as views."""
    buf = memoryview(data)
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
                    viewed = _view_tensor(data, buf, g_value, g_end)
                if viewed is None:
                    graph_rest += buf[g_start:g_end]
                else:
                    arrays[viewed[0]] = viewed[1]
        model_rest += _encode_varint(_MODEL_GRAPH << 3 | _LENGTH_DELIMITED)
        model_rest += _encode_varint(len(graph_rest)) + graph_rest
        return ModelProto.FromString(bytes(model_rest)), arrays
    finally:
        buf.release()


def read_model(path: str | os.PathLike[str]) -> tuple[ModelProto, dict[str, np.ndarray]]:
    """The model without its plain raw-data and external initializers, and those initializers
    as arrays; no tensor of the returned model refers to external data."""
    path = Path(path)
    data = read_stable(path, "ONNX model", MODEL_FILE_CAP)
    if not data:
        raise CompileError(f"cannot read ONNX model '{path}': the file is empty")
    try:
        if sys.byteorder == "little":
            proto, arrays = _split_model(data)
        else:  # raw_data is little-endian: let protobuf and onnx convert every tensor
            proto, arrays = ModelProto.FromString(bytes(data)), {}
    except Exception as e:  # _Malformed, protobuf's DecodeError, a bad tensor header
        raise CompileError(f"cannot read ONNX model '{path}': {' '.join(str(e).split()) or type(e).__name__}") from None
    arrays.update(inline_external_data(proto, path.parent))
    return proto, arrays
