"""Element-type correspondence between ONNX, xDSL and numpy: the one table all converters use.

The frontend builds xDSL tensor types from ONNX value infos, the interpreter and the weight
store turn xDSL types into numpy dtypes, and the exporter turns them back into ONNX types;
all of them read `ELEMENT_TYPES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from xdsl.dialects.builtin import (
    AnyFloat,
    BFloat16Type,
    BytesAttr,
    DenseIntOrFPElementsAttr,
    Float16Type,
    Float32Type,
    Float64Type,
    IntegerType,
    Signedness,
    TensorType,
)
from xdsl.ir import Attribute

from esact_cc.runtime.errors import CompileError


class OnnxDataType(IntEnum):
    """The `onnx.TensorProto.DataType` values of the types below (fixed by the ONNX format; a
    test checks them against the package). Not imported from onnx: every tool loads this table,
    and importing the onnx package costs 0.7 s of CPU."""

    FLOAT = 1
    UINT8 = 2
    INT8 = 3
    UINT16 = 4
    INT16 = 5
    INT32 = 6
    INT64 = 7
    BOOL = 9
    FLOAT16 = 10
    DOUBLE = 11
    UINT32 = 12
    UINT64 = 13
    BFLOAT16 = 16


@dataclass(frozen=True)
class ElementType:
    """One element type as each of the three worlds spells it."""

    onnx: int
    """`onnx.TensorProto.DataType` value."""
    numpy: np.dtype
    xdsl: Attribute


def _int(width: int, signed: bool = True) -> IntegerType:
    return IntegerType(width, Signedness.SIGNLESS if signed else Signedness.UNSIGNED)


# bfloat16 has no numpy dtype; it is stored as raw uint16 bits.
ELEMENT_TYPES: tuple[ElementType, ...] = (
    ElementType(OnnxDataType.FLOAT, np.dtype(np.float32), Float32Type()),
    ElementType(OnnxDataType.FLOAT16, np.dtype(np.float16), Float16Type()),
    ElementType(OnnxDataType.DOUBLE, np.dtype(np.float64), Float64Type()),
    ElementType(OnnxDataType.BFLOAT16, np.dtype(np.uint16), BFloat16Type()),
    ElementType(OnnxDataType.INT64, np.dtype(np.int64), _int(64)),
    ElementType(OnnxDataType.INT32, np.dtype(np.int32), _int(32)),
    ElementType(OnnxDataType.INT16, np.dtype(np.int16), _int(16)),
    ElementType(OnnxDataType.INT8, np.dtype(np.int8), _int(8)),
    ElementType(OnnxDataType.UINT64, np.dtype(np.uint64), _int(64, False)),
    ElementType(OnnxDataType.UINT32, np.dtype(np.uint32), _int(32, False)),
    ElementType(OnnxDataType.UINT16, np.dtype(np.uint16), _int(16, False)),
    ElementType(OnnxDataType.UINT8, np.dtype(np.uint8), _int(8, False)),
    ElementType(OnnxDataType.BOOL, np.dtype(np.bool_), _int(1)),
)

_BY_ONNX = {e.onnx: e for e in ELEMENT_TYPES}
_BY_XDSL = {e.xdsl: e for e in ELEMENT_TYPES}
# bfloat16 shares numpy's uint16; the first entry per dtype wins (uint16 -> ui16 is listed later,
# so map it explicitly).
_BY_NUMPY = {e.numpy: e for e in reversed(ELEMENT_TYPES)}
_BY_NUMPY[np.dtype(np.uint16)] = _BY_ONNX[OnnxDataType.UINT16]


RAW_DATA_DTYPES: dict[int, np.dtype] = {
    e.onnx: e.numpy.newbyteorder("<") for e in ELEMENT_TYPES if e.onnx != OnnxDataType.BFLOAT16
}
"""ONNX element types whose `raw_data` bytes are exactly a little-endian numpy array (bfloat16
has no numpy dtype: onnx's own conversion handles it)."""


def from_onnx(onnx_type: int) -> ElementType:
    if onnx_type not in _BY_ONNX:
        from onnx import TensorProto

        name = TensorProto.DataType.Name(onnx_type)
        raise CompileError(f"unsupported ONNX element type {name}")
    return _BY_ONNX[onnx_type]


def from_xdsl(element_type: Attribute) -> ElementType:
    if element_type not in _BY_XDSL:
        raise CompileError(f"element type {element_type} has no numpy/ONNX equivalent")
    return _BY_XDSL[element_type]


def from_numpy(dtype: np.dtype) -> ElementType:
    dtype = np.dtype(dtype)
    if dtype not in _BY_NUMPY:
        raise CompileError(f"numpy dtype {dtype} has no ONNX/xDSL equivalent")
    return _BY_NUMPY[dtype]


def tensor_type_of(array: np.ndarray) -> TensorType:
    """The xDSL tensor type of a numpy array (shape and element type)."""
    return TensorType(from_numpy(array.dtype).xdsl, array.shape)


def numpy_dtype_of(tensor_type: TensorType) -> np.dtype:
    return from_xdsl(tensor_type.get_element_type()).numpy


def dense_attr_from_numpy(array: np.ndarray) -> DenseIntOrFPElementsAttr:
    """A dense attribute holding `array` (built from its bytes, never from decimal lists)."""
    # np.ascontiguousarray would turn a 0-d array into 1-d; tobytes() is C-ordered anyway.
    array = np.asarray(array)
    return DenseIntOrFPElementsAttr(tensor_type_of(array), BytesAttr(array.tobytes()))


def numpy_from_dense_attr(attr: DenseIntOrFPElementsAttr) -> np.ndarray:
    """The numpy array a dense attribute holds (splats are broadcast to the full shape)."""
    dtype = numpy_dtype_of(attr.type)
    shape = attr.get_shape()
    flat = np.frombuffer(attr.data.data, dtype=dtype)
    count = int(np.prod(shape, dtype=np.int64))
    if flat.size == 1 and count != 1:
        return np.full(shape, flat[0], dtype=dtype)
    return flat.reshape(shape).copy()


def is_float(element_type: Attribute) -> bool:
    return isinstance(element_type, AnyFloat)
