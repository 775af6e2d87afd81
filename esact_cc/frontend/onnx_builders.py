"""`onnx.helper`'s message builders and `onnx.numpy_helper`'s tensor conversions, as the
frontend, exporter and interpreter use them, without importing the onnx package (its
`ml_dtypes` import costs ~1.0 s of CPU: `onnx_core`).

Each function builds the same message, field for field, as its onnx namesake (differential
tests compare the serialized bytes: test/unit/onnx/test_onnx_builders.py). Tensors whose
element type numpy holds natively (`NATIVE_DTYPES`) are converted here; any other (bfloat16,
float8, int4, strings, complex, external data) goes to onnx's own `numpy_helper`, which needs
`ml_dtypes` for those types anyway.
"""

from __future__ import annotations

import numbers
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from esact_cc.frontend.onnx_core import (
    IR_VERSION,
    AttributeProto,
    GraphProto,
    ModelProto,
    NodeProto,
    OperatorSetIdProto,
    SparseTensorProto,
    TensorProto,
    TypeProto,
    ValueInfoProto,
    onnx_opset_version,
)

_INT32_STORAGE = ("int32_data", np.dtype(np.int32))
NATIVE_DTYPES: dict[int, tuple[np.dtype, tuple[str, np.dtype]]] = {
    TensorProto.FLOAT: (np.dtype(np.float32), ("float_data", np.dtype(np.float32))),
    TensorProto.UINT8: (np.dtype(np.uint8), _INT32_STORAGE),
    TensorProto.INT8: (np.dtype(np.int8), _INT32_STORAGE),
    TensorProto.UINT16: (np.dtype(np.uint16), _INT32_STORAGE),
    TensorProto.INT16: (np.dtype(np.int16), _INT32_STORAGE),
    TensorProto.INT32: (np.dtype(np.int32), _INT32_STORAGE),
    TensorProto.INT64: (np.dtype(np.int64), ("int64_data", np.dtype(np.int64))),
    TensorProto.BOOL: (np.dtype(np.bool_), _INT32_STORAGE),
    TensorProto.FLOAT16: (np.dtype(np.float16), _INT32_STORAGE),
    TensorProto.DOUBLE: (np.dtype(np.float64), ("double_data", np.dtype(np.float64))),
    TensorProto.UINT32: (np.dtype(np.uint32), ("uint64_data", np.dtype(np.uint64))),
    TensorProto.UINT64: (np.dtype(np.uint64), ("uint64_data", np.dtype(np.uint64))),
}
"""ONNX element types with a numpy dtype of numpy's own: (that dtype, (the typed field their
values are stored in when not raw, its numpy dtype)), as in onnx's `_mapping`."""
_ONNX_TYPE_OF_DTYPE = {dtype: onnx_type for onnx_type, (dtype, _) in NATIVE_DTYPES.items()}
_UINT16_VIEWED = {TensorProto.FLOAT16, TensorProto.INT16, TensorProto.UINT16}


def _numpy_helper() -> Any:
    import onnx.numpy_helper  # the dtypes only ml_dtypes has: onnx's own conversion

    return onnx.numpy_helper


def np_dtype_to_tensor_dtype(dtype: np.dtype) -> int:
    """`onnx.helper.np_dtype_to_tensor_dtype`."""
    onnx_type = _ONNX_TYPE_OF_DTYPE.get(dtype)
    if onnx_type is not None:
        return onnx_type
    import onnx.helper

    return onnx.helper.np_dtype_to_tensor_dtype(dtype)


def little_endian(array: np.ndarray) -> np.ndarray:
    """`array` itself when its bytes are little-endian (as ONNX raw_data holds them), else a
    little-endian copy."""
    if array.dtype.byteorder == ">" or (sys.byteorder == "big" and array.dtype.byteorder == "="):
        return array.astype(array.dtype.newbyteorder("<"))
    return array


def tobytes_little_endian(array: np.ndarray) -> bytes:
    """`onnx.numpy_helper.tobytes_little_endian`."""
    return little_endian(array).tobytes()


def from_array(array: np.ndarray, name: str | None = None) -> TensorProto:
    """`onnx.numpy_helper.from_array`."""
    onnx_type = _ONNX_TYPE_OF_DTYPE.get(array.dtype)
    if onnx_type is None:
        return _numpy_helper().from_array(array, name)
    tensor = TensorProto()
    tensor.dims.extend(array.shape)
    if name:
        tensor.name = name
    tensor.raw_data = tobytes_little_endian(array)
    tensor.data_type = onnx_type
    return tensor


def to_array(tensor: TensorProto) -> np.ndarray:
    """`onnx.numpy_helper.to_array` (no external data: the frontend has inlined it)."""
    native = NATIVE_DTYPES.get(tensor.data_type)
    if (native is None or sys.byteorder == "big" or tensor.HasField("segment")
            or (tensor.HasField("data_location") and tensor.data_location == TensorProto.EXTERNAL)):
        return _numpy_helper().to_array(tensor)
    dtype, (field, storage_dtype) = native
    dims = tensor.dims
    if tensor.HasField("raw_data"):
        return np.frombuffer(tensor.raw_data, dtype=dtype).reshape(dims)
    if tensor.data_type in _UINT16_VIEWED:
        return (np.array(tensor.int32_data, dtype=np.int32).view(np.uint32).astype(np.uint16)
                .reshape(dims).view(dtype))
    if tensor.data_type == TensorProto.BOOL:
        return (np.array(tensor.int32_data, dtype=np.int32).view(np.uint32).astype(np.uint8)
                .view(dtype).reshape(dims))
    return np.asarray(getattr(tensor, field), dtype=storage_dtype).astype(dtype).reshape(dims)


def make_tensor_type_proto(elem_type: int, shape: Sequence[str | int | None] | None) -> TypeProto:
    """`onnx.helper.make_tensor_type_proto` (no shape denotation)."""
    type_proto = TypeProto()
    tensor_type_proto = type_proto.tensor_type
    tensor_type_proto.elem_type = elem_type
    tensor_shape_proto = tensor_type_proto.shape
    if shape is not None:
        tensor_shape_proto.dim.extend([])  # an empty shape (a scalar) is still a shape
        for d in shape:
            dim = tensor_shape_proto.dim.add()
            if d is None:
                pass
            elif isinstance(d, int):
                dim.dim_value = d
            elif isinstance(d, str):
                dim.dim_param = d
            else:
                raise ValueError(f"Invalid item in shape: {d}. Needs to be of int or str.")
    return type_proto


def make_tensor_value_info(name: str, elem_type: int,
                           shape: Sequence[str | int | None] | None) -> ValueInfoProto:
    """`onnx.helper.make_tensor_value_info`."""
    value_info_proto = ValueInfoProto()
    value_info_proto.name = name
    value_info_proto.type.CopyFrom(make_tensor_type_proto(elem_type, shape))
    return value_info_proto


def make_value_info(name: str, type_proto: TypeProto) -> ValueInfoProto:
    """`onnx.helper.make_value_info`."""
    value_info_proto = ValueInfoProto()
    value_info_proto.name = name
    value_info_proto.type.CopyFrom(type_proto)
    return value_info_proto


def make_opsetid(domain: str, version: int) -> OperatorSetIdProto:
    """`onnx.helper.make_opsetid`."""
    opsetid = OperatorSetIdProto()
    opsetid.domain = domain
    opsetid.version = version
    return opsetid


def make_node(op_type: str, inputs: Sequence[str], outputs: Sequence[str],
              name: str | None = None, domain: str | None = None, **kwargs: Any) -> NodeProto:
    """`onnx.helper.make_node`: attributes sorted by name, None ones left out."""
    node = NodeProto()
    node.op_type = op_type
    node.input.extend(inputs)
    node.output.extend(outputs)
    if name:
        node.name = name
    if domain is not None:
        node.domain = domain
    if kwargs:
        node.attribute.extend(make_attribute(key, value)
                              for key, value in sorted(kwargs.items()) if value is not None)
    return node


def make_graph(nodes: Sequence[NodeProto], name: str, inputs: Sequence[ValueInfoProto],
               outputs: Sequence[ValueInfoProto],
               initializer: Sequence[TensorProto] | None = None) -> GraphProto:
    """`onnx.helper.make_graph`."""
    graph = GraphProto()
    graph.node.extend(nodes)
    graph.name = name
    graph.input.extend(inputs)
    graph.output.extend(outputs)
    graph.initializer.extend(initializer or [])
    return graph


def make_model(graph: GraphProto, **kwargs: Any) -> ModelProto:
    """`onnx.helper.make_model`: `opset_imports`, `functions`, then any ModelProto field."""
    model = ModelProto()
    model.ir_version = IR_VERSION
    model.graph.CopyFrom(graph)
    opset_imports = kwargs.pop("opset_imports", None)
    if opset_imports is not None:
        model.opset_import.extend(opset_imports)
    else:
        model.opset_import.add().version = onnx_opset_version()
    functions = kwargs.pop("functions", None)
    if functions is not None:
        model.functions.extend(functions)
    for key, value in kwargs.items():
        setattr(model, key, value)
    return model


def _to_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


_LIST_TYPES = ((numbers.Integral, AttributeProto.INTS), (numbers.Real, AttributeProto.FLOATS),
               ((str, bytes), AttributeProto.STRINGS), (TensorProto, AttributeProto.TENSORS),
               (GraphProto, AttributeProto.GRAPHS), (TypeProto, AttributeProto.TYPE_PROTOS))
_SPARSE_KINDS = (AttributeProto.SPARSE_TENSOR, AttributeProto.SPARSE_TENSORS)
_LIST_FIELDS = {AttributeProto.INTS: "ints", AttributeProto.FLOATS: "floats",
                AttributeProto.TENSORS: "tensors", AttributeProto.GRAPHS: "graphs",
                AttributeProto.TYPE_PROTOS: "type_protos"}


def _set_single(attr: AttributeProto, value: Any) -> bool:
    """The singular cases of make_attribute; False when `value` is none of them."""
    if isinstance(value, numbers.Integral):
        attr.i, attr.type = int(value), AttributeProto.INT
    elif isinstance(value, numbers.Real):
        attr.f, attr.type = float(value), AttributeProto.FLOAT
    elif isinstance(value, (str, bytes)):
        attr.s, attr.type = _to_bytes(value), AttributeProto.STRING
    elif isinstance(value, TensorProto):
        attr.t.CopyFrom(value)
        attr.type = AttributeProto.TENSOR
    elif isinstance(value, GraphProto):
        attr.g.CopyFrom(value)
        attr.type = AttributeProto.GRAPH
    elif isinstance(value, TypeProto):
        attr.tp.CopyFrom(value)
        attr.type = AttributeProto.TYPE_PROTO
    else:
        return False
    return True


def make_attribute(key: str, value: Any, attr_type: int | None = None) -> AttributeProto:
    """`onnx.helper.make_attribute` (sparse tensors, which no op here takes, go to onnx's)."""
    if _holds_sparse_tensor(value) or attr_type in _SPARSE_KINDS:
        import onnx.helper

        return onnx.helper.make_attribute(key, value, attr_type=attr_type)
    attr = AttributeProto()
    attr.name = key
    if _set_single(attr, value):
        pass
    elif isinstance(value, Iterable):
        value = list(value)
        if len(value) == 0 and attr_type is None:
            raise ValueError(f"Could not infer attribute `{key}` type from empty iterator")
        if attr_type is None:
            types = {type(v) for v in value}
            attr_type = next((kind for expected, kind in _LIST_TYPES
                              if all(issubclass(t, expected) for t in types)), None)
            if attr_type is None:
                raise ValueError("Could not infer the attribute type from the elements of the "
                                 "passed Iterable value.")
        if attr_type == AttributeProto.STRINGS:
            attr.strings.extend(_to_bytes(v) for v in value)
        elif attr_type in _LIST_FIELDS:
            getattr(attr, _LIST_FIELDS[attr_type]).extend(value)
        else:
            raise AssertionError
        attr.type = attr_type
    else:
        raise TypeError(f"'{value}' is not an accepted attribute value.")
    if attr_type is not None and attr.type != attr_type:
        raise TypeError(f"Inferred attribute type '{_type_name(attr.type)}'({attr.type}) "
                        f"mismatched with specified type '{_type_name(attr_type)}'({attr_type})")
    return attr


def _holds_sparse_tensor(value: Any) -> bool:
    if isinstance(value, SparseTensorProto):
        return True
    return isinstance(value, (list, tuple)) and any(isinstance(v, SparseTensorProto) for v in value)


def _type_name(attr_type: int) -> str:
    """onnx.helper's `_attr_type_to_str`."""
    kinds = AttributeProto.AttributeType
    return kinds.Name(attr_type) if attr_type in kinds.values() else kinds.keys()[0]
