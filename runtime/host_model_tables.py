"""A host model's large initializers fed to onnxruntime as inputs, read in place.

onnxruntime copies a model given as bytes three times before it runs (the Python bytes into a
C++ string, the protobuf parse, the initializer tensors): for BERT-base's embedding segment,
a 90 MiB word table, that was 0.17 s CPU and 270 MiB of page faults per esact-run (issue 16).
`lift_large_initializers` rewrites the model so that each large initializer is a graph input
instead, and returns it as a read-only numpy view of the model bytes; onnxruntime reads an
input in place. The outputs are the same bits: the rewrite is made only when every node of
the graph is an exact, unfusable operation (`EXACT_OPS`: data movement, Gather, elementwise
arithmetic), each computed by the same kernel whether an operand is constant or not, so no
graph optimization could have computed differently with the tensors constant.

The model is edited at the protobuf wire level (ModelProto.graph = 7; GraphProto.node = 1,
initializer = 5, input = 11, output = 12; NodeProto.input = 1, op_type = 4, attribute = 5;
TensorProto.dims = 1, data_type = 2, name = 8, raw_data = 9; the onnx.proto3 field numbers),
on a model the loader has already checked (host_model_check.py). Anything unexpected leaves
the model as it is: the same result, only slower.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

LARGE_TABLE_BYTES = 1 << 16
"""Initializers from this size are fed in place (BERT-base's word table: 90 MiB; its position
and token-type rows, 384 KiB each, would otherwise stay in the heap after the session)."""

EXACT_OPS = frozenset({
    "Gather", "Add", "Sub", "Mul", "Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten",
    "Concat", "Slice", "Shape", "Constant", "Where", "Equal", "Expand", "Identity", "And",
    "Or", "Not", "Less", "Greater", "Transpose"})
"""Elementwise or data-movement operations: computed the same per element whether an operand
is constant or not, and no pattern onnxruntime fuses (those involve MatMul, LayerNorm,...)."""

_DTYPES = {1: "<f4", 2: "u1", 3: "i1", 4: "<u2", 5: "<i2", 6: "<i4", 7: "<i8", 10: "<f2",
           11: "<f8", 12: "<u4", 13: "<u8"}
"""TensorProto.DataType -> numpy dtype of its raw_data (little-endian)."""


class _Unexpected(Exception):
    """The bytes are not what this rewrite handles: keep the model as it is."""


def lift_large_initializers(model: bytes) -> tuple[bytes, dict[str, np.ndarray]]:
    """(model with its large initializers as graph inputs, {name: array}); the model
    unchanged and no arrays when nothing qualifies."""
    try:
        return _lift(model)
    except (_Unexpected, IndexError, ValueError):
        return model, {}


def _lift(model: bytes) -> tuple[bytes, dict[str, np.ndarray]]:
    graphs = [f for f in _fields(model, 0, len(model)) if f[0] == 7]
    if len(graphs) != 1:
        return model, {}
    _, _, start, end, entry_start = graphs[0]
    graph = list(_fields(model, start, end))
    tables = _tables(model, graph)
    if not tables:
        return model, {}
    lifted = set(tables)
    kept = b"".join(model[entry:e] for number, _, s, e, entry in graph
                    if not (number == 5 and _tensor_name(model, s, e) in lifted))
    inputs = b"".join(_bytes_field(11, _value_info(name, code, array.shape))
                      for name, (code, array) in tables.items())
    rewritten = model[:entry_start] + _bytes_field(7, kept + inputs) + model[end:]
    return rewritten, {name: array for name, (_, array) in tables.items()}


def _tables(model: bytes, graph: list[tuple[int, int, int, int, int]]
            ) -> dict[str, tuple[int, np.ndarray]]:
    """{name: (data type, array view)} of each initializer worth lifting."""
    node_inputs, graph_io = set(), set()
    for number, wire, start, end, _ in graph:
        if wire != 2:
            raise _Unexpected  # GraphProto has only length-delimited fields
        if number == 1:
            op_type, inputs, has_attribute_graph = _node(model, start, end)
            if op_type not in EXACT_OPS or has_attribute_graph:
                return {}
            node_inputs.update(inputs)
        elif number in (11, 12):  # graph inputs and outputs, by name
            graph_io.update(_string(model, s, e) for n, _, s, e, _ in _fields(model, start, end)
                            if n == 1)
    found = {}
    for number, _, start, end, _ in graph:
        table = _table(model, start, end) if number == 5 else None
        if table is not None:
            name, code, array = table
            if name in node_inputs and name not in graph_io:
                found[name] = (code, array)
    return found


def _table(model: bytes, start: int, end: int) -> tuple[str, int, np.ndarray] | None:
    """A TensorProto holding its data as raw_data of at least LARGE_TABLE_BYTES, viewed."""
    name, code, dims, raw = None, 0, [], (0, 0)
    for number, wire, s, e, _ in _fields(model, start, end):
        if number == 8:
            name = _string(model, s, e)
        elif number == 2:
            code = s
        elif number == 1:
            dims.extend(_packed(model, s, e) if wire == 2 else [s])
        elif number == 9:
            raw = (s, e)
        elif number not in (3, 12):  # segment, doc_string; any other data field: not ours
            return None
    size = raw[1] - raw[0]
    if name is None or code not in _DTYPES or size < LARGE_TABLE_BYTES:
        return None
    dtype = np.dtype(_DTYPES[code])
    if size != math.prod(dims) * dtype.itemsize:
        return None
    return name, code, np.frombuffer(model, dtype, math.prod(dims), raw[0]).reshape(dims)


def _node(model: bytes, start: int, end: int) -> tuple[str, list[str], bool]:
    """A NodeProto's op_type, inputs, and whether an attribute holds a graph (If, Loop)."""
    op_type, inputs, has_graph = "", [], False
    for number, _, s, e, _ in _fields(model, start, end):
        if number == 4:
            op_type = _string(model, s, e)
        elif number == 1:
            inputs.append(_string(model, s, e))
        elif number == 7 and _string(model, s, e) not in ("", "ai.onnx"):
            raise _Unexpected  # only the default domain's operations are known
        elif number == 5:
            has_graph |= any(n in (6, 11) for n, _, _, _, _ in _fields(model, s, e))
    return op_type, inputs, has_graph


def _tensor_name(model: bytes, start: int, end: int) -> str | None:
    return next((_string(model, s, e) for n, _, s, e, _ in _fields(model, start, end)
                 if n == 8), None)


def _value_info(name: str, code: int, dims: tuple[int, ...]) -> bytes:
    """ValueInfoProto{name, type: TypeProto{tensor_type: {elem_type, shape: {dim...}}}}."""
    shape = b"".join(_bytes_field(1, _varint_field(1, d)) for d in dims)
    tensor = _varint_field(1, code) + _bytes_field(2, shape)
    return _bytes_field(1, name.encode()) + _bytes_field(2, _bytes_field(1, tensor))


# ------------------------------------------------------------------ protobuf wire format


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Unexpected


def _fields(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(field number, wire type, a, b, entry start) of each field of the message in
    data[start:end]: a varint's value and 0, or a length-delimited value's start and end."""
    pos = start
    while pos < end:
        entry = pos
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, wire, value, 0, entry
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > end:
                raise _Unexpected
            yield number, wire, pos, pos + length, entry
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            yield number, wire, 0, 0, entry
        else:  # groups: not in ONNX
            raise _Unexpected
    if pos != end:
        raise _Unexpected


def _packed(data: bytes, start: int, end: int) -> list[int]:
    values, pos = [], start
    while pos < end:
        value, pos = _varint(data, pos)
        values.append(value)
    return values


def _string(data: bytes, start: int, end: int) -> str:
    return data[start:end].decode("utf-8")


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _varint_field(number: int, value: int) -> bytes:
    return _varint_bytes(number << 3) + _varint_bytes(value)


def _bytes_field(number: int, value: bytes) -> bytes:
    return _varint_bytes(number << 3 | 2) + _varint_bytes(len(value)) + value
