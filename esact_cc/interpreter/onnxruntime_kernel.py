"""ONNX ops without numpy semantics in esact-cc, run one node at a time by onnxruntime.

The host-only ops (`dialects/onnx_host_op_types.py`: ConvTranspose, Resize, pooling, ...)
and the cases a numpy kernel leaves out (`OnnxruntimeOnly`, e.g. a 3-D Conv) are evaluated by
building a one-node ONNX model at the module's opset and running it with the same onnxruntime
session settings as the binary's host segments (runtime/host_segments.py: CPU, one thread,
cached by model bytes, the same time limit). onnxruntime defines what such an op computes, in
the reference interpreter as in the binary.

`check_runs_on_onnxruntime` is the frontend's import-time question for each such node: can
onnxruntime build a session for it, with these attributes and input types?
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from esact_cc.frontend import onnx_builders, onnx_core
from esact_cc.frontend.onnx_core import AttributeProto, ModelProto, TypeProto
from esact_cc.runtime.errors import CompileError, ProgramError
from esact_cc.runtime.host_segments import HOST_TIME_LIMIT_S, host_session, run_with_time_limit


class OnnxruntimeOnly(Exception):
    """Raised by a numpy kernel for a form of its op it does not implement."""


def _ir_version(opset: int) -> int:
    return 8 if opset <= 18 else 9 if opset <= 20 else 10


def _attribute(op_type: str, opset: int, name: str, value: Any) -> AttributeProto:
    if isinstance(value, np.ndarray):
        return onnx_builders.make_attribute(name, onnx_builders.from_array(value))
    if isinstance(value, list) and not value:  # an empty list has no type of its own
        schema = onnx_core.get_schema(op_type, opset, "")
        kind = schema.attributes[name].type if name in schema.attributes else None
        return onnx_builders.make_attribute(name, [], attr_type=AttributeProto.AttributeType.Value(
            str(kind).rsplit(".", 1)[-1]) if kind is not None else AttributeProto.INTS)
    return onnx_builders.make_attribute(name, value)


def one_node_model(op_type: str, input_types: Sequence[TypeProto | None],
                   attrs: dict[str, Any], n_outputs: int, opset: int) -> ModelProto:
    """A model with one `op_type` node; None in `input_types` is an omitted optional input."""
    inputs = [f"input{i}" if t is not None else "" for i, t in enumerate(input_types)]
    outputs = [f"output{i}" for i in range(n_outputs)]
    node = onnx_builders.make_node(op_type, inputs, outputs, name=op_type)
    node.attribute.extend(_attribute(op_type, opset, k, v) for k, v in sorted(attrs.items()))
    graph = onnx_builders.make_graph(
        [node], op_type,
        [onnx_builders.make_value_info(n, t) for n, t in zip(inputs, input_types) if t is not None],
        [onnx_builders.make_value_info(n, TypeProto()) for n in outputs])
    return onnx_builders.make_model(graph, opset_imports=[onnx_builders.make_opsetid("", opset)],
                                  ir_version=_ir_version(opset), producer_name="esact-cc")


def _tensor_type(array: np.ndarray) -> TypeProto:
    elem = onnx_builders.np_dtype_to_tensor_dtype(array.dtype)
    return onnx_builders.make_tensor_type_proto(elem, list(array.shape))


def _session(model: ModelProto, what: str) -> Any:
    try:
        return host_session(model.SerializeToString())
    except ProgramError as exc:
        raise CompileError(f"{what}: {exc}") from None


def run_on_onnxruntime(op_type: str, inputs: Sequence[np.ndarray | None], attrs: dict[str, Any],
                       n_outputs: int, opset: int) -> list[np.ndarray]:
    """Evaluate one ONNX op with onnxruntime."""
    types = [None if x is None else _tensor_type(np.asarray(x)) for x in inputs]
    model = one_node_model(op_type, types, attrs, n_outputs, opset)
    what = f"ONNX op {op_type} on onnxruntime"
    session = _session(model, what)
    feeds = {f"input{i}": np.asarray(x) for i, x in enumerate(inputs) if x is not None}
    names = [o.name for o in session.get_outputs()]
    try:
        results = run_with_time_limit(session, names, feeds, HOST_TIME_LIMIT_S)
    except ProgramError as exc:
        raise CompileError(f"{what}: {exc}") from None
    return [np.asarray(r) for r in results]


def check_runs_on_onnxruntime(op_type: str, input_types: Sequence[TypeProto | None],
                              attrs: dict[str, Any], n_outputs: int, opset: int) -> str | None:
    """None if onnxruntime can build a session for the node, else its first error line."""
    try:
        _session(one_node_model(op_type, input_types, attrs, n_outputs, opset), "")
    except CompileError as exc:
        return str(exc).removeprefix(": ")
    except (ValueError, TypeError, KeyError, onnx_core.ValidationError) as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None
