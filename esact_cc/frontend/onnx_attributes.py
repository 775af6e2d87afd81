"""ONNX node attributes <-> xDSL op attributes <-> plain Python values.

The frontend turns ONNX attributes into xDSL attributes (ints as i64, floats as f32, lists as
dense arrays, strings as strings, tensors as dense elements built from bytes); the interpreter
and the constant folder read them as plain Python values; the exporter writes them back as
ONNX attributes. Op attributes that are not ONNX attributes start with `onnx_` (e.g.
`onnx_input_positions`) and are skipped by `onnx_attrs_of`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    FloatAttr,
    IntegerAttr,
    StringAttr,
    f32,
    i64,
)
from xdsl.ir import Attribute, Operation

from esact_cc.frontend import onnx_builders
from esact_cc.frontend.onnx_core import AttributeProto
from esact_cc.runtime.errors import CompileError
from esact_cc.tensor_types import dense_attr_from_numpy, numpy_from_dense_attr

INTERNAL_ATTR_PREFIX = "onnx_"
"""Op attributes with this prefix are the importer's bookkeeping, not ONNX attributes."""


def _text(value: bytes, attr: AttributeProto, node_name: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CompileError(f"node '{node_name}': attribute '{attr.name}' is not valid UTF-8 "
                           f"(byte {e.start})") from None


def _tensor(attr: AttributeProto, node_name: str) -> np.ndarray:
    try:
        return onnx_builders.to_array(attr.t)
    except Exception as e:  # a tensor whose data does not match its dims or type
        raise CompileError(f"node '{node_name}': attribute '{attr.name}' holds a malformed tensor: "
                           f"{' '.join(str(e).split())}") from None


def python_from_onnx(attr: AttributeProto, node_name: str = "") -> Any:
    """The plain Python value of an ONNX attribute (a malformed one is a `CompileError` naming
    the node and attribute)."""
    kind = attr.type
    if kind == AttributeProto.INT:
        return int(attr.i)
    if kind == AttributeProto.FLOAT:
        return float(attr.f)
    if kind == AttributeProto.STRING:
        return _text(attr.s, attr, node_name)
    if kind == AttributeProto.INTS:
        return [int(v) for v in attr.ints]
    if kind == AttributeProto.FLOATS:
        return [float(v) for v in attr.floats]
    if kind == AttributeProto.STRINGS:
        return [_text(s, attr, node_name) for s in attr.strings]
    if kind == AttributeProto.TENSOR:
        return _tensor(attr, node_name)
    raise CompileError(
        f"node '{node_name}': attribute '{attr.name}' of kind "
        f"{AttributeProto.AttributeType.Name(kind)} is not supported"
    )


def xdsl_from_python(value: Any) -> Attribute:
    """The xDSL attribute for a plain Python attribute value."""
    if isinstance(value, bool | int | np.integer):
        return IntegerAttr(int(value), i64)
    if isinstance(value, float | np.floating):
        return FloatAttr(float(value), f32)
    if isinstance(value, str):
        return StringAttr(value)
    if isinstance(value, np.ndarray):
        return dense_attr_from_numpy(value)
    if isinstance(value, list):
        if value and all(isinstance(v, str) for v in value):
            return ArrayAttr([StringAttr(v) for v in value])
        if all(isinstance(v, int) for v in value):
            return DenseArrayBase.from_list(i64, value)
        return DenseArrayBase.from_list(f32, [float(v) for v in value])
    raise CompileError(f"attribute value {value!r} has no xDSL form")


def python_from_xdsl(attr: Attribute) -> Any:
    """The plain Python value of an xDSL attribute made by `xdsl_from_python`."""
    if isinstance(attr, IntegerAttr):
        return int(attr.value.data)
    if isinstance(attr, FloatAttr):
        return float(attr.value.data)
    if isinstance(attr, StringAttr):
        return attr.data
    if isinstance(attr, DenseArrayBase):
        return list(attr.get_values())
    if isinstance(attr, DenseIntOrFPElementsAttr):
        return numpy_from_dense_attr(attr)
    if isinstance(attr, ArrayAttr):
        return [python_from_xdsl(a) for a in attr.data]
    raise CompileError(f"attribute {attr} has no plain value")


def onnx_attrs_of(op: Operation) -> dict[str, Any]:
    """The ONNX attributes of an `onnx.<OpType>` op as plain Python values."""
    return {
        name: python_from_xdsl(attr)
        for name, attr in op.attributes.items()
        if not name.startswith(INTERNAL_ATTR_PREFIX)
    }


def onnx_from_xdsl(name: str, attr: Attribute) -> AttributeProto:
    """The ONNX attribute for an xDSL op attribute (the exporter's direction)."""
    value = python_from_xdsl(attr)
    if isinstance(value, np.ndarray):
        return onnx_builders.make_attribute(name, onnx_builders.from_array(value))
    if isinstance(attr, DenseArrayBase) and not value:
        kind = AttributeProto.FLOATS if attr.elt_type == f32 else AttributeProto.INTS
        return onnx_builders.make_attribute(name, [], attr_type=kind)
    return onnx_builders.make_attribute(name, value)
